//! The route stage: a router sends each item (or, batched, each element of a batch) to one of
//! several branches, sub-pipelines started in the same pipeline, whose outputs are joined
//! into one stream again.
//!
//! Per item, the join is a merge that takes whatever a branch has ready (completion order),
//! with an epoch barrier: a boundary goes out once every branch has passed it on.
//!
//! Batched, the router splits each batch into one sub-batch per branch that has elements of
//! it, numbers the batch, and records where each element came from; the sub-batches travel
//! with the batch's number as their tag, so the join finds the batch each returning
//! sub-batch belongs to whatever order the branches finish in, and puts its elements back
//! in their places once every sub-batch is back. A branch must return one element per
//! element it was given; a sub-batch that a branch drops or fails takes its batch with it
//! (the batch's other elements are dropped at the next epoch boundary or the end).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::failure::ItemError;
use crate::hook::TaskOutcome;
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::Outcome;
use crate::resume::ledger::Ledger;
use crate::resume::Tag;
use crate::stage::merge::lane::next_available;
use crate::stage::{LaneGuard, LaneTurns, StageCtx};
use crate::sync::lock;

/// A router: the branch (its index, in the order the branches were given) of an item.
pub(crate) type Router<T> = Arc<dyn Fn(&T) -> usize + Send + Sync>;

/// Where the elements of the batches in flight go back (batched mode), shared by the router
/// (which records them) and the join.
pub(crate) type Pending = Arc<Mutex<Table>>;

#[derive(Default)]
pub(crate) struct Table {
    /// The router's epoch: boundaries it has passed on.
    epoch: u64,
    batches: HashMap<u64, Reassembly>,
}

/// One batch in flight: its epoch, length, the positions of its elements in each branch, and
/// how many sub-batches are still out.
pub(crate) struct Reassembly {
    epoch: u64,
    len: usize,
    positions: Vec<Vec<usize>>,
    missing: usize,
    /// A branch returned a sub-batch of the wrong length: the batch is dropped once the rest
    /// is back.
    broken: bool,
    /// Sub-batches back at the join, each holding a token of the batch's group (ledger on).
    held: u32,
    /// The tag the whole batch goes out with.
    out: Tag,
}

/// What a router lane does with one item: which branch gets what.
pub(crate) enum Split<T> {
    /// Per item: the item to branch `usize`.
    One(usize, T),
    /// Batched: a sub-batch for each branch that has elements, under a batch number.
    Many(Vec<(usize, T)>, Tag),
    /// An empty batch: nothing to route, nothing to emit.
    Nothing,
}

/// Splits one input (with its tag); an `Err` fails the item (a panicking router, a branch
/// out of range).
pub(crate) type Splitter<T> = Box<dyn FnMut(T, Tag) -> Result<Split<T>, String> + Send + Sync>;

pub(crate) struct RouterLane<T> {
    /// First, so that it drops first (see `Lane::_guard`).
    pub(crate) _guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) input: Rx<T>,
    pub(crate) branches: Vec<Tx<T>>,
    pub(crate) split: Splitter<T>,
    /// Told of each epoch boundary before it goes to the branches (batched mode).
    pub(crate) on_epoch: Option<Pending>,
}

impl<T: Send + 'static> RouterLane<T> {
    pub(crate) async fn run(mut self) {
        let mut turns = LaneTurns::default();
        loop {
            if self.ctx.should_stop() {
                break;
            }
            match self.input.recv().await {
                Ok(Msg::Item(item, tag)) => {
                    if !self.route(item, tag).await {
                        break;
                    }
                }
                Ok(Msg::EpochEnd) => {
                    if let Some(pending) = &self.on_epoch {
                        lock(pending).epoch += 1;
                    }
                    let mut sent = true;
                    for branch in &self.branches {
                        sent &= branch.send(Msg::EpochEnd).await.is_ok();
                    }
                    if !sent {
                        break;
                    }
                }
                Err(_) => break,
            }
            turns.handled_one().await;
        }
        // A branch that ended (its budget tripped) or a stop ends the route: nothing reads
        // the input any more, and dropping the branches' senders ends the branches.
        self.input.close();
    }

    /// Routes one item. False to end the lane (a branch is gone, or the budget tripped).
    async fn route(&mut self, item: T, tag: Tag) -> bool {
        let started = self.ctx.task_started();
        let split = &mut self.split;
        let result = catch_unwind(AssertUnwindSafe(|| split(item, tag))).unwrap_or_else(|panic| {
            Err(ItemError::panic(&self.ctx.name, panic.as_ref()).to_string())
        });
        let ticks = StageCtx::elapsed(started);
        match result {
            Ok(split) => {
                self.ctx.task_ended(0, ticks, TaskOutcome::Succeeded);
                let sent = match split {
                    Split::One(branch, item) => self.send(branch, item, tag).await,
                    Split::Many(parts, batch) => {
                        let mut sent = true;
                        for (branch, part) in parts {
                            sent = sent && self.send(branch, part, batch).await;
                        }
                        sent
                    }
                    Split::Nothing => {
                        self.ctx.resolve(tag, Outcome::Filtered);
                        true
                    }
                };
                sent && self.ctx.on_success()
            }
            Err(message) => {
                self.ctx.task_ended(0, ticks, TaskOutcome::Failed);
                self.ctx.resolve(tag, Outcome::Failed);
                self.ctx
                    .on_failure(ItemError::from_error(&self.ctx.name, message.into()))
            }
        }
    }

    async fn send(&self, branch: usize, item: T, tag: Tag) -> bool {
        let ok = self.branches[branch]
            .send(Msg::Item(item, tag))
            .await
            .is_ok();
        if ok {
            self.ctx.counters.lane(0).record_outputs(1);
        }
        ok
    }
}

