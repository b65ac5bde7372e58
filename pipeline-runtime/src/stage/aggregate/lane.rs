//! The `aggregate` stage: items into batches, by a built-in [`Batch`] or your own
//! [`Aggregator`]. One lane, so batches are formed in arrival order.
//!
//! With resume tracking on, the lane keeps the tags of the items it has taken since its last
//! output; an output covers them (a batch, the positions of its items) and travels with a
//! group tag standing for them. A partial batch dropped by `drop_last` resolves its items.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::failure::BoxError;
use crate::failure::ItemError;
use crate::failure::StageFailureKind;
use crate::hook::TaskOutcome;
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::{Accounts, BatchAccount, Cursor, Outcome};
use crate::resume::Tag;
use crate::stage::pipe::lane::item_error;
use crate::stage::{LaneGuard, LaneTurns, StageCtx};

/// Turns a stream of items into a stream of aggregates (batches, windows, packed buffers).
///
/// `accumulate` is called for each item and may return a finished aggregate; `flush` is
/// called at the end of the stream (unless `drop_last`) and at each epoch boundary, and
/// returns what is left. For exact resume, an aggregate is taken to cover the items
/// accumulated since the previous one (including the one just added). An error from either ends the pipeline with an error naming the
/// stage: an aggregator holds state that a skipped item would corrupt.
pub trait Aggregator<T>: Send + 'static {
    /// The aggregate produced.
    type Output: Send + 'static;

    /// Adds one item; returns an aggregate when one is complete.
    fn accumulate(&mut self, item: T) -> Result<Option<Self::Output>, BoxError>;

    /// Returns whatever is held (a partial batch), or `None` if nothing is.
    fn flush(&mut self) -> Result<Option<Self::Output>, BoxError>;
}

/// The built-in aggregator: batches of `size` items (`aggregate(n)`).
#[derive(Debug)]
pub(crate) struct Batch<T> {
    size: usize,
    items: Vec<T>,
}

impl<T> Batch<T> {
    /// Batches of `size` items; `size` must be at least 1 (checked by the builder).
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            items: Vec::with_capacity(size),
        }
    }
}

impl<T: Send + 'static> Aggregator<T> for Batch<T> {
    type Output = Vec<T>;

    fn accumulate(&mut self, item: T) -> Result<Option<Vec<T>>, BoxError> {
        self.items.push(item);
        if self.items.len() >= self.size {
            let full = std::mem::replace(&mut self.items, Vec::with_capacity(self.size));
            Ok(Some(full))
        } else {
            Ok(None)
        }
    }

    fn flush(&mut self) -> Result<Option<Vec<T>>, BoxError> {
        if self.items.is_empty() {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.items)))
        }
    }
}

pub(crate) struct AggregateLane<A, T, O> {
    /// First, so that it drops first (see `Lane::_guard`).
    pub(crate) _guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) input: Rx<T>,
    pub(crate) output: Tx<O>,
    pub(crate) aggregator: A,
    pub(crate) drop_last: bool,
    /// The items taken since the last output, as the ledger needs them.
    pub(crate) members: Members,
}

/// What the items taken since the last output stand for in the ledger: their tags (the
/// token ledger), their count and checksum (the accounts alone), or nothing.
pub(crate) enum Members {
    Untracked,
    Tags(Vec<Tag>),
    Counted {
        accounts: Arc<Accounts>,
        batch: BatchAccount,
        cursor: Cursor,
    },
}

impl Members {
    /// The kind `ctx`'s ledger needs.
    pub(crate) fn for_stage(ctx: &StageCtx) -> Self {
        match (&ctx.ledger, &ctx.accounts) {
            (Some(_), _) => Members::Tags(Vec::new()),
            (None, Some(accounts)) => Members::Counted {
                accounts: accounts.clone(),
                batch: BatchAccount::default(),
                cursor: Cursor::new(accounts),
            },
            (None, None) => Members::Untracked,
        }
    }

    #[inline]
    fn push(&mut self, tag: Tag) {
        match self {
            Members::Untracked => {}
            Members::Tags(tags) => tags.push(tag),
            Members::Counted {
                accounts,
                batch,
                cursor,
            } => batch.add(cursor, accounts, tag.raw()),
        }
    }
}

