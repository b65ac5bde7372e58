//! The merge stage: the outputs of several inputs (sub-pipelines started in the same pipeline)
//! into one stream, read by a policy, with an option for what happens when an input ends.
//!
//! One lane on the default pool reads every input. A policy that picks the next input
//! (round-robin, weighted, custom) waits on the input it picked, so the merged order depends
//! only on the inputs' orders and the policy, never on timing. "As available" polls every
//! input and takes whichever has an item, starting after the input it took from last.
//!
//! Epochs: with continuous inputs, an input's epoch boundary is the end of its pass, and the
//! merged stream is continuous too; a merged epoch ends when the `OnEnd` rule says the merge
//! would end (see [`OnEnd`]). The weighted policy draws from a generator per merged epoch.
//!
//! Resume tracking: the lane's state ([`MergeCursor`]) goes to the ledger with every message
//! it takes, and each item it sends on carries a group of its tag, so that the ledger knows
//! which merged items are still in flight (see [`crate::resume::merge`]). A resumed lane
//! first takes those again from their inputs, in order, then goes on from the state.

use std::collections::VecDeque;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures::Stream;

use crate::distributed::{ItemKey, Rng};
use crate::failure::ItemError;
use crate::failure::StageFailureKind;
use crate::hook::TaskOutcome;
use crate::queue::{Closed, Msg, Rx, Tx};
use crate::resume::merge::{InputCursor, InputStatus, MergeCursor};
use crate::stage::{LaneGuard, LaneTurns, StageCtx};

/// What a merge does when one of its inputs ends (its queue closes or, with continuous
/// inputs, its pass ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEnd {
    /// The merge ends with the first input that ends; the other inputs are stopped (their
    /// stages end, nothing is left running). HuggingFace's `first_exhausted`.
    Stop,
    /// The merge goes on with the other inputs and ends when every input has ended (the
    /// default; SPDL's `Merge`).
    #[default]
    Continue,
    /// An input that ends is restarted for its next pass, and the merge ends once every
    /// input has ended at least once, so smaller inputs are repeated (HuggingFace's
    /// `all_exhausted`). Every input must be a continuous source (a new pass per epoch).
    Restart,
}

/// Picks the input a merge reads next: the policy of [`MergePolicy::custom`].
pub trait MergeChooser: Send + 'static {
    /// The input to read the next item from; `open[i]` says whether input `i` can still be
    /// read. `None` ends the merge early: its inputs are stopped and the pipeline ends after
    /// the items already merged (it does not hang). Choosing an input that is not open fails
    /// the merge.
    fn choose(&mut self, open: &[bool]) -> Option<usize>;
}

impl<F: FnMut(&[bool]) -> Option<usize> + Send + 'static> MergeChooser for F {
    fn choose(&mut self, open: &[bool]) -> Option<usize> {
        self(open)
    }
}

/// How a merge interleaves its inputs (default: [`as_available`](Self::as_available)).
pub struct MergePolicy(pub(crate) Policy);

pub(crate) enum Policy {
    AsAvailable,
    RoundRobin,
    Weighted {
        weights: Vec<f64>,
        seed: u64,
        rank: u32,
    },
    Custom(Box<dyn MergeChooser>),
}

impl Default for MergePolicy {
    fn default() -> Self {
        Self::as_available()
    }
}

impl fmt::Debug for MergePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Policy::AsAvailable => f.write_str("as_available"),
            Policy::RoundRobin => f.write_str("round_robin"),
            Policy::Weighted {
                weights,
                seed,
                rank,
            } => write!(f, "weighted({weights:?}, seed = {seed}, rank = {rank})"),
            Policy::Custom(_) => f.write_str("custom"),
        }
    }
}

impl MergePolicy {
    /// Whichever input has an item first (fair: after at most 32 items in a row from input
    /// `i`, the next look starts at `i + 1`). The order depends on timing.
    pub fn as_available() -> Self {
        Self(Policy::AsAvailable)
    }

