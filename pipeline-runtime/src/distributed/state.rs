//! A rank's saved state, and resuming from it: on the same world size (the rank's own
//! state), or on another (every old rank's state, the epoch's remaining items re-split).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::sampler::{Leftover, Plan, Resplit, Sampler};
use crate::resume::ResumeState;

const VERSION: u32 = 1;

/// What one rank saves to resume exactly: its sampler's [`Plan`] and its pipeline's
/// [`ResumeState`]. Serialisable (e.g. as JSON); a few hundred bytes, bounded by the
/// pipeline's items in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedState {
    version: u32,
    sampler: Plan,
    pipeline: ResumeState,
}

/// A state that cannot be resumed here; the message says why, naming what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    message: String,
}

impl StateError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resume: {}", self.message)
    }
}

impl std::error::Error for StateError {}

/// Where a resumed rank starts: the sampler to read (its epochs from
/// [`epoch`](Self::epoch) on) and the state its pipeline resumes from.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The sampler, for the pipeline's source (`continuous_source(resume.sampler.epochs())`).
    pub sampler: Sampler,
    /// For [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from).
    pub pipeline: ResumeState,
}

impl Resume {
    /// The epoch the resumed pipeline is in first.
    pub fn epoch(&self) -> u64 {
        self.sampler.first_epoch() + self.pipeline.epoch()
    }
}

impl DistributedState {
    /// The state of a rank reading `sampler` (through `sampler.epochs()`) whose pipeline is
    /// at `pipeline`.
    pub fn new(sampler: &Sampler, pipeline: ResumeState) -> Self {
        Self {
            version: VERSION,
            sampler: sampler.plan().clone(),
            pipeline,
        }
    }

    /// The sampler's description.
    pub fn plan(&self) -> &Plan {
        &self.sampler
    }

    /// The pipeline's state.
    pub fn pipeline(&self) -> &ResumeState {
        &self.pipeline
    }

    /// The epoch the state is in.
    pub fn epoch(&self) -> u64 {
        self.sampler.resplit_epoch().unwrap_or(0) + self.pipeline.epoch()
    }

    /// Resumes this rank from its own state; `fresh` is the sampler this run would read
    /// without a state (its dataset, seed, split, world and rank must be the state's).
    pub fn resume(&self, fresh: &Sampler) -> Result<Resume, StateError> {
        self.check_version()?;
        let plan = fresh.plan();
        same_dataset(&self.sampler, plan)?;
        if self.sampler.world_size() != plan.world_size() {
            return Err(StateError::new(format!(
                "the state is for a world of {} ranks, this run has {}; give every rank's \
                 state to resume on another world size",
                self.sampler.world_size(),
                plan.world_size()
            )));
        }
        if self.sampler.rank() != plan.rank() {
            return Err(StateError::new(format!(
                "the state is rank {}'s, this is rank {}",
                self.sampler.rank(),
                plan.rank()
            )));
        }
        let sampler = Sampler::from_plan(self.sampler.clone()).map_err(StateError::new)?;
        Ok(Resume {
            sampler,
            pipeline: self.pipeline.clone(),
        })
    }