/// The splitter of a per-item route.
pub(crate) fn per_item<T: Send + 'static>(router: Router<T>, branches: Vec<String>) -> Splitter<T> {
    Box::new(move |item, _| {
        let branch = router(&item);
        if branch < branches.len() {
            Ok(Split::One(branch, item))
        } else {
            Err(out_of_range(branch, &branches))
        }
    })
}

fn out_of_range(branch: usize, branches: &[String]) -> String {
    format!(
        "the router returned branch {branch}, but the route has {} branches ({}): return an \
         index below {}",
        branches.len(),
        branches.join(", "),
        branches.len()
    )
}

/// The splitter of a batched route: the elements of each batch by branch, with where they go
/// back recorded in `pending` under the key of the sub-batches' tag.
///
/// With a ledger, the sub-batches carry a group standing for the batch's tag, one token
/// each: a branch that fails or drops one gives its share back, and the join's output
/// carries the group on. Without, they carry the batch's number.
pub(crate) fn batched<E: Send + 'static>(
    router: Router<E>,
    branches: Vec<String>,
    pending: Pending,
    ledger: Option<Arc<Ledger>>,
) -> Splitter<Vec<E>> {
    let mut next = 0u64;
    Box::new(move |batch: Vec<E>, tag: Tag| {
        let n = branches.len();
        let len = batch.len();
        let mut parts: Vec<Vec<E>> = (0..n).map(|_| Vec::new()).collect();
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (pos, element) in batch.into_iter().enumerate() {
            let branch = router(&element);
            if branch >= n {
                return Err(out_of_range(branch, &branches));
            }
            parts[branch].push(element);
            positions[branch].push(pos);
        }
        if len == 0 {
            return Ok(Split::Nothing);
        }
        let missing = parts.iter().filter(|p| !p.is_empty()).count();
        let (key, out) = match &ledger {
            Some(ledger) => {
                let group = ledger.group(vec![tag]);
                for _ in 1..missing {
                    ledger.add_token(group);
                }
                (group, group)
            }
            None => {
                next += 1;
                (Tag::pos(next - 1), Tag::NONE)
            }
        };
        let mut table = lock(&pending);
        let epoch = table.epoch;
        table.batches.insert(
            key.raw(),
            Reassembly {
                epoch,
                len,
                positions,
                missing,
                broken: false,
                held: 0,
                out,
            },
        );
        drop(table);
        let parts = parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .collect();
        Ok(Split::Many(parts, key))
    })
}

/// The join of a batched route: every branch's sub-batches back into their batches.
pub(crate) struct BatchJoinLane<V> {
    /// First, so that it drops first (see `Lane::_guard`).
    pub(crate) _guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) inputs: Vec<Rx<Vec<V>>>,
    pub(crate) output: Tx<Vec<V>>,
    pub(crate) pending: Pending,
    pub(crate) names: Vec<String>,
    /// What came back of each batch in flight, per branch.
    pub(crate) back: HashMap<u64, Vec<Option<Vec<V>>>>,
}

