//! The typed builder: `PipelineBuilder::new().source(..)` → stages → `.sink(n)` → `.build()`.
//!
//! Each method wraps the previous stages' launch function, so the chain is statically typed
//! (a stage takes what the previous one produces) and nothing runs until the pipeline starts.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};

use crate::async_runtime::AsyncRuntime;
use crate::error::{BoxError, BudgetScope, BuildError};
use crate::executor::process_pool::CallError;
use crate::executor::{Executor, ProcessPool, ThreadPool};
use crate::failure::{FailureScope, MaxFailures};
use crate::hook::{HookFactories, StageInfo, TaskHook};
use crate::pipeline::{Pipeline, Settings};
use crate::queue::{bounded, Rx, Tx};
use crate::run_state::RunState;
use crate::stage::aggregate::{AggregateLane, Aggregator, Batch};
use crate::stage::pipe::{Body, Lane, Order, Output, StageInput};
use crate::stage::source::{run_iter_source, run_stream_source, Pass, SourceKind};
use crate::stage::{Observe, StageCtx};
use crate::stats::{QueueCounters, QueueEntry, StageKind};

/// Capacity of each queue between two stages unless set otherwise (items).
///
/// Larger than SPDL's 2: a hand-off between threads costs a wake-up when a queue runs empty
/// or full, and a deeper queue lets one wake-up cover many items. See the guide's chapter
/// on backpressure for the bound on items in flight that follows.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;

/// Capacity of the sink (output) queue unless set otherwise.
pub const DEFAULT_SINK_BUFFER: usize = 3;

/// What starting a pipeline needs, handed down the chain of launch functions.
pub(crate) struct Launch {
    pub(crate) run: Arc<RunState>,
    pub(crate) default_pool: ThreadPool,
    pub(crate) runtime: Option<AsyncRuntime>,
    pub(crate) pipeline_scope: Arc<FailureScope>,
    pub(crate) stages: Vec<Arc<StageCtx>>,
    pub(crate) queues: Vec<QueueEntry>,
    pub(crate) queue_capacity: usize,
    pub(crate) stats: bool,
    pub(crate) hooks: HookFactories,
}

impl Launch {
    /// Creates a stage's context (statistics, hooks) and records it in pipeline order.
    fn stage(
        &mut self,
        name: String,
        kind: StageKind,
        concurrency: usize,
        scope: Arc<FailureScope>,
    ) -> Arc<StageCtx> {
        let info = StageInfo {
            index: self.stages.len(),
            name,
            kind,
            concurrency,
        };
        let observe = Observe {
            stats: self.stats,
            hooks: self.hooks.hooks_for(&info),
        };
        let ctx = Arc::new(StageCtx::new(info, observe, scope, self.run.clone()));
        self.stages.push(ctx.clone());
        ctx
    }

    /// Creates the queue after stage `after`, closed on stop, counted when stats are on.
    fn queue<T: Send + 'static>(&mut self, after: &str, capacity: usize) -> (Tx<T>, Rx<T>) {
        let counters = self.stats.then(|| Arc::new(QueueCounters::new()));
        let (tx, rx) = bounded(capacity, counters.clone());
        if let Some(counters) = counters {
            let weak = tx.downgrade();
            self.queues.push(QueueEntry {
                after: after.to_owned(),
                capacity,
                counters,
                len: Box::new(move || weak.upgrade().map(|tx| tx.len())),
            });
        }
        self.run.register_queue(&tx);
        (tx, rx)
    }

    fn runtime(&mut self) -> Result<&tokio::runtime::Handle, BuildError> {
        if self.runtime.is_none() {
            self.runtime = Some(AsyncRuntime::start()?);
        }
        Ok(self.runtime.as_ref().expect("just started").handle())
    }

    fn scope(&self, own: Option<MaxFailures>) -> Arc<FailureScope> {
        match own {
            Some(budget) => Arc::new(FailureScope::new(budget, BudgetScope::Stage)),
            None => self.pipeline_scope.clone(),
        }
    }
}