    /// Resumes rank `fresh.plan().rank()` from the states of every rank of the old run. On
    /// the same world size that is the rank's own state; on another, the items each old
    /// rank had left of the epoch are split across the new ranks (by the fresh sampler's
    /// [`Split`](super::Split)), and later epochs are split the new way.
    pub fn resume_all(states: &[DistributedState], fresh: &Sampler) -> Result<Resume, StateError> {
        let plan = fresh.plan();
        let Some(first) = states.first() else {
            return Err(StateError::new("no state given"));
        };
        let old_world = first.sampler.world_size();
        let mut by_rank: BTreeMap<u32, &DistributedState> = BTreeMap::new();
        for state in states {
            state.check_version()?;
            same_dataset(&state.sampler, plan)?;
            if state.sampler.with_rank(0) != first.sampler.with_rank(0) {
                return Err(StateError::new(
                    "the states come from different runs (their samplers differ)",
                ));
            }
            if state.pipeline.shape() != first.pipeline.shape() {
                return Err(StateError::new(
                    "the states come from pipelines of different shapes",
                ));
            }
            if by_rank.insert(state.sampler.rank(), state).is_some() {
                return Err(StateError::new(format!(
                    "two states of rank {}",
                    state.sampler.rank()
                )));
            }
        }
        if let Some(missing) = (0..old_world).find(|r| !by_rank.contains_key(r)) {
            return Err(StateError::new(format!(
                "the state of rank {missing} of the old world of {old_world} is missing"
            )));
        }
        if old_world == plan.world_size() {
            return by_rank[&plan.rank()].resume(fresh);
        }
        // Every old rank where it stands in its epoch order; a rank that has taken all of
        // its epoch and has nothing of it pending stands at the start of the next.
        let old = Sampler::from_plan(first.sampler.clone()).map_err(StateError::new)?;
        let mut epoch = None;
        let mut left = Vec::new();
        for (&rank, state) in &by_rank {
            let old_rank = Sampler::from_plan(state.sampler.clone()).map_err(StateError::new)?;
            let mut e = state.epoch();
            let mut frontier = state.pipeline.frontier();
            let mut pending = state.pipeline.pending().to_vec();
            loop {
                let len = old_rank.epoch_len(e);
                if frontier < len || pending.first().is_some_and(|&p| p < len) {
                    break;
                }
                frontier -= len;
                pending.iter_mut().for_each(|p| *p -= len);
                e += 1;
            }
            match epoch {
                None => epoch = Some(e),
                Some(other) if other != e => {
                    return Err(StateError::new(format!(
                        "the old ranks are in different epochs ({other} and rank {rank}'s {e})"
                    )))
                }
                Some(_) => {}
            }
            left.push(Leftover { frontier, pending });
        }
        let epoch = epoch.expect("at least one state");
        // The old run's own re-split matters only if it is of this same epoch.
        let mut old_plan = old.plan().with_rank(0);
        if old_plan.resplit_epoch() != Some(epoch) {
            old_plan = old_plan.with_resplit(None);
        }
        let resplit = Resplit {
            epoch,
            old: old_plan,
            left,
        };
        let sampler =
            Sampler::from_plan(plan.with_resplit(Some(resplit))).map_err(StateError::new)?;
        Ok(Resume {
            sampler,
            pipeline: ResumeState::start_of_epoch(first.pipeline.shape(), 0),
        })
    }

    fn check_version(&self) -> Result<(), StateError> {
        if self.version == VERSION {
            Ok(())
        } else {
            Err(StateError::new(format!(
                "the state has version {}, this build reads version {VERSION}",
                self.version
            )))
        }
    }
}

