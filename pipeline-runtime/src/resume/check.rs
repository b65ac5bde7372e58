//! The resume check: a test users run in their own CI to learn whether their pipeline
//! resumes exactly. It runs the pipeline straight through, then again with preemptions at
//! seeded random points (each: take the state, write it to JSON and read it back, drop the
//! pipeline, build it again from the state, possibly with another concurrency, executor or
//! world size), and compares what the consumer received: the same sequence per rank in
//! input order, the same multiset in completion order (or, across a change of world size,
//! each epoch's items over all ranks).
//!
//! ```
//! use pipeline_runtime::resume_check::{Checked, ResumeCheck};
//! use pipeline_runtime::{Order, PipelineBuilder};
//!
//! let report = ResumeCheck::new()
//!     .preemptions(3)
//!     .seed(7)
//!     .run(|attempt| {
//!         let pipeline = PipelineBuilder::new()
//!             .source(0..1000u32)
//!             .pipe(|x| x * 2)
//!             .concurrency(1 + attempt.run % 4) // another concurrency after each stop
//!             .order(Order::Input)
//!             .aggregate(16)
//!             .sink()
//!             .resume_from(attempt.own_state().cloned())
//!             .build()?;
//!         Ok(Checked::from(pipeline))
//!     })?;
//! assert_eq!(report.items, 63);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::accounts::mix;
use super::ResumeState;
use crate::distributed::{DistributedState, Rank};
use crate::failure::BoxError;
use crate::stage::pipe::Order;
use crate::Pipeline;

/// A state the check can keep between runs: serialisable, and saying which epoch a pipeline
/// resumed from it is in first (so that items are compared epoch by epoch).
pub trait CheckState: Serialize + DeserializeOwned {
    /// The epoch a pipeline resumed from it starts in.
    fn epoch(&self) -> u64;
}

impl CheckState for ResumeState {
    fn epoch(&self) -> u64 {
        ResumeState::epoch(self)
    }
}

impl CheckState for DistributedState {
    fn epoch(&self) -> u64 {
        DistributedState::epoch(self)
    }
}

#[cfg(feature = "storage")]
impl CheckState for crate::storage::ShardState {
    fn epoch(&self) -> u64 {
        crate::storage::ShardState::epoch(self)
    }
}

/// What the check asks the user's build function for: one rank of one run.
#[derive(Debug)]
pub struct Attempt<'a, S> {
    /// The rank to build, and the world size of this run.
    pub rank: Rank,
    /// 0: the straight run; 1, 2, ...: the parts of the preempted run, each resumed from
    /// the states the part before it stopped with (vary the concurrency or executor by it).
    pub run: usize,
    states: Option<&'a [S]>,
}

impl<'a, S> Attempt<'a, S> {
    /// The states of every rank of the part before (`None` for a fresh start): what a job
    /// resuming on another world size combines (e.g. `ShardState::resume_all`).
    pub fn states(&self) -> Option<&'a [S]> {
        self.states
    }

    /// This rank's own state, when the part before ran on the same world size.
    pub fn own_state(&self) -> Option<&'a S> {
        let states = self.states?;
        let same_world = states.len() == self.rank.world_size as usize;
        same_world
            .then(|| states.get(self.rank.rank as usize))
            .flatten()
    }
}

/// A pipeline under the check, and how to make the user's state from its
/// [`ResumeState`] (e.g. `ShardState::new(&sampler, state)`).
pub struct Checked<T, S = ResumeState> {
    pipeline: Pipeline<T>,
    state: Box<dyn Fn(ResumeState) -> S>,
}

impl<T, S> Checked<T, S> {
    /// `pipeline`, whose states the check takes as `state(pipeline.resume_state())`.
    pub fn new(pipeline: Pipeline<T>, state: impl Fn(ResumeState) -> S + 'static) -> Self {
        Self {
            pipeline,
            state: Box::new(state),
        }
    }
}

impl<T> From<Pipeline<T>> for Checked<T, ResumeState> {
    /// A pipeline whose state is its own [`ResumeState`].
    fn from(pipeline: Pipeline<T>) -> Self {
        Self::new(pipeline, |state| state)
    }
}

impl<T, S> fmt::Debug for Checked<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checked").finish_non_exhaustive()
    }
}

/// The check's settings; [`run`](Self::run) runs it.
#[derive(Debug, Clone)]
pub struct ResumeCheck {
    preemptions: usize,
    seed: u64,
    epochs: u64,
    order: Order,
    world_sizes: Vec<u32>,
}