impl<V: Send + 'static> BatchJoinLane<V> {
    pub(crate) async fn run(mut self) {
        let n = self.inputs.len();
        let mut open = vec![true; n];
        let mut at_boundary = vec![false; n];
        let mut readable = vec![true; n];
        let mut epoch = 0u64;
        let mut start = 0;
        let mut turns = LaneTurns::default();
        loop {
            if self.ctx.should_stop() {
                break;
            }
            for i in 0..n {
                readable[i] = open[i] && !at_boundary[i];
            }
            if !readable.contains(&true) {
                if !at_boundary.contains(&true) {
                    break;
                }
                // Every branch passed the boundary: a batch of this epoch still pending lost
                // a sub-batch.
                self.drop_pending(Some(epoch));
                epoch += 1;
                at_boundary.iter_mut().for_each(|b| *b = false);
                if self.output.send(Msg::EpochEnd).await.is_err() {
                    break;
                }
                continue;
            }
            let (i, msg) = next_available(&mut self.inputs, &readable, start).await;
            start = (i + 1) % n;
            match msg {
                Ok(Msg::Item(part, tag)) => {
                    if !self.put_back(i, part, tag).await {
                        break;
                    }
                }
                Ok(Msg::EpochEnd) => at_boundary[i] = true,
                Err(_) => open[i] = false,
            }
            turns.handled_one().await;
        }
        self.drop_pending(None);
        for input in &self.inputs {
            input.close();
        }
    }

    /// Puts branch `branch`'s sub-batch of batch `tag` back; emits the batch once it is
    /// whole. False to end the lane.
    async fn put_back(&mut self, branch: usize, part: Vec<V>, tag: Tag) -> bool {
        let started = self.ctx.task_started();
        let number = tag.raw();
        let n = self.inputs.len();
        let whole = {
            let mut table = lock(&self.pending);
            let Some(entry) = table.batches.get_mut(&number) else {
                drop(table);
                self.give_back(tag, 1, Outcome::Failed);
                return self.fail(format!(
                    "branch `{}` returned a sub-batch that belongs to no batch in flight: in \
                     batched mode a branch must return one sub-batch per sub-batch it is given",
                    self.names[branch]
                ));
            };
            entry.held += 1;
            let expected = entry.positions[branch].len();
            let back = self
                .back
                .entry(number)
                .or_insert_with(|| (0..n).map(|_| None).collect());
            let wrong = part.len() != expected || back[branch].is_some();
            back[branch] = Some(part);
            entry.missing = entry.missing.saturating_sub(1);
            let was_broken = entry.broken;
            entry.broken |= wrong;
            let done = entry.missing == 0;
            let entry = if done {
                table.batches.remove(&number)
            } else {
                None
            };
            drop(table);
            if let Some(entry) = entry.as_ref().filter(|e| e.broken) {
                // Dropped: every token its sub-batches hold goes back as failed.
                self.back.remove(&number);
                self.give_back(tag, entry.held, Outcome::Failed);
            }
            if wrong && !was_broken {
                return self.fail(format!(
                    "branch `{}` returned a sub-batch of another length than the {expected} \
                     elements it was given: in batched mode a branch must return one element \
                     per element (the batch is dropped)",
                    self.names[branch]
                ));
            }
            match entry {
                Some(entry) if entry.broken => return true,
                entry => entry,
            }
        };
        let Some(entry) = whole else {
            self.ctx
                .task_ended(0, StageCtx::elapsed(started), TaskOutcome::Succeeded);
            return true;
        };
        let parts = self.back.remove(&number).unwrap_or_default();
        let mut slots: Vec<Option<V>> = (0..entry.len).map(|_| None).collect();
        for (positions, part) in entry.positions.iter().zip(parts) {
            for (&pos, value) in positions.iter().zip(part.into_iter().flatten()) {
                slots[pos] = Some(value);
            }
        }
        let batch: Vec<V> = slots.into_iter().flatten().collect();
        self.ctx
            .task_ended(0, StageCtx::elapsed(started), TaskOutcome::Succeeded);
        // The batch carries one of its sub-batches' tokens on; the others go back.
        self.give_back(tag, entry.held - 1, Outcome::Passed);
        if self.output.send(Msg::Item(batch, entry.out)).await.is_err() {
            return false;
        }
        self.ctx.counters.lane(0).record_outputs(1);
        true
    }

    /// Gives `n` tokens of `tag` back to the ledger, if there is one.
    fn give_back(&self, tag: Tag, n: u32, outcome: Outcome) {
        if let Some(ledger) = &self.ctx.ledger {
            for _ in 0..n {
                ledger.resolve(tag, outcome);
            }
        }
    }

    /// Counts a failed sub-batch (a task of the join) against the budget.
    fn fail(&self, message: String) -> bool {
        self.ctx.task_ended(0, None, TaskOutcome::Failed);
        self.ctx
            .on_failure(ItemError::from_error(&self.ctx.name, message.into()))
    }

    /// Drops the batches of epoch `epoch` and before (all with `None`) still pending; their
    /// sub-batches' tokens go back unless the pipeline is stopping (then they are in flight
    /// for a resume state).
    fn drop_pending(&mut self, epoch: Option<u64>) {
        let mut table = lock(&self.pending);
        let lost: Vec<u64> = table
            .batches
            .iter()
            .filter(|(_, entry)| epoch.is_none_or(|e| entry.epoch <= e))
            .map(|(&key, _)| key)
            .collect();
        let lost: Vec<Reassembly> = lost
            .iter()
            .filter_map(|key| table.batches.remove(key))
            .collect();
        drop(table);
        let stopping = self.ctx.should_stop();
        for entry in &lost {
            if !stopping {
                self.give_back(entry.out, entry.held, Outcome::Filtered);
            }
        }
        let pending = lock(&self.pending);
        self.back.retain(|key, _| pending.batches.contains_key(key));
        drop(pending);
        if !lost.is_empty() {
            tracing::warn!(
                stage = %self.ctx.name,
                "{} batches lost a sub-batch in a branch (it failed or was dropped) and \
                 are dropped",
                lost.len()
            );
        }
    }
}