    /// One item from each open input in turn (waiting for it), skipping inputs that ended.
    pub fn round_robin() -> Self {
        Self(Policy::RoundRobin)
    }

    /// Mixing: each item comes from input `i` with probability `weights[i] / sum` (of the
    /// inputs still open), drawn from a generator seeded by `seed`, so the merged order is
    /// the same for the same seed (and the same input orders). Weights must be finite and
    /// positive, one per input.
    ///
    /// Merged epoch `e` of rank `r` (see [`rank`](Self::rank)) draws from
    /// `ItemKey { seed, epoch: e, index: r }.rng()`: each draw is `u = next_f64() * sum`,
    /// and picks the first open input whose running sum of weights exceeds `u`.
    pub fn weighted(weights: impl Into<Vec<f64>>, seed: u64) -> Self {
        Self(Policy::Weighted {
            weights: weights.into(),
            seed,
            rank: 0,
        })
    }

    /// The rank whose draws a weighted policy makes (default 0), so that the ranks of a
    /// distributed job mix differently from the same seed. No effect on other policies.
    pub fn rank(mut self, rank: u32) -> Self {
        if let Policy::Weighted { rank: r, .. } = &mut self.0 {
            *r = rank;
        }
        self
    }

    /// Your own policy (SPDL's custom merge `op`): `chooser` picks each next input.
    pub fn custom(chooser: impl MergeChooser) -> Self {
        Self(Policy::Custom(Box::new(chooser)))
    }
}

/// The lane's view of the policy: what picks the next input.
enum Pick {
    AsAvailable {
        start: usize,
        /// Items taken in a row from input `start`.
        run: u32,
    },
    RoundRobin {
        next: usize,
    },
    Weighted {
        weights: Vec<f64>,
        seed: u64,
        rank: u32,
        rng: Rng,
    },
    Custom(Box<dyn MergeChooser>),
}

impl Pick {
    /// The policy's picker, at `cursor`'s place.
    fn new(policy: Policy, cursor: &MergeCursor) -> Self {
        let n = cursor.inputs.len().max(1);
        match policy {
            Policy::AsAvailable => Pick::AsAvailable {
                start: cursor.next % n,
                run: 0,
            },
            Policy::RoundRobin => Pick::RoundRobin {
                next: cursor.next % n,
            },
            Policy::Weighted {
                weights,
                seed,
                rank,
            } => Pick::Weighted {
                rng: cursor
                    .rng
                    .and_then(Rng::from_state)
                    .unwrap_or_else(|| epoch_rng(seed, rank, cursor.epoch)),
                weights,
                seed,
                rank,
            },
            Policy::Custom(chooser) => Pick::Custom(chooser),
        }
    }

    /// Writes its place into `cursor`.
    fn save(&self, cursor: &mut MergeCursor) {
        match self {
            Pick::AsAvailable { start, .. } => cursor.next = *start,
            Pick::RoundRobin { next } => cursor.next = *next,
            Pick::Weighted { rng, .. } => cursor.rng = Some(rng.state()),
            Pick::Custom(_) => {}
        }
    }

    fn start_epoch(&mut self, epoch: u64) {
        if let Pick::Weighted {
            seed, rank, rng, ..
        } = self
        {
            *rng = epoch_rng(*seed, *rank, epoch);
        }
    }
}

fn epoch_rng(seed: u64, rank: u32, epoch: u64) -> Rng {
    ItemKey {
        seed,
        epoch,
        index: u64::from(rank),
    }
    .rng()
}

/// The draw of a weighted policy among the open inputs (see [`MergePolicy::weighted`]).
fn draw(weights: &[f64], open: &[bool], rng: &mut Rng) -> Option<usize> {
    let total: f64 = weights
        .iter()
        .zip(open)
        .filter(|(_, o)| **o)
        .map(|(w, _)| w)
        .sum();
    let u = rng.next_f64() * total;
    let mut sum = 0.0;
    let mut last = None;
    for (i, (w, o)) in weights.iter().zip(open).enumerate() {
        if *o {
            sum += w;
            last = Some(i);
            if u < sum {
                return Some(i);
            }
        }
    }
    last
}