/// Starts the stages up to here; takes the capacity of the queue the caller reads from.
pub(crate) type LaunchFn<T> =
    Box<dyn FnOnce(&mut Launch, usize) -> Result<Rx<T>, BuildError> + Send>;

/// Options of one `pipe` stage.
#[derive(Clone, Default)]
pub struct StageOptions {
    concurrency: Option<usize>,
    name: Option<String>,
    order: Order,
    max_failures: Option<MaxFailures>,
    executor: Option<Executor>,
    buffer: Option<usize>,
}

impl fmt::Debug for StageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageOptions")
            .field("concurrency", &self.concurrency)
            .field("name", &self.name)
            .field("order", &self.order)
            .field("max_failures", &self.max_failures)
            .field("executor", &self.executor)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl StageOptions {
    /// Defaults: concurrency 1, completion order, the pipeline's budget and default pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items in flight at once (at least 1). For a synchronous stage the executor's thread
    /// count also caps how many calls truly run in parallel.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// The stage's name in logs, errors and stats.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Output order; [`Order::Input`] keeps source order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// A failure budget for this stage alone, instead of the pipeline-wide one.
    pub fn max_failures(mut self, budget: MaxFailures) -> Self {
        self.max_failures = Some(budget);
        self
    }

    /// Where the (synchronous) stage runs. Async stages reject this.
    pub fn executor(mut self, executor: impl Into<Executor>) -> Self {
        self.executor = Some(executor.into());
        self
    }

    /// Capacity of the queue in front of this stage (default: the pipeline's
    /// `queue_capacity`). Lower it for large items.
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = Some(capacity);
        self
    }

    /// Sets the name unless one was given.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn default_name(mut self, name: impl Into<String>) -> Self {
        self.name.get_or_insert_with(|| name.into());
        self
    }
}

/// Options of an `aggregate` stage.
#[derive(Debug, Clone, Default)]
pub struct AggregateOptions {
    drop_last: bool,
    name: Option<String>,
    buffer: Option<usize>,
}

impl AggregateOptions {
    /// Defaults: the last partial batch is kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop the partial batch at the end of the stream instead of emitting it.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The stage's name in logs, errors and stats.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Capacity of the queue in front of this stage.
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = Some(capacity);
        self
    }
}

/// Starts a pipeline definition; the first call must name the source.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineBuilder {
    _private: (),
}

impl PipelineBuilder {
    /// A new pipeline definition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items from an iterator, pulled on a dedicated thread (one pass).
    pub fn source<I>(self, items: I) -> StageBuilder<I::Item>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
    {
        let pass: Pass<I::Item> = Box::new(items.into_iter().map(Ok));
        StageBuilder::from_source(SourceKind::Once(pass), "source")
    }

    /// Items from an iterator of `Result`s: an `Err` ends the pipeline with a source error,
    /// after the items before it are delivered.
    pub fn try_source<I, T, E>(self, items: I) -> StageBuilder<T>
    where
        I: IntoIterator<Item = Result<T, E>>,
        I::IntoIter: Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        let pass: Pass<T> = Box::new(items.into_iter().map(|r| r.map_err(Into::into)));
        StageBuilder::from_source(SourceKind::Once(pass), "source")
    }

    /// Continuous mode: `items` is iterated again for every epoch, forever, and the consumer
    /// sees the epoch boundaries (see [`Pipeline::epoch`]).
    pub fn continuous_source<I>(self, items: I) -> StageBuilder<I::Item>
    where
        I: IntoIterator + Clone + Send + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
    {
        let make_pass = move || -> Pass<I::Item> { Box::new(items.clone().into_iter().map(Ok)) };
        StageBuilder::from_source(SourceKind::Continuous(Box::new(make_pass)), "source")
    }

    /// Items from an async `Stream`, polled on the pipeline's async runtime.
    pub fn source_stream<S>(self, stream: S) -> StageBuilder<S::Item>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
    {
        StageBuilder::from_source(SourceKind::Stream(stream.map(Ok).boxed()), "source")
    }
}

