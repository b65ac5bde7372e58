//! The `pipe` stage: a function applied to each item by `concurrency` lanes.
//!
//! Every function shape (plain, fallible, optional, one-to-many; sync or async) is turned
//! into a [`Body`] returning an [`Output`], so that one lane loop implements ordering,
//! epoch barriers, failure accounting and backpressure for all of them.
//!
//! Each output carries its input's tag (see `resume`). With a ledger, a lane gives an
//! input's token back when the input fails or is dropped, and a one-to-many lane takes one
//! token of its input per output and gives the input's own back at the end, so an input is
//! resolved once all its outputs are. With resume tracking on, each output of a one-to-many
//! input is tagged as output `k` of that input, so that outputs resolved before a stop are
//! skipped when the input is redone after a resume (see `resume::fanout`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use tracing::Instrument;

use crate::failure::BoxError;
use crate::failure::ItemError;
use crate::hook::TaskOutcome;
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::Outcome;
use crate::resume::Tag;
use crate::stage::{LaneGuard, LaneTurns, StageCtx};
use crate::stats::TaskSampler;

/// What one call of a stage function produced.
pub(crate) enum Output<U> {
    One(U),
    Skip,
    Fail(BoxError),
    Iter(Box<dyn Iterator<Item = Result<U, BoxError>> + Send>),
    Stream(BoxStream<'static, Result<U, BoxError>>),
}

pub(crate) type SyncFn<T, U> = Arc<dyn Fn(T) -> Output<U> + Send + Sync>;
pub(crate) type AsyncFn<T, U> = Arc<dyn Fn(T) -> BoxFuture<'static, Output<U>> + Send + Sync>;

/// A stage function, normalised.
pub(crate) enum Body<T, U> {
    Sync(SyncFn<T, U>),
    Async(AsyncFn<T, U>),
}

impl<T, U> Clone for Body<T, U> {
    fn clone(&self) -> Self {
        match self {
            Body::Sync(f) => Body::Sync(f.clone()),
            Body::Async(f) => Body::Async(f.clone()),
        }
    }
}

/// Output order of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Results are passed on as they complete (the default; fastest).
    #[default]
    Completion,
    /// Results keep the order of the stage's input; dropped and failed items leave no gap.
    Input,
}

/// The input side of a stage, shared by its lanes. When the stage keeps input order or
/// sees epoch boundaries (and has several lanes), a gate makes receiving and numbering an
/// item one step, and lets an epoch boundary wait for the items in flight before it is
/// passed on.
pub(crate) struct StageInput<T> {
    rx: Rx<T>,
    gate: Option<futures::lock::Mutex<Gate>>,
    in_flight: AtomicUsize,
    idle: AtomicWaker,
    /// Lanes waiting for room in the stage's output (see [`Tx::send_or_pause`]).
    paused: AtomicUsize,
}

/// One lane counted as paused on its output; uncounted on drop.
struct Paused<'a>(&'a AtomicUsize);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Gate {
    /// Completion signal of the most recently received item (input order only).
    last_turn: Option<oneshot::Receiver<()>>,
}