impl Default for ResumeCheck {
    fn default() -> Self {
        Self {
            preemptions: 3,
            seed: 0,
            epochs: 1,
            order: Order::Input,
            world_sizes: vec![1],
        }
    }
}

/// What a passing check did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Items the straight run delivered (all ranks, all epochs checked).
    pub items: usize,
    /// For each part of the preempted run but the last, the items each rank read before it
    /// was stopped.
    pub stops: Vec<Vec<usize>>,
    /// The world size of each part of the preempted run.
    pub world_sizes: Vec<u32>,
}

/// Why the check failed: a difference between the runs (the first one found), or a run
/// that could not be built, failed, or whose state did not survive JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    message: String,
}

impl CheckError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resume check failed: {}", self.message)
    }
}

impl std::error::Error for CheckError {}

/// Items one rank received, with their epochs.
type Received<T> = Vec<(u64, T)>;

impl ResumeCheck {
    /// The default check: 3 preemptions, seed 0, one epoch, input order, one rank.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops of the preempted run (default 3); 0 checks only that the states round-trip.
    pub fn preemptions(mut self, k: usize) -> Self {
        self.preemptions = k;
        self
    }

    /// The seed of the stop points (default 0): a failing seed reproduces the failure.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Epochs read by each run (default 1; a continuous source is read for this many).
    pub fn epochs(mut self, epochs: u64) -> Self {
        self.epochs = epochs;
        self
    }

    /// How the pipeline's output is ordered (default [`Order::Input`]): in input order each
    /// rank must receive the same sequence, in completion order the same multiset.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// The world sizes: the straight run and the preempted run's first part use the first,
    /// its part `i` the `i`-th (the last one for the parts beyond), e.g. `[4, 3]` resumes
    /// a 4-rank run on 3 ranks after its first stop. Default `[1]`.
    pub fn world_sizes(mut self, sizes: impl IntoIterator<Item = u32>) -> Self {
        let sizes: Vec<u32> = sizes.into_iter().collect();
        if !sizes.is_empty() {
            self.world_sizes = sizes;
        }
        self
    }