/// A pipeline under construction whose items are `T` at this point.
pub struct StageBuilder<T> {
    launch: LaunchFn<T>,
    errors: Vec<BuildError>,
    stage_count: usize,
    /// The source is continuous, so epoch boundaries travel through the stages.
    continuous: bool,
}

impl<T> fmt::Debug for StageBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageBuilder")
            .field("stages", &self.stage_count)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

enum Shape {
    Single,
    Many,
    /// One output per input, computed in a worker process.
    Process,
}

impl<T: Send + 'static> StageBuilder<T> {
    fn from_source(kind: SourceKind<T>, name: &'static str) -> Self {
        let continuous = matches!(kind, SourceKind::Continuous(_));
        let launch: LaunchFn<T> = Box::new(move |l: &mut Launch, out_cap| {
            let scope = l.pipeline_scope.clone();
            let ctx = l.stage(name.to_owned(), StageKind::Source, 1, scope);
            let (tx, rx) = l.queue(name, out_cap);
            ctx.lanes_starting(1);
            let lane = ctx.lane_guard();
            match kind {
                SourceKind::Stream(stream) => {
                    l.runtime()?.spawn(run_stream_source(lane, ctx, stream, tx));
                }
                kind => {
                    let thread = std::thread::Builder::new()
                        .name("pipeline-source".to_owned())
                        .spawn(move || {
                            run_iter_source(lane, ctx, kind, tx);
                            // Lanes this thread's last sends cancelled (see `executor::task`).
                            crate::executor::drop_deferred();
                        })
                        .map_err(|e| BuildError::new(format!("cannot start source thread: {e}")))?;
                    l.run.register_thread(thread);
                }
            }
            Ok(rx)
        });
        Self {
            launch,
            errors: Vec::new(),
            stage_count: 1,
            continuous,
        }
    }

    /// Records a definition error, reported by `build()`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn push_error(&mut self, error: BuildError) {
        self.errors.push(error);
    }

    /// The given name, else the function's name, else `{kind}#{index}`.
    fn stage_name(&self, given: Option<String>, fn_name: Option<&str>, kind: &str) -> String {
        given
            .or_else(|| fn_name.map(str::to_owned))
            .unwrap_or_else(|| format!("{kind}#{}", self.stage_count))
    }

    fn add_pipe<U: Send + 'static>(
        self,
        body: Body<T, U>,
        shape: Shape,
        opts: StageOptions,
        fn_name: Option<&str>,
        kind: StageKind,
    ) -> StageBuilder<U> {
        self.add_pipe_with_hook(body, shape, opts, fn_name, kind, None)
    }

    /// [`add_pipe`](Self::add_pipe), with a hook run when the pipeline stops.
    fn add_pipe_with_hook<U: Send + 'static>(
        mut self,
        body: Body<T, U>,
        shape: Shape,
        opts: StageOptions,
        fn_name: Option<&str>,
        kind: StageKind,
        on_stop: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> StageBuilder<U> {
        let name = self.stage_name(opts.name.clone(), fn_name, "pipe");
        let concurrency = opts.concurrency.unwrap_or(1);
        if concurrency == 0 {
            self.errors.push(BuildError::new(format!(
                "stage `{name}`: concurrency must be at least 1"
            )));
        }
        if opts.buffer == Some(0) {
            self.errors.push(BuildError::new(format!(
                "stage `{name}`: buffer must be at least 1"
            )));
        }
        if let Some(budget) = &opts.max_failures {
            if let Err(e) = budget.validate(&format!("stage `{name}`")) {
                self.errors.push(e);
            }
        }
        let is_process = matches!(shape, Shape::Process);
        let on_processes = matches!(opts.executor, Some(Executor::Processes(_)));
        if is_process && !on_processes {
            self.errors.push(BuildError::new(format!(
                "stage `{name}` runs in worker processes: give it a `ProcessPool` as its \
                 executor (`StageOptions::executor(&pool)`, or `executor = pool` in the macro)"
            )));
        }
        if !is_process && on_processes {
            self.errors.push(BuildError::new(format!(
                "stage `{name}` is given a `ProcessPool`, which runs process stages only: use \
                 `process_pipe` with a function registered by `process_fn!` (`pipe(process f, \
                 ..)` in the macro)"
            )));
        }
        // A process stage's body awaits its worker, but its lanes run on the executor.
        let is_async = matches!(body, Body::Async(_)) && !is_process;
        if is_async && opts.executor.is_some() {
            self.errors.push(BuildError::new(format!(
                "stage `{name}` is async: it runs on the pipeline's async runtime, and \
                 `executor` applies to synchronous stages only"
            )));
        }
        if matches!(shape, Shape::Many) && opts.order == Order::Input && concurrency > 1 {
            self.errors.push(BuildError::new(format!(
                "stage `{name}` yields many items per input: `Order::Input` is not supported \
                 for it with concurrency > 1 (use `Order::Completion` or concurrency 1)"
            )));
        }
        let concurrency = concurrency.max(1);
        let continuous = self.continuous;
        let prev = self.launch;
        let launch: LaunchFn<U> = Box::new(move |l: &mut Launch, out_cap| {
            let rx = prev(l, opts.buffer.unwrap_or(l.queue_capacity))?;
            let scope = l.scope(opts.max_failures);
            let ctx = l.stage(name, kind, concurrency, scope);
            let (tx, out_rx) = l.queue(&ctx.name, out_cap);
            if let Some(hook) = on_stop {
                l.run.on_stop(hook);
            }
            // Lanes share a gate only when something must be serialised at their input:
            // numbering items for input order, or an epoch boundary waiting for the items
            // in flight. Otherwise they take items straight from the queue.
            let gated = concurrency > 1 && (opts.order == Order::Input || continuous);
            let input = Arc::new(StageInput::new(rx, gated));
            let executor = opts.executor.unwrap_or_default();
            ctx.lanes_starting(concurrency);
            for index in 0..concurrency {
                let lane = Lane {
                    _guard: ctx.lane_guard(),
                    ctx: ctx.clone(),
                    input: input.clone(),
                    output: tx.clone(),
                    body: body.clone(),
                    order: opts.order,
                    index,
                };
                if is_async {
                    l.runtime()?.spawn(lane.run());
                } else {
                    executor.spawn_lane(&l.default_pool, Box::pin(lane.run()));
                }
            }
            Ok(out_rx)
        });
        StageBuilder {
            launch,
            errors: self.errors,
            stage_count: self.stage_count + 1,
            continuous: self.continuous,
        }
    }

    /// A synchronous stage: `f` maps each item to one output. Runs on the stage's executor.
    pub fn pipe<U, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Sync(Arc::new(move |t| Output::One(f(t)))),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A fallible synchronous stage: `Err` fails the item (counted against the budget).
    pub fn try_pipe<U, E, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Sync(Arc::new(move |t| match f(t) {
                Ok(u) => Output::One(u),
                Err(e) => Output::Fail(e.into()),
            })),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A synchronous stage that may drop items: `None` drops the item (not a failure).
    pub fn pipe_opt<U, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        F: Fn(T) -> Option<U> + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Sync(Arc::new(move |t| match f(t) {
                Some(u) => Output::One(u),
                None => Output::Skip,
            })),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A one-to-many synchronous stage: every item of the returned iterator is passed on as
    /// soon as it is produced (not collected first).
    pub fn pipe_iter<I, F>(self, f: F, opts: StageOptions) -> StageBuilder<I::Item>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Sync(Arc::new(move |t| {
                Output::Iter(Box::new(f(t).into_iter().map(Ok)))
            })),
            Shape::Many,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A one-to-many synchronous stage whose iterator may fail midway: outputs before the
    /// `Err` are kept, the rest of that input is lost, and the item counts as failed.
    pub fn try_pipe_iter<U, E, I, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        I: IntoIterator<Item = Result<U, E>>,
        I::IntoIter: Send + 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Sync(Arc::new(move |t| {
                Output::Iter(Box::new(f(t).into_iter().map(|r| r.map_err(Into::into))))
            })),
            Shape::Many,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A stage run in worker processes: `f` is a named `fn`, registered with
    /// [`process_fn!`](crate::process_fn), and `opts` names a [`ProcessPool`] as the
    /// executor. Each input is encoded with serde, sent to a worker, and its output sent
    /// back; a panic in `f` fails that item, and so does a worker that dies while running
    /// it (the pool replaces the worker).
    ///
    /// [`ProcessPool`]: crate::ProcessPool
    pub fn process_pipe<U, F>(mut self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        T: serde::Serialize,
        U: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let _ = f; // only its type crosses: the worker finds the function by name
        let key = std::any::type_name::<F>();
        let name = self.stage_name(opts.name.clone(), fn_name::<F>().as_deref(), "pipe");
        if key.starts_with("fn(") {
            self.errors.push(BuildError::new(format!(
                "stage `{name}`: a function pointer (`{key}`) cannot be found by name in a \
                 worker process; pass the function itself (`process_pipe(decode, ..)`)"
            )));
        } else if key.contains("{{closure}}") {
            self.errors.push(BuildError::new(format!(
                "stage `{name}`: a closure cannot run in a worker process; write the stage \
                 as a named `fn` and register it with `process_fn!`"
            )));
        } else if !crate::executor::process_fn::is_registered(key) {
            self.errors.push(BuildError::new(format!(
                "stage `{name}`: `{key}` is not registered for worker processes; add \
                 `pipeline_runtime::process_fn!({});` next to it",
                key.rsplit("::").next().unwrap_or(key)
            )));
        }
        // The stage's handle on the pool, released when the pipeline stops: a pool that
        // only this pipeline holds then ends its workers, even one stuck in a call.
        let pool = Arc::new(Mutex::new(match &opts.executor {
            Some(Executor::Processes(pool)) => Some(pool.clone()),
            _ => None,
        }));
        let release = {
            let pool = pool.clone();
            Box::new(move || drop(lock(&pool).take())) as Box<dyn Fn() + Send + Sync>
        };
        let stage = name.clone();
        let body: Body<T, U> = Body::Sync(Arc::new(move |item: T| {
            let slot = match lock(&pool).as_ref().map(ProcessPool::caller_slot) {
                None => return Output::Skip, // stopping
                Some(Ok(slot)) => slot,
                Some(Err(e)) => return Output::Fail(e.into()),
            };
            let result = match crate::process::encode(&item) {
                Ok(input) => {
                    drop(item);
                    slot.call(key, &input)
                }
                Err(e) => return Output::Fail(e.into()),
            };
            if lock(&pool).is_none() {
                return Output::Skip; // stopped while in flight: not a failure
            }
            match result {
                Ok(bytes) => match crate::process::decode::<U>(&bytes) {
                    Ok(value) => Output::One(value),
                    Err(e) => Output::Fail(e.into()),
                },
                Err(CallError::Panic(message)) => {
                    Output::Fail(Box::new(crate::ItemError::panic_message(&stage, message)))
                }
                Err(e) => Output::Fail(e.into()),
            }
        }));
        self.add_pipe_with_hook(
            body,
            Shape::Process,
            opts.name(name),
            None,
            StageKind::Pipe,
            Some(release),
        )
    }

    /// An async stage: `f` returns a future, awaited on the pipeline's async runtime.
    pub fn pipe_async<U, Fut, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        Fut: Future<Output = U> + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Async(Arc::new(move |t| f(t).map(Output::One).boxed())),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A fallible async stage.
    pub fn try_pipe_async<U, E, Fut, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Async(Arc::new(move |t| {
                f(t).map(|r| match r {
                    Ok(u) => Output::One(u),
                    Err(e) => Output::Fail(e.into()),
                })
                .boxed()
            })),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// An async stage that may drop items (`None`).
    pub fn pipe_opt_async<U, Fut, F>(self, f: F, opts: StageOptions) -> StageBuilder<U>
    where
        U: Send + 'static,
        Fut: Future<Output = Option<U>> + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Async(Arc::new(move |t| {
                f(t).map(|o| o.map_or(Output::Skip, Output::One)).boxed()
            })),
            Shape::Single,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// A one-to-many async stage: each item of the returned stream is passed on as soon as
    /// it is produced.
    pub fn pipe_stream<S, F>(self, f: F, opts: StageOptions) -> StageBuilder<S::Item>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
        F: Fn(T) -> S + Send + Sync + 'static,
    {
        let name = fn_name::<F>();
        self.add_pipe(
            Body::Async(Arc::new(move |t| {
                let stream = f(t).map(Ok).boxed();
                async move { Output::Stream(stream) }.boxed()
            })),
            Shape::Many,
            opts,
            name.as_deref(),
            StageKind::Pipe,
        )
    }

    /// Batches of `size` items; the last partial batch is emitted.
    pub fn aggregate(self, size: usize) -> StageBuilder<Vec<T>> {
        self.aggregate_sized(size, AggregateOptions::new())
    }

    /// Batches of `size` items with options (e.g. `drop_last`).
    pub fn aggregate_sized(mut self, size: usize, opts: AggregateOptions) -> StageBuilder<Vec<T>> {
        if size == 0 {
            self.errors.push(BuildError::new(
                "aggregate: the batch size must be at least 1",
            ));
        }
        let opts = AggregateOptions {
            name: Some(
                opts.name
                    .clone()
                    .unwrap_or_else(|| format!("aggregate({size}, drop_last={})", opts.drop_last)),
            ),
            ..opts
        };
        self.aggregate_with(Batch::new(size.max(1)), opts)
    }

    /// A user-defined [`Aggregator`].
    pub fn aggregate_with<A>(
        mut self,
        aggregator: A,
        opts: AggregateOptions,
    ) -> StageBuilder<A::Output>
    where
        A: Aggregator<T>,
    {
        if opts.buffer == Some(0) {
            self.errors
                .push(BuildError::new("aggregate: buffer must be at least 1"));
        }
        let name = self.stage_name(opts.name.clone(), None, "aggregate");
        let prev = self.launch;
        let launch: LaunchFn<A::Output> = Box::new(move |l: &mut Launch, out_cap| {
            let rx = prev(l, opts.buffer.unwrap_or(l.queue_capacity))?;
            let scope = l.pipeline_scope.clone();
            let ctx = l.stage(name, StageKind::Aggregate, 1, scope);
            let (tx, out_rx) = l.queue(&ctx.name, out_cap);
            ctx.lanes_starting(1);
            let lane = AggregateLane {
                _guard: ctx.lane_guard(),
                ctx,
                input: rx,
                output: tx,
                aggregator,
                drop_last: opts.drop_last,
            };
            l.default_pool.spawn_lane(Box::pin(lane.run()));
            Ok(out_rx)
        });
        StageBuilder {
            launch,
            errors: self.errors,
            stage_count: self.stage_count + 1,
            continuous: self.continuous,
        }
    }

    /// Turns each collection (e.g. a batch) back into its items, in order.
    pub fn disaggregate(self) -> StageBuilder<<T as IntoIterator>::Item>
    where
        T: IntoIterator,
        T::IntoIter: Send + 'static,
        T::Item: Send + 'static,
    {
        self.add_pipe(
            Body::Sync(Arc::new(|batch: T| {
                Output::Iter(Box::new(batch.into_iter().map(Ok)))
            })),
            Shape::Many,
            StageOptions::new(),
            Some("disaggregate"),
            StageKind::Disaggregate,
        )
    }

    /// Ends the definition: the consumer reads from a queue of `buffer` items.
    pub fn sink(mut self, buffer: usize) -> SinkBuilder<T> {
        if buffer == 0 {
            self.errors.push(BuildError::new(
                "sink: the buffer must hold at least 1 item",
            ));
        }
        SinkBuilder {
            launch: self.launch,
            errors: self.errors,
            buffer: buffer.max(1),
            settings: Settings::default(),
        }
    }
}