/// The right to emit, in input order: wait for `prev`, emit, then drop `done`.
struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl<T> StageInput<T> {
    pub(crate) fn new(rx: Rx<T>, gated: bool) -> Self {
        Self {
            rx,
            gate: gated.then(|| futures::lock::Mutex::new(Gate::default())),
            in_flight: AtomicUsize::new(0),
            idle: AtomicWaker::new(),
            paused: AtomicUsize::new(0),
        }
    }

    /// A lane waits to send; the last of the stage's `lanes` to do so lets the input fill.
    fn pause(&self, lanes: usize) -> Paused<'_> {
        if self.paused.fetch_add(1, Ordering::AcqRel) + 1 >= lanes {
            self.rx.top_up();
        }
        Paused(&self.paused)
    }

    fn finish_item(&self) {
        if self.gate.is_some() && self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.wake();
        }
    }

    async fn wait_idle(&self) {
        std::future::poll_fn(|cx| {
            self.idle.register(cx.waker());
            if self.in_flight.load(Ordering::Acquire) == 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

pub(crate) struct Lane<T, U> {
    /// First, so that it drops first: the stage ends before this lane's output closes.
    /// Dropped with the lane also when the lane's future is dropped unpolled (a stop).
    pub(crate) _guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) input: Arc<StageInput<T>>,
    pub(crate) output: Tx<U>,
    pub(crate) body: Body<T, U>,
    pub(crate) order: Order,
    /// This lane's slot among the stage's lanes (its statistics shard; see `LaneSet`).
    pub(crate) index: usize,
}

enum Next<T> {
    Item(T, Tag, Option<Turn>),
    Stop,
}

impl<T: Send + 'static, U: Send + 'static> Lane<T, U> {
    pub(crate) async fn run(self) {
        let mut turns = LaneTurns::default();
        let mut retired = false;
        let mut sampler = TaskSampler::new();
        loop {
            if self.ctx.should_stop() {
                break;
            }
            // Between items: a lane above the stage's target concurrency retires here,
            // holding nothing (an input-order turn is passed on with its item).
            if self.ctx.lanes.should_retire(self.index) {
                retired = true;
                break;
            }
            let (item, tag, turn) = match self.next().await {
                Next::Item(item, tag, turn) => (item, tag, turn),
                Next::Stop => break,
            };
            let keep_going = self.process(item, tag, turn, &mut sampler).await;
            self.input.finish_item();
            if !keep_going {
                break;
            }
            turns.handled_one().await;
        }
        self.ctx.sampled_lane_ended(self.index, &mut sampler);
        if !retired {
            self.ctx.lanes.lane_ended(self.index);
        }
        if self.ctx.should_stop() {
            // Cancel upstream: nothing will read this stage's input any more.
            self.input.rx.close();
        }
    }

    /// Receives the next item, forwarding any epoch boundary on the way.
    async fn next(&self) -> Next<T> {
        loop {
            let Some(gate) = &self.input.gate else {
                match self.input.rx.recv().await {
                    Ok(Msg::Item(item, tag)) => return Next::Item(item, tag, None),
                    Ok(Msg::EpochEnd) => {
                        if self.output.send(Msg::EpochEnd).await.is_err() {
                            return Next::Stop;
                        }
                        continue;
                    }
                    Err(_) => return Next::Stop,
                }
            };
            let mut gate = gate.lock().await;
            match self.input.rx.recv().await {
                Ok(Msg::Item(item, tag)) => {
                    self.input.in_flight.fetch_add(1, Ordering::AcqRel);
                    let turn = (self.order == Order::Input).then(|| {
                        let (done, next_turn) = oneshot::channel();
                        Turn {
                            prev: gate.last_turn.replace(next_turn),
                            _done: done,
                        }
                    });
                    return Next::Item(item, tag, turn);
                }
                Ok(Msg::EpochEnd) => {
                    // Holding the gate: no lane takes a next-epoch item until the boundary
                    // has gone out after every item of this epoch.
                    self.input.wait_idle().await;
                    if self.output.send(Msg::EpochEnd).await.is_err() {
                        return Next::Stop;
                    }
                }
                Err(_) => return Next::Stop,
            }
        }
    }

    /// Runs the function on one item and emits its outputs. Returns false to stop the lane.
    async fn process(
        &self,
        item: T,
        tag: Tag,
        mut turn: Option<Turn>,
        sampler: &mut TaskSampler,
    ) -> bool {
        let started = self.ctx.sampled_task_started(sampler);
        self.ctx.lanes.task_started(self.index);
        let span = self.ctx.task_span();
        let output = match &self.body {
            Body::Sync(f) => {
                let _entered = span.enter();
                catch_unwind(AssertUnwindSafe(|| f(item)))
                    .unwrap_or_else(|panic| Output::Fail(panic_error(&self.ctx, panic)))
            }
            Body::Async(f) => match span.in_scope(|| catch_unwind(AssertUnwindSafe(|| f(item)))) {
                Ok(fut) => AssertUnwindSafe(fut.instrument(span))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Output::Fail(panic_error(&self.ctx, panic))),
                Err(panic) => Output::Fail(panic_error(&self.ctx, panic)),
            },
        };
        let busy = StageCtx::elapsed(started);
        self.ctx.lanes.task_ended(self.index);
        let one_output = matches!(output, Output::One(_));
        let skipped = matches!(output, Output::Skip);
        if let Some(prev) = turn.as_mut().and_then(|t| t.prev.take()) {
            let _ = prev.await; // a cancelled predecessor also passes the turn on
        }
        let (sent, failure) = match output {
            Output::One(value) => (self.send(value, tag).await, None),
            Output::Skip => (true, None),
            Output::Fail(error) => (true, Some(error)),
            // One loop for both shapes: a panic in the iterator's `next` is caught like a
            // panic in a stream's poll.
            Output::Iter(iter) => {
                self.send_stream(futures::stream::iter(iter).boxed(), tag)
                    .await
            }
            Output::Stream(stream) => self.send_stream(stream, tag).await,
        };
        if !one_output && !self.ctx.run.stop_requested() {
            // Dropped, failed, or every output of a one-to-many input has taken its own token.
            // Not while stopping: a process stage drops what it had in flight then, and a
            // resumed pipeline must recompute it.
            let outcome = match (&failure, skipped) {
                (Some(_), _) => Outcome::Failed,
                (None, true) => Outcome::Filtered,
                (None, false) => Outcome::Passed,
            };
            self.ctx.resolve(tag, outcome);
        }
        drop(turn);
        let outcome = TaskOutcome::of(failure.as_ref());
        self.ctx
            .sampled_task_ended(self.index, busy, outcome, sampler);
        let within_budget = match failure {
            Some(error) => self.ctx.on_failure(item_error(&self.ctx, error)),
            None => self.ctx.on_success(),
        };
        sent && within_budget
    }

    async fn send(&self, value: U, tag: Tag) -> bool {
        let ok = self
            .output
            .send_or_pause(Msg::Item(value, tag), || {
                self.input.pause(self.ctx.lanes.active())
            })
            .await
            .is_ok();
        if ok {
            self.ctx.counters.lane(self.index).record_outputs(1);
        }
        ok
    }

    async fn send_stream(
        &self,
        mut stream: BoxStream<'static, Result<U, BoxError>>,
        tag: Tag,
    ) -> (bool, Option<BoxError>) {
        // Outputs tracked one by one: those resolved before a stop (of a resumed run).
        let done = self.ctx.ledger.as_ref().and_then(|l| l.fan_out(tag));
        let mut index = 0u64;
        loop {
            match AssertUnwindSafe(stream.next()).catch_unwind().await {
                Ok(Some(Ok(value))) => {
                    let k = index;
                    index += 1;
                    let out = match (&self.ctx.ledger, &done) {
                        (Some(_), Some(done)) if done.contains(k) => None,
                        (Some(ledger), Some(_)) => Some(ledger.output(tag, k)),
                        (Some(ledger), None) => {
                            ledger.add_token(tag);
                            Some(tag)
                        }
                        (None, _) => Some(tag),
                    };
                    if let Some(out) = out {
                        if !self.send(value, out).await {
                            return (false, None);
                        }
                    }
                }
                Ok(Some(Err(error))) => return (true, Some(error)),
                Ok(None) => return (true, None),
                Err(panic) => return (true, Some(panic_error(&self.ctx, panic))),
            }
            if self.ctx.should_stop() {
                return (false, None);
            }
        }
    }
}

/// The error of a failed item, attributed to the stage (panics already are).
pub(crate) fn item_error(ctx: &StageCtx, error: BoxError) -> ItemError {
    match error.downcast::<ItemError>() {
        Ok(item_error) => *item_error,
        Err(error) => ItemError::from_error(&ctx.name, error),
    }
}

/// A panic turned into the error of the item that caused it.
fn panic_error(ctx: &StageCtx, payload: Box<dyn std::any::Any + Send>) -> BoxError {
    Box::new(ItemError::panic(&ctx.name, payload.as_ref()))
}