/// Checks that a state's dataset and shuffle are this run's.
fn same_dataset(state: &Plan, run: &Plan) -> Result<(), StateError> {
    let differs = |what: &str, state: String, run: String| {
        Err(StateError::new(format!(
            "the state is for {what} {state}, this run has {run}"
        )))
    };
    if state.len() != run.len() {
        return differs(
            "a dataset of",
            format!("{} items", state.len()),
            format!("{} items", run.len()),
        );
    }
    if state.seed() != run.seed() {
        return differs(
            "seed",
            state.seed().to_string(),
            format!("seed {}", run.seed()),
        );
    }
    if state.shuffle() != run.shuffle() {
        return differs(
            "shuffle =",
            state.shuffle().to_string(),
            format!("shuffle = {}", run.shuffle()),
        );
    }
    if state.split() != run.split() {
        return differs(
            "split",
            format!("{:?}", state.split()),
            format!("{:?}", run.split()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::distributed::{Rank, Split};

    fn sampler(len: u64, r: u32, w: u32) -> Sampler {
        Sampler::new(len, Rank::new(r, w).unwrap()).seed(3)
    }

    /// Rank `r` of 4 in epoch 1 at `frontier`, with `pending` in flight.
    fn state(r: u32, frontier: u64, pending: Vec<u64>) -> DistributedState {
        let s = sampler(103, r, 4);
        DistributedState::new(&s, ResumeState::new("shape".into(), 1, frontier, pending))
    }

    #[test]
    fn four_ranks_resumed_as_three_read_every_item_left_once() {
        let states: Vec<DistributedState> = (0..4)
            .map(|r| state(r, 10 + u64::from(r), vec![2, 7]))
            .collect();
        let mut left = BTreeSet::new();
        for (r, st) in states.iter().enumerate() {
            let old = sampler(103, r as u32, 4);
            for pos in 0..old.epoch_len(1) {
                if st.pipeline().is_remaining(pos) {
                    left.insert(old.index(1, pos));
                }
            }
        }
        for split in [Split::DropRemainder, Split::Even] {
            let mut seen = Vec::new();
            let mut lens = Vec::new();
            for r in 0..3 {
                let resume =
                    DistributedState::resume_all(&states, &sampler(103, r, 3).split(split));
                // The states' split is the default; another one is refused.
                if split != Split::DropRemainder {
                    assert!(resume.unwrap_err().message().contains("split"));
                    continue;
                }
                let resume = resume.unwrap();
                assert_eq!(resume.epoch(), 1);
                assert_eq!(resume.pipeline.frontier(), 0);
                let keys: Vec<_> = resume.sampler.epochs().into_iter().collect();
                lens.push(keys.len());
                seen.extend(keys.iter().map(|k| k.index));
                // The next epoch is split the new way.
                assert_eq!(resume.sampler.epoch_len(2), 103 / 3);
            }
            if split == Split::DropRemainder {
                assert!(lens.iter().all(|&l| l == lens[0]), "{lens:?}");
                let n = seen.len();
                let seen: BTreeSet<u64> = seen.into_iter().collect();
                assert_eq!(seen.len(), n, "no item twice");
                assert!(seen.is_subset(&left));
                assert_eq!(
                    left.len() - seen.len(),
                    left.len() % 3,
                    "only the remainder dropped"
                );
            }
        }
    }

    #[test]
    fn the_same_world_resumes_each_rank_from_its_own_state() {
        let states: Vec<DistributedState> =
            (0..4).map(|r| state(r, 5 * u64::from(r), vec![])).collect();
        let resume = DistributedState::resume_all(&states, &sampler(103, 2, 4)).unwrap();
        assert_eq!(resume.pipeline.frontier(), 10);
        assert_eq!(resume.epoch(), 1);
        let m = states[1].resume(&sampler(103, 2, 4)).unwrap_err();
        assert!(m.message().contains("rank 1"), "{m}");
        let m = states[1].resume(&sampler(103, 1, 3)).unwrap_err();
        assert!(m.message().contains("every rank"), "{m}");
    }

    #[test]
    fn states_of_another_dataset_or_incomplete_sets_are_refused() {
        let states: Vec<DistributedState> = (0..4).map(|r| state(r, 3, vec![])).collect();
        let m = states[0].resume(&sampler(200, 0, 4)).unwrap_err();
        assert!(
            m.message().contains("103 items") && m.message().contains("200 items"),
            "{m}"
        );
        let m = states[0].resume(&sampler(103, 0, 4).seed(4)).unwrap_err();
        assert!(m.message().contains("seed"), "{m}");
        let m = DistributedState::resume_all(&states[..3], &sampler(103, 0, 2)).unwrap_err();
        assert!(m.message().contains("rank 3"), "{m}");
        let mut twice = states.clone();
        twice[3] = states[2].clone();
        let m = DistributedState::resume_all(&twice, &sampler(103, 0, 2)).unwrap_err();
        assert!(m.message().contains("two states of rank 2"), "{m}");
    }

    #[test]
    fn a_rank_done_with_its_epoch_stands_at_the_next() {
        // Rank 0 took all 25 items of epoch 1 and 3 of epoch 2; the others are in epoch 2.
        let mut states: Vec<DistributedState> = (0..4)
            .map(|r| {
                let s = sampler(103, r, 4);
                DistributedState::new(&s, ResumeState::new("shape".into(), 2, 4, vec![]))
            })
            .collect();
        states[0] = DistributedState::new(
            &sampler(103, 0, 4),
            ResumeState::new("shape".into(), 1, 28, vec![25]),
        );
        let resume = DistributedState::resume_all(&states, &sampler(103, 0, 2)).unwrap();
        assert_eq!(resume.epoch(), 2);
        states[0] = DistributedState::new(
            &sampler(103, 0, 4),
            ResumeState::new("shape".into(), 1, 28, vec![24]),
        );
        let m = DistributedState::resume_all(&states, &sampler(103, 0, 2)).unwrap_err();
        assert!(m.message().contains("different epochs"), "{m}");
    }
}