/// A complete pipeline definition; set pipeline-wide options, then [`build`](Self::build).
pub struct SinkBuilder<T> {
    launch: LaunchFn<T>,
    errors: Vec<BuildError>,
    buffer: usize,
    settings: Settings,
}

impl<T> fmt::Debug for SinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("buffer", &self.buffer)
            .field("settings", &self.settings)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> SinkBuilder<T> {
    /// Threads of the default pool that runs synchronous stages (default: the number of
    /// CPUs). Like SPDL's `num_threads`.
    pub fn num_threads(mut self, n: usize) -> Self {
        self.settings.num_threads = n;
        self
    }

    /// Pipeline-wide failure budget, shared by every stage without its own (default:
    /// unlimited; failures are still counted and logged).
    pub fn max_failures(mut self, budget: MaxFailures) -> Self {
        self.settings.max_failures = budget;
        self
    }

    /// Capacity of each queue between stages (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.settings.queue_capacity = capacity;
        self
    }

    /// How long stopping waits for the pipeline's threads before leaving behind one that is
    /// still inside a stage function (default 1 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop_timeout = timeout;
        self
    }

    /// Whether the pipeline keeps statistics (default: on). Off, stages do not time their
    /// tasks and queues do not count, [`Pipeline::stats`] has counts only, and nothing is
    /// reported; [hooks](Self::task_hook) still run, so they can replace the statistics.
    pub fn stats(mut self, enabled: bool) -> Self {
        self.settings.stats = enabled;
        self
    }

    /// Logs the statistics through `tracing` every `interval` while the pipeline runs
    /// (target `pipeline_runtime::stats`, level `INFO`). They are logged once when the
    /// pipeline ends either way.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.settings.report_interval = Some(interval);
        self
    }

    /// Adds `hook` to every stage (see [`TaskHook`]).
    pub fn task_hook<H: TaskHook>(self, hook: H) -> Self {
        let hook: Arc<dyn TaskHook> = Arc::new(hook);
        self.hook_factory(move |_: &StageInfo| vec![hook.clone()])
    }

    /// Adds hooks made per stage: `factory` is called once for each stage when the pipeline
    /// starts and returns that stage's hooks (none to leave it alone).
    pub fn hook_factory<F>(mut self, factory: F) -> Self
    where
        F: Fn(&StageInfo) -> Vec<Arc<dyn TaskHook>> + Send + Sync + 'static,
    {
        self.settings.hooks.0.push(Arc::new(factory));
        self
    }

    /// Checks the definition and returns the pipeline, not yet started.
    pub fn build(mut self) -> Result<Pipeline<T>, BuildError> {
        match self.settings.report_interval {
            Some(interval) if interval.is_zero() => self
                .errors
                .push(BuildError::new("report_interval must be greater than zero")),
            Some(_) if !self.settings.stats => self.errors.push(BuildError::new(
                "report_interval needs statistics: remove `stats(false)` or the interval",
            )),
            _ => {}
        }
        if self.settings.num_threads == 0 {
            self.errors
                .push(BuildError::new("num_threads must be at least 1"));
        }
        if self.settings.queue_capacity == 0 {
            self.errors
                .push(BuildError::new("queue_capacity must be at least 1"));
        }
        if let Err(e) = self.settings.max_failures.validate("max_failures") {
            self.errors.push(e);
        }
        if let Some(first) = self.errors.into_iter().next() {
            return Err(first);
        }
        Ok(Pipeline::new(self.launch, self.buffer, self.settings))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A readable default stage name from a function's type: `my_crate::decode` gives
/// `decode`; a closure has no name.
fn fn_name<F>() -> Option<String> {
    let full = std::any::type_name::<F>();
    if full.contains("{{closure}}") || full.contains('<') {
        return None;
    }
    full.rsplit("::").next().map(str::to_owned)
}