impl<A, T, O> AggregateLane<A, T, O>
where
    A: Aggregator<T, Output = O>,
    T: Send + 'static,
    O: Send + 'static,
{
    pub(crate) async fn run(mut self) {
        let mut turns = LaneTurns::default();
        loop {
            if self.ctx.should_stop() {
                break;
            }
            match self.input.recv().await {
                Ok(Msg::Item(item, tag)) => {
                    self.members.push(tag);
                    let started = self.ctx.task_started();
                    let span = self.ctx.task_span();
                    let result = span.in_scope(|| {
                        catch_unwind(AssertUnwindSafe(|| self.aggregator.accumulate(item)))
                    });
                    let done = self.finish_call(result, started, true);
                    if !self.emit(done).await {
                        break;
                    }
                }
                Ok(Msg::EpochEnd) => {
                    // No batch spans two epochs: flush at every boundary.
                    if !self.flush(self.drop_last).await
                        || self.output.send(Msg::EpochEnd).await.is_err()
                    {
                        break;
                    }
                }
                Err(_) => {
                    if !self.ctx.run.stop_requested() {
                        self.flush(self.drop_last).await;
                    }
                    break;
                }
            }
            turns.handled_one().await;
        }
        if self.ctx.should_stop() {
            self.input.close();
        }
    }

    async fn flush(&mut self, discard: bool) -> bool {
        let started = self.ctx.stats.then(crate::clock::now);
        let result = catch_unwind(AssertUnwindSafe(|| self.aggregator.flush()));
        let done = self.finish_call(result, started, false);
        match done {
            Step::Emit(_) if discard => {
                self.drop_members();
                true
            }
            Step::Nothing => {
                self.drop_members(); // an aggregator that kept nothing of them
                true
            }
            other => self.emit(other).await,
        }
    }

    /// The items taken since the last output are gone without an output: resolved.
    fn drop_members(&mut self) {
        match (&mut self.members, &self.ctx.ledger) {
            (Members::Tags(tags), Some(ledger)) => {
                ledger.resolve_all(tags, Outcome::Filtered);
                tags.clear();
            }
            (
                Members::Counted {
                    accounts, batch, ..
                },
                _,
            ) => accounts.batch_filtered(std::mem::take(batch)),
            _ => {}
        }
    }

    /// The tag of an output: a group of the items taken since the last one.
    fn covered(&mut self) -> Tag {
        match (&mut self.members, &self.ctx.ledger) {
            (Members::Tags(tags), Some(ledger)) => ledger.group(std::mem::take(tags)),
            (
                Members::Counted {
                    accounts, batch, ..
                },
                _,
            ) => accounts.batch_sent(std::mem::take(batch)),
            _ => Tag::NONE,
        }
    }

    fn finish_call(
        &self,
        result: std::thread::Result<Result<Option<O>, BoxError>>,
        started: Option<u64>,
        is_task: bool,
    ) -> Step<O> {
        let step = match result {
            Ok(Ok(Some(out))) => Step::Emit(out),
            Ok(Ok(None)) => Step::Nothing,
            Ok(Err(error)) => Step::Failed(error),
            Err(panic) => Step::Failed(Box::new(ItemError::panic(&self.ctx.name, panic.as_ref()))),
        };
        let ticks = StageCtx::elapsed(started);
        if is_task {
            let failure = match &step {
                Step::Failed(e) => Some(e),
                _ => None,
            };
            let outcome = TaskOutcome::of(failure);
            self.ctx.task_ended(0, ticks, outcome);
        } else if let Some(t) = ticks {
            // A flush is not a task (no item came in), but its time is the stage's.
            self.ctx.counters.lane(0).record_extra_time(t);
        }
        step
    }

    async fn emit(&mut self, step: Step<O>) -> bool {
        match step {
            Step::Emit(out) => {
                let tag = self.covered();
                let ok = self
                    .output
                    .send_or_pause(Msg::Item(out, tag), || self.input.top_up())
                    .await
                    .is_ok();
                if ok {
                    self.ctx.counters.lane(0).record_outputs(1);
                }
                ok
            }
            Step::Nothing => true,
            Step::Failed(error) => {
                let error = item_error(&self.ctx, error);
                self.ctx.fail_stage(StageFailureKind::Aggregator(error));
                false
            }
        }
    }
}

enum Step<O> {
    Emit(O),
    Nothing,
    Failed(BoxError),
}