    /// Runs the check: `build` makes each rank's pipeline of each run, fresh or from the
    /// states of the part before (see [`Attempt`]); the pipeline must track resume
    /// (`resume_from`, or `track_resume(true)`). Items are compared whole; for a pipeline
    /// of batches, [`run_batches`](Self::run_batches) compares their elements where the
    /// batches may differ.
    pub fn run<T, S, B>(&self, build: B) -> Result<CheckReport, CheckError>
    where
        T: Ord + fmt::Debug + Send + 'static,
        S: CheckState,
        B: FnMut(&Attempt<'_, S>) -> Result<Checked<T, S>, BoxError>,
    {
        self.run_with(build, |item| vec![item])
    }

    /// [`run`](Self::run) for a pipeline of batches: in input order on one world size the
    /// batches must come in the same sequence; in completion order, or across a change of
    /// world size (where batches are cut anew), their elements must be the same multiset.
    pub fn run_batches<E, S, B>(&self, build: B) -> Result<CheckReport, CheckError>
    where
        E: Ord + fmt::Debug + Send + 'static,
        S: CheckState,
        B: FnMut(&Attempt<'_, S>) -> Result<Checked<Vec<E>, S>, BoxError>,
    {
        self.run_with(build, |batch| batch)
    }

    /// The check, comparing the `elements` of items where only a multiset must agree.
    fn run_with<T, E, S, B>(
        &self,
        mut build: B,
        elements: fn(T) -> Vec<E>,
    ) -> Result<CheckReport, CheckError>
    where
        T: PartialEq + fmt::Debug + Send + 'static,
        E: Ord + fmt::Debug,
        S: CheckState,
        B: FnMut(&Attempt<'_, S>) -> Result<Checked<T, S>, BoxError>,
    {
        if self.world_sizes.contains(&0) {
            return Err(CheckError::new("a world size of 0"));
        }
        let first_world = self.world_sizes[0];
        let mut straight: Vec<Received<T>> = Vec::new();
        for r in 0..first_world {
            let attempt = Attempt {
                rank: rank(r, first_world)?,
                run: 0,
                states: None,
            };
            let mut received = Vec::new();
            let (checked, mut epoch) = self.start(&mut build, &attempt)?;
            let mut pipeline = checked.pipeline;
            self.read(&mut pipeline, &mut epoch, None, &mut received)
                .map_err(|e| CheckError::new(format!("the straight run, rank {r}: {e}")))?;
            straight.push(received);
        }
        let items = straight.iter().map(Vec::len).sum();

        // The stop points: fractions of each rank's share, ascending.
        let mut cuts: Vec<f64> = (0..self.preemptions as u64)
            .map(|i| (mix(self.seed ^ mix(i)) >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        cuts.sort_by(f64::total_cmp);
        let mut preempted: Vec<Received<T>> = Vec::new();
        let mut states: Option<Vec<S>> = None;
        let mut report = CheckReport {
            items,
            stops: Vec::new(),
            world_sizes: Vec::new(),
        };
        for part in 0..=self.preemptions {
            let world = self.world_sizes[part.min(self.world_sizes.len() - 1)];
            report.world_sizes.push(world);
            if preempted.len() < world as usize {
                preempted.resize_with(world as usize, Vec::new);
            }
            let last = part == self.preemptions;
            let mut next_states = Vec::new();
            let mut stops = Vec::new();
            for r in 0..world {
                let share = match world == first_world {
                    true => straight[r as usize].len(),
                    false => items / world as usize,
                };
                let at = |i: usize| match i {
                    0 => 0,
                    i => (cuts[i - 1] * share as f64).round() as usize,
                };
                let quota = (!last).then(|| at(part + 1) - at(part));
                let attempt = Attempt {
                    rank: rank(r, world)?,
                    run: part + 1,
                    states: states.as_deref(),
                };
                let (checked, mut epoch) = self.start(&mut build, &attempt)?;
                let Checked {
                    mut pipeline,
                    state,
                } = checked;
                let before = preempted[r as usize].len();
                self.read(&mut pipeline, &mut epoch, quota, &mut preempted[r as usize])
                    .map_err(|e| {
                        CheckError::new(format!("the preempted run, part {part}, rank {r}: {e}"))
                    })?;
                stops.push(preempted[r as usize].len() - before);
                if !last {
                    let taken = pipeline.resume_state().ok_or_else(untracked)?;
                    next_states.push(through_json(&state(taken))?);
                }
            }
            if !last {
                report.stops.push(stops);
                states = Some(next_states);
            }
        }
        let changed = self.world_sizes.iter().any(|&w| w != first_world);
        compare(
            self.order,
            changed,
            (straight, preempted),
            elements,
            &report,
        )?;
        Ok(report)
    }

    /// Builds one rank of one run; returns it and the epoch it starts in.
    fn start<T, S, B>(
        &self,
        build: &mut B,
        attempt: &Attempt<'_, S>,
    ) -> Result<(Checked<T, S>, u64), CheckError>
    where
        T: Send + 'static,
        S: CheckState,
        B: FnMut(&Attempt<'_, S>) -> Result<Checked<T, S>, BoxError>,
    {
        let checked = build(attempt).map_err(|e| {
            CheckError::new(format!(
                "run {}, rank {}: cannot build the pipeline: {e}",
                attempt.run, attempt.rank.rank
            ))
        })?;
        // Not started yet: the state says where it starts.
        let state = checked.pipeline.resume_state().ok_or_else(untracked)?;
        let epoch = (checked.state)(state).epoch();
        Ok((checked, epoch))
    }

    /// Reads `pipeline` until `quota` items or the end of the last epoch checked.
    fn read<T: Send + 'static>(
        &self,
        pipeline: &mut Pipeline<T>,
        epoch: &mut u64,
        quota: Option<usize>,
        out: &mut Received<T>,
    ) -> Result<(), crate::PipelineError> {
        let mut read = 0;
        while *epoch < self.epochs {
            if quota == Some(read) {
                return Ok(());
            }
            let mut items = pipeline.epoch();
            loop {
                if quota == Some(read) {
                    return Ok(());
                }
                match items.next() {
                    Some(item) => {
                        out.push((*epoch, item?));
                        read += 1;
                    }
                    None => break,
                }
            }
            *epoch += 1;
        }
        Ok(())
    }
}

fn rank(r: u32, world: u32) -> Result<Rank, CheckError> {
    Rank::new(r, world).map_err(|e| CheckError::new(e.to_string()))
}

fn untracked() -> CheckError {
    CheckError::new(
        "the pipeline does not track resume: build it with `resume_from(state)` (or \
         `track_resume(true)`)",
    )
}

/// The state written to JSON and read back, as a job keeps it.
fn through_json<S: CheckState>(state: &S) -> Result<S, CheckError> {
    let json = serde_json::to_string(state)
        .map_err(|e| CheckError::new(format!("a state does not serialise: {e}")))?;
    serde_json::from_str(&json)
        .map_err(|e| CheckError::new(format!("a state does not read back from its JSON: {e}")))
}

fn compare<T: PartialEq + fmt::Debug, E: Ord + fmt::Debug>(
    order: Order,
    world_changed: bool,
    (straight, preempted): (Vec<Received<T>>, Vec<Received<T>>),
    elements: fn(T) -> Vec<E>,
    report: &CheckReport,
) -> Result<(), CheckError> {
    let explode = |runs: Vec<Received<T>>| -> Vec<Received<E>> {
        runs.into_iter()
            .map(|items| {
                items
                    .into_iter()
                    .flat_map(|(epoch, item)| elements(item).into_iter().map(move |e| (epoch, e)))
                    .collect()
            })
            .collect()
    };
    let context = || {
        format!(
            "(preempted after {:?} items per rank, on world sizes {:?})",
            report.stops, report.world_sizes
        )
    };
    if world_changed {
        let all = |runs| explode(runs).into_iter().flatten().collect::<Vec<_>>();
        return same_multiset(all(straight), all(preempted))
            .map_err(|d| CheckError::new(format!("over all ranks, {d} {}", context())));
    }
    let ranks: Vec<(Received<T>, Received<T>)> = straight.into_iter().zip(preempted).collect();
    for (r, (a, b)) in ranks.into_iter().enumerate() {
        let difference = match order {
            Order::Input => same_sequence(a, b),
            Order::Completion => {
                let mut both = explode(vec![a, b]).into_iter();
                let (a, b) = (
                    both.next().unwrap_or_default(),
                    both.next().unwrap_or_default(),
                );
                same_multiset(a, b)
            }
        };
        difference.map_err(|d| CheckError::new(format!("rank {r}: {d} {}", context())))?;
    }
    Ok(())
}

/// The first place the two sequences differ, in words.
fn same_sequence<T: PartialEq + fmt::Debug>(
    straight: Received<T>,
    preempted: Received<T>,
) -> Result<(), String> {
    let (n, m) = (straight.len(), preempted.len());
    for (i, (a, b)) in straight.iter().zip(&preempted).enumerate() {
        if a != b {
            return Err(format!(
                "item {i} differs: the straight run gave {:?} (epoch {}), the preempted run \
                 {:?} (epoch {})",
                a.1, a.0, b.1, b.0
            ));
        }
    }
    match n.cmp(&m) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(format!(
            "the preempted run lost items: it ended after {m} items, the straight run gave \
             {n}; the first missing is {:?} (epoch {})",
            straight[m].1, straight[m].0
        )),
        std::cmp::Ordering::Less => Err(format!(
            "the preempted run delivered {m} items, the straight run {n}; the first extra \
             is {:?} (epoch {})",
            preempted[n].1, preempted[n].0
        )),
    }
}

/// The first item (in sort order) received a different number of times, in words.
fn same_multiset<T: Ord + fmt::Debug>(
    mut straight: Received<T>,
    mut preempted: Received<T>,
) -> Result<(), String> {
    straight.sort_unstable();
    preempted.sort_unstable();
    let (mut i, mut j) = (0, 0);
    while i < straight.len() || j < preempted.len() {
        let pick = match (straight.get(i), preempted.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
                continue;
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => unreachable!(),
        };
        let count = |v: &[(u64, T)]| v.iter().filter(|x| *x == pick).count();
        return Err(format!(
            "item {:?} of epoch {} came {} time(s) in the straight run and {} time(s) in \
             the preempted run",
            pick.1,
            pick.0,
            count(&straight),
            count(&preempted)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named() {
        let err = same_sequence(vec![(0, 1), (0, 2), (0, 3)], vec![(0, 1), (0, 3)]).unwrap_err();
        assert!(err.starts_with("item 1 differs"), "{err}");
        let err = same_sequence(vec![(0, 1), (0, 2)], vec![(0, 1)]).unwrap_err();
        assert!(err.contains("the first missing is 2"), "{err}");
        let err = same_multiset(vec![(0, 1), (0, 2)], vec![(0, 2), (0, 1), (0, 2)]).unwrap_err();
        assert!(
            err.contains("item 2 of epoch 0 came 1 time(s) in the straight run and 2"),
            "{err}"
        );
        assert_eq!(
            same_multiset(vec![(1, 5), (0, 5)], vec![(0, 5), (1, 5)]),
            Ok(())
        );
    }
}