/// Takes the next message from whichever open input has one, starting at `start`:
/// `(input, message)`, `Err(input)` when that input closed.
pub(crate) async fn next_available<T>(
    inputs: &mut [Rx<T>],
    open: &[bool],
    start: usize,
) -> (usize, Result<Msg<T>, Closed>) {
    let n = inputs.len();
    std::future::poll_fn(|cx| {
        for k in 0..n {
            let i = (start + k) % n;
            if !open[i] {
                continue;
            }
            match Pin::new(&mut inputs[i]).poll_next(cx) {
                Poll::Ready(Some(msg)) => return Poll::Ready((i, Ok(msg))),
                Poll::Ready(None) => return Poll::Ready((i, Err(Closed))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// How many items "as available" takes in a row from one input before looking at the others
/// first.
const AVAILABLE_RUN: u32 = 32;

pub(crate) struct MergeLane<T> {
    /// First, so that it drops first (see `Lane::_guard`).
    pub(crate) _guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) inputs: Vec<Rx<T>>,
    pub(crate) output: Tx<T>,
    pub(crate) policy: MergePolicy,
    pub(crate) on_end: OnEnd,
    /// Resume tracking: where the lane starts, and what it takes again first.
    pub(crate) resume: Option<MergeResume>,
}

/// Where a tracked merge starts (see the [module docs](self)).
pub(crate) struct MergeResume {
    pub(crate) cursor: MergeCursor,
    /// The inputs of the merged items to take again first, in order (`None`: an epoch end).
    pub(crate) replay: VecDeque<Option<u32>>,
    /// Per input: epoch ends its source sends again that the merge had read already.
    pub(crate) absorb: Vec<u64>,
    /// Per input: epoch ends the merge had not read but its source, resumed past them, will
    /// not send.
    pub(crate) owed: Vec<u64>,
}

impl MergeResume {
    /// A merge of inputs whose sources start at `passes`, in merged epoch `epoch`.
    pub(crate) fn fresh(epoch: u64, passes: &[u64]) -> Self {
        let inputs = passes
            .iter()
            .map(|&pass| InputCursor {
                status: InputStatus::Open,
                ended: false,
                pass,
            })
            .collect();
        Self {
            cursor: MergeCursor {
                epoch,
                rng: None,
                next: 0,
                inputs,
            },
            replay: VecDeque::new(),
            absorb: vec![0; passes.len()],
            owed: vec![0; passes.len()],
        }
    }
}

/// What the lane does after one message.
enum Step {
    /// An item went on (its state went with it to the ledger).
    Sent,
    Go,
    EpochEnd,
    End,
}

impl<T: Send + 'static> MergeLane<T> {
    pub(crate) async fn run(mut self) {
        let n = self.inputs.len();
        let tracked = self.resume.is_some();
        let MergeResume {
            mut cursor,
            mut replay,
            mut absorb,
            mut owed,
        } = self
            .resume
            .take()
            .unwrap_or_else(|| MergeResume::fresh(0, &vec![0; n]));
        let ledger = self.ctx.ledger.clone().filter(|_| tracked);
        let mut pick = Pick::new(std::mem::take(&mut self.policy).0, &cursor);
        pick.save(&mut cursor);
        let mut turns = LaneTurns::default();
        // The merged items in flight when the state was taken, in their order.
        let mut replaying = true;
        while let Some(entry) = replay.pop_front() {
            if self.ctx.should_stop() {
                replaying = false;
                break;
            }
            let sent = match entry {
                None => self.output.send(Msg::EpochEnd).await.is_ok(),
                Some(i) => match self.recv_from(i as usize, &mut absorb, &mut owed).await {
                    Ok(Msg::Item(item, tag)) => {
                        let tag = match &ledger {
                            Some(ledger) => ledger.merge_took(i, tag, &cursor, true),
                            None => tag,
                        };
                        self.pass_on(item, tag).await
                    }
                    _ => {
                        self.fail(format!(
                            "cannot resume: input {i} has no item where the resume state has \
                             one in flight (the state is not this pipeline's, or the input's \
                             stages do not give the same items again)"
                        ));
                        false
                    }
                },
            };
            if !sent {
                replaying = false;
                break;
            }
            turns.handled_one().await;
        }
        // After them, the lane goes on from the saved place (unless it must end now).
        if replaying {
            self.merge_on(
                &mut cursor,
                &mut pick,
                ledger.as_deref(),
                (&mut absorb, &mut owed),
                &mut turns,
            )
            .await;
        }
        // Whatever ended the merge, its inputs are read no more: closing them ends their
        // stages (their sends fail) instead of leaving them blocked on a full queue.
        for input in &self.inputs {
            input.close();
        }
    }

    /// Merges until the end, from `cursor`'s place.
    async fn merge_on(
        &mut self,
        cursor: &mut MergeCursor,
        pick: &mut Pick,
        ledger: Option<&crate::resume::ledger::Ledger>,
        (absorb, owed): (&mut [u64], &mut [u64]),
        turns: &mut LaneTurns,
    ) {
        let n = self.inputs.len();
        let mut open = vec![true; n];
        loop {
            if self.ctx.should_stop() {
                break;
            }
            for (o, c) in open.iter_mut().zip(&cursor.inputs) {
                *o = c.status == InputStatus::Open;
            }
            if !open.contains(&true) {
                let paused = cursor
                    .inputs
                    .iter()
                    .any(|c| c.status == InputStatus::Paused);
                if paused && self.end_epoch(cursor, pick, ledger).await {
                    continue;
                }
                break;
            }
            let (i, msg) = match &mut *pick {
                Pick::AsAvailable { start, run } => {
                    let (i, msg) = match (0..n).find(|&i| open[i] && owed[i] > 0) {
                        Some(i) => {
                            owed[i] -= 1;
                            (i, Ok(Msg::EpochEnd))
                        }
                        None => next_available(&mut self.inputs, &open, *start).await,
                    };
                    if matches!(msg, Ok(Msg::EpochEnd)) && absorb[i] > 0 {
                        absorb[i] -= 1;
                        continue;
                    }
                    // Up to `AVAILABLE_RUN` items in a row from an input that has them, then
                    // the next look starts after it: fair, and a source whose queue is being
                    // drained is woken once per run rather than once per item.
                    *run = if i == *start { *run + 1 } else { 1 };
                    if *run >= AVAILABLE_RUN {
                        *start = (i + 1) % n;
                        *run = 0;
                    } else {
                        *start = i;
                    }
                    (i, msg)
                }
                other => {
                    let chosen = match other {
                        Pick::RoundRobin { next } => {
                            let i = (0..n).map(|k| (*next + k) % n).find(|&i| open[i]);
                            *next = i.map_or(0, |i| (i + 1) % n);
                            i
                        }
                        Pick::Weighted { weights, rng, .. } => draw(weights, &open, rng),
                        Pick::Custom(chooser) => {
                            match catch_unwind(AssertUnwindSafe(|| chooser.choose(&open))) {
                                Ok(Some(i)) if i < n && open[i] => Some(i),
                                Ok(Some(i)) => {
                                    self.fail(format!(
                                        "the merge policy chose input {i}, which is not open \
                                         (open: {open:?}); choose an input whose `open` is true"
                                    ));
                                    break;
                                }
                                Ok(None) => None,
                                Err(panic) => {
                                    let error = ItemError::panic(&self.ctx.name, panic.as_ref());
                                    self.ctx.fail_stage(StageFailureKind::Source(error));
                                    break;
                                }
                            }
                        }
                        Pick::AsAvailable { .. } => unreachable!("handled above"),
                    };
                    // The policy ended the merge early: stop the inputs (below), end here.
                    let Some(i) = chosen else { break };
                    (i, self.recv_from(i, absorb, owed).await)
                }
            };
            let step = match msg {
                Ok(Msg::Item(item, tag)) => {
                    self.ctx.task_ended(0, None, TaskOutcome::Succeeded);
                    let tag = match &ledger {
                        Some(ledger) => {
                            pick.save(cursor);
                            ledger.merge_took(i as u32, tag, cursor, false)
                        }
                        None => tag,
                    };
                    if !self.pass_on(item, tag).await {
                        break;
                    }
                    Step::Sent
                }
                Ok(Msg::EpochEnd) => {
                    let input = &mut cursor.inputs[i];
                    input.pass += 1;
                    match self.on_end {
                        OnEnd::Stop => Step::EpochEnd,
                        OnEnd::Continue => {
                            input.status = InputStatus::Paused;
                            Step::Go
                        }
                        OnEnd::Restart => {
                            input.ended = true;
                            let all = cursor
                                .inputs
                                .iter()
                                .all(|c| c.ended || c.status == InputStatus::Closed);
                            if all {
                                Step::EpochEnd
                            } else {
                                Step::Go
                            }
                        }
                    }
                }
                Err(Closed) => match self.on_end {
                    OnEnd::Stop => Step::End,
                    OnEnd::Continue | OnEnd::Restart => {
                        cursor.inputs[i].status = InputStatus::Closed;
                        Step::Go
                    }
                },
            };
            match step {
                Step::Sent => {}
                Step::Go => {
                    if let Some(ledger) = &ledger {
                        pick.save(cursor);
                        ledger.merge_moved(cursor, false);
                    }
                }
                Step::End => break,
                Step::EpochEnd => {
                    if !self.end_epoch(cursor, pick, ledger).await {
                        break;
                    }
                }
            }
            turns.handled_one().await;
        }
    }

    /// The next message of input `i`: an epoch end it owes first; one it sends again
    /// dropped.
    async fn recv_from(
        &mut self,
        i: usize,
        absorb: &mut [u64],
        owed: &mut [u64],
    ) -> Result<Msg<T>, Closed> {
        if owed[i] > 0 {
            owed[i] -= 1;
            return Ok(Msg::EpochEnd);
        }
        loop {
            let msg = self.inputs[i].recv().await;
            if matches!(msg, Ok(Msg::EpochEnd)) && absorb[i] > 0 {
                absorb[i] -= 1;
                continue;
            }
            return msg;
        }
    }

    /// Sends an item on; false if the output is gone.
    async fn pass_on(&mut self, item: T, tag: crate::resume::Tag) -> bool {
        if self.output.send(Msg::Item(item, tag)).await.is_err() {
            return false;
        }
        self.ctx.counters.lane(0).record_outputs(1);
        true
    }

    /// Passes a merged epoch's end on and opens every paused input again. False if the
    /// output is gone.
    async fn end_epoch(
        &mut self,
        cursor: &mut MergeCursor,
        pick: &mut Pick,
        ledger: Option<&crate::resume::ledger::Ledger>,
    ) -> bool {
        for input in &mut cursor.inputs {
            if input.status == InputStatus::Paused {
                input.status = InputStatus::Open;
            }
            input.ended = false;
        }
        cursor.epoch += 1;
        pick.start_epoch(cursor.epoch);
        if let Some(ledger) = ledger {
            pick.save(cursor);
            ledger.merge_moved(cursor, true);
        }
        self.output.send(Msg::EpochEnd).await.is_ok()
    }

    fn fail(&self, message: String) {
        let error = ItemError::from_error(&self.ctx.name, message.into());
        self.ctx.fail_stage(StageFailureKind::Source(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_picks_only_open_inputs_in_proportion() {
        let mut rng = Rng::seed_from_u64(1);
        let weights = [3.0, 1.0, 5.0];
        let open = [true, true, false];
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[draw(&weights, &open, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        // 3:1 within a generous margin.
        assert!((2400..3600).contains(&counts[0]), "{counts:?}");
        assert_eq!(draw(&weights, &[false; 3], &mut rng), None);
    }
}
