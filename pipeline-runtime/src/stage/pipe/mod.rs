//! `pipe`: a function applied to each item, by `concurrency` lanes. One method per function
//! shape (the shapes are in [`shape`]); [`options`] holds the stage's options and their
//! checks, [`process`] the shapes run in worker processes, [`lane`] the lane loop shared by
//! every shape; this file opens a stage and starts its lanes.
//!
//! The method names put the macro's modifiers before `pipe`, in the macro's order:
//! `pipe(async try flat f)` in `pipeline!` is `.async_try_flat_pipe(f)` in the builder.

pub(crate) mod lane;
pub(crate) mod options;
#[cfg(unix)]
mod process;
#[cfg(unix)]
mod process_body;
pub(crate) mod shape;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use crate::builder::{fn_name, Chain, StageBuilder};
use crate::executor::Executor;
use crate::failure::BoxError;
use crate::failure::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::queue::Tx;
use crate::stats::StageKind;
use crate::tune::resize::StageResizer;
use crate::tune::DEFAULT_AUTO_MAX;
use lane::Body;
pub use lane::Order;
use lane::{Lane, StageInput};
use options::{check_pipe, PipeOptions, WHAT};
#[cfg(unix)]
pub use process::{
    ProcessFlatPipeFn, ProcessOptPipeFn, ProcessPipeFn, ProcessTryFlatPipeFn, ProcessTryPipeFn,
};
#[cfg(unix)]
pub use process::{ProcessInput, ProcessOutput};
pub use shape::{
    AsyncFlatPipeFn, AsyncOptPipeFn, AsyncPipeFn, AsyncTryFlatPipeFn, AsyncTryPipeFn, FlatPipeFn,
    OptPipeFn, PipeFn, TryFlatPipeFn, TryPipeFn,
};
use shape::{Flat, FlatStream, One, Opt, Shape, Try, TryFlat, TryFlatStream};
pub use shape::{StageFn, StageItem};

/// What a `pipe` stage runs, known once its options are fixed (a process stage's body
/// needs its pool).
pub(crate) struct StageParts<T, U> {
    pub(crate) body: Body<T, U>,
    /// Run when the pipeline is asked to stop, and when the stage trips its failure budget.
    pub(crate) on_stop: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// How a `pipe` stage's lanes run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runs {
    /// On the stage's executor, calling the function inline.
    Threads,
    /// On the pipeline's async runtime.
    Async,
    /// On a `ProcessPool`'s caller threads, each talking to its worker.
    #[cfg_attr(not(unix), allow(dead_code))]
    Processes,
}

/// A `pipe` stage before its options are fixed.
pub(crate) struct PipeSpec<T, U> {
    pub(crate) runs: Runs,
    /// One input may give several outputs.
    pub(crate) many: bool,
    /// The name to use when none is given (the function's, or the stage's own).
    pub(crate) default_name: Option<String>,
    pub(crate) kind: StageKind,
    /// Runs on this executor whatever the options say (the GPU stage's own thread).
    pub(crate) pinned: Option<Executor>,
    pub(crate) parts: MakeParts<T, U>,
}

/// Makes a stage's parts from its fixed options and its name.
pub(crate) type MakeParts<T, U> = Box<dyn FnOnce(&PipeOptions, &str) -> StageParts<T, U> + Send>;

impl<T: Send + 'static, U: Send + 'static> PipeSpec<T, U> {
    /// A stage of the default kind that runs `body` (on threads or, for an async body, on
    /// the runtime), named `default_name` unless the options name it.
    pub(crate) fn plain(body: Body<T, U>, many: bool, default_name: Option<String>) -> Self {
        let runs = match body {
            Body::Sync(_) => Runs::Threads,
            Body::Async(_) => Runs::Async,
        };
        Self {
            runs,
            many,
            default_name,
            kind: StageKind::Pipe,
            pinned: None,
            parts: Box::new(move |_, _| StageParts {
                body,
                on_stop: None,
            }),
        }
    }
}

impl<T: Send + 'static> StageBuilder<T> {
    /// Opens a `pipe` stage; its options are checked and its lanes wired when it is sealed.
    pub(crate) fn add_pipe<U: Send + 'static>(self, spec: PipeSpec<T, U>) -> StageBuilder<U> {
        let index = self.chain.stage_count;
        self.then(
            WHAT,
            PipeOptions::default(),
            move |prev, mut opts, chain| {
                let name = opts
                    .name
                    .clone()
                    .or(spec.default_name.clone())
                    .unwrap_or_else(|| format!("pipe#{index}"));
                if let Some(executor) = spec.pinned.clone() {
                    if opts.executor.is_some() {
                        chain.errors.push(BuildError::new(format!(
                            "stage `{name}` runs on its own thread (its transfer's); `executor` \
                         does not apply to it"
                        )));
                    }
                    opts.executor = Some(executor);
                }
                check_pipe(&spec, &opts, &name, chain);
                let word = match (spec.kind, spec.many) {
                    (StageKind::Disaggregate, _) => "disaggregate",
                    (_, true) => "flat pipe",
                    (_, false) => "pipe",
                };
                chain.shape.push(word.to_owned());
                let parts = (spec.parts)(&opts, &name);
                if opts.auto.is_some() {
                    chain.auto_bounds.push(name.clone());
                }
                launch_pipe(
                    prev,
                    (spec.runs, spec.many),
                    spec.kind,
                    opts,
                    name,
                    parts,
                    chain,
                )
            },
        )
    }

    /// Opens a synchronous stage whose function's return value reads as shape `S`.
    fn thread_stage<S, R, F>(self, f: F) -> StageBuilder<S::Item>
    where
        S: Shape<R>,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let body = Body::Sync(Arc::new(move |t| S::output(f(t))));
        self.add_pipe(PipeSpec::plain(body, S::MANY, fn_name::<F>()))
    }

    /// Opens an async stage whose future's output reads as shape `S`.
    fn async_stage<S, R, Fut, F>(self, f: F) -> StageBuilder<S::Item>
    where
        S: Shape<R>,
        R: 'static,
        Fut: Future<Output = R> + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
    {
        let body = Body::Async(Arc::new(move |t| f(t).map(S::output).boxed()));
        self.add_pipe(PipeSpec::plain(body, S::MANY, fn_name::<F>()))
    }

    /// A fallible synchronous stage with a default name, on an executor that options cannot
    /// change.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn pinned_pipe<U, E, F>(
        self,
        f: F,
        default_name: String,
        executor: Executor,
    ) -> StageBuilder<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        let body = Body::Sync(Arc::new(move |t| Try::output(f(t))));
        self.add_pipe(PipeSpec {
            pinned: Some(executor),
            ..PipeSpec::plain(body, false, Some(default_name))
        })
    }

    /// A synchronous stage: `f` maps each item to one output. Runs on the stage's executor.
    ///
    /// `f: Fn(T) -> U`.
    pub fn pipe<F: PipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.thread_stage::<One, F::Item, F>(f)
    }

    /// A fallible synchronous stage: `Err` fails the item (counted against the budget).
    ///
    /// `f: Fn(T) -> Result<U, E>`, `E: Into<BoxError>`.
    pub fn try_pipe<F: TryPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.thread_stage::<Try, Result<F::Item, F::Error>, F>(f)
    }

    /// A synchronous stage that may drop items: `None` drops the item (not a failure).
    ///
    /// `f: Fn(T) -> Option<U>`.
    pub fn opt_pipe<F: OptPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.thread_stage::<Opt, Option<F::Item>, F>(f)
    }

    /// A one-to-many synchronous stage: every item of the returned iterator is passed on as
    /// soon as it is produced (not collected first).
    ///
    /// `f: Fn(T) -> I`, `I: IntoIterator` (its iterator `Send + 'static`).
    pub fn flat_pipe<F: FlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.thread_stage::<Flat, F::Items, F>(f)
    }

    /// A one-to-many synchronous stage whose iterator may fail midway: outputs before the
    /// `Err` are kept, the rest of that input is lost, and the input counts as failed.
    ///
    /// `f: Fn(T) -> I`, `I: IntoIterator<Item = Result<U, E>>`.
    pub fn try_flat_pipe<F: TryFlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.thread_stage::<TryFlat, F::Items, F>(f)
    }

    /// An async stage: `f` returns a future, awaited on the pipeline's async runtime.
    ///
    /// `f: Fn(T) -> Fut`, `Fut: Future<Output = U> + Send + 'static`.
    pub fn async_pipe<F: AsyncPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.async_stage::<One, F::Item, F::Fut, F>(f)
    }

    /// A fallible async stage: `Err` fails the item.
    ///
    /// `f: Fn(T) -> Fut`, `Fut: Future<Output = Result<U, E>> + Send + 'static`.
    pub fn async_try_pipe<F: AsyncTryPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.async_stage::<Try, Result<F::Item, F::Error>, F::Fut, F>(f)
    }

    /// An async stage that may drop items (`None`).
    ///
    /// `f: Fn(T) -> Fut`, `Fut: Future<Output = Option<U>> + Send + 'static`.
    pub fn async_opt_pipe<F: AsyncOptPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.async_stage::<Opt, Option<F::Item>, F::Fut, F>(f)
    }

    /// A one-to-many async stage: `f` returns a stream, each of whose items is passed on as
    /// soon as it is produced.
    ///
    /// `f: Fn(T) -> S`, `S: Stream + Send + 'static`.
    pub fn async_flat_pipe<F: AsyncFlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.async_stage::<FlatStream, F::Stream, _, _>(move |t| std::future::ready(f(t)))
    }

    /// A one-to-many async stage whose stream may fail midway: items before the `Err` are
    /// kept, the rest of that input is lost, and the input counts as failed.
    ///
    /// `f: Fn(T) -> S`, `S: Stream<Item = Result<U, E>> + Send + 'static`.
    pub fn async_try_flat_pipe<F: AsyncTryFlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item> {
        self.async_stage::<TryFlatStream, F::Stream, _, _>(move |t| std::future::ready(f(t)))
    }
}

/// The launch function of a `pipe` stage: starts the stages before it, then its lanes.
fn launch_pipe<T: Send + 'static, U: Send + 'static>(
    prev: LaunchFn<T>,
    (runs, many): (Runs, bool),
    kind: StageKind,
    opts: PipeOptions,
    name: String,
    parts: StageParts<T, U>,
    chain: &Chain,
) -> LaunchFn<U> {
    let continuous = chain.continuous;
    Box::new(move |l: &mut Launch, out_cap| {
        let many_in_order = many && opts.order == Order::Input;
        // Under autotune a stage is tuned unless the user fixed its concurrency.
        let pinned = opts.concurrency.is_some() && opts.auto.is_none();
        let auto = (l.autotune && !pinned && !many_in_order)
            .then(|| opts.auto.unwrap_or((1, DEFAULT_AUTO_MAX)));
        let concurrency = opts
            .concurrency
            .unwrap_or(auto.map_or(1, |(lo, _)| lo))
            .max(1);
        let planned = auto.map_or(concurrency, |(_, hi)| hi.max(concurrency));
        // By default an async stage's input holds an item for every lane: lanes that finish
        // together (a thousand lanes woken by the same timer tick, or by one batch of
        // replies) then find their next items waiting, instead of queueing behind the
        // stage before refilling a smaller queue.
        let input_capacity =
            opts.buffer
                .unwrap_or(if runs == Runs::Async && !l.queue_capacity_chosen {
                    l.queue_capacity.max(concurrency)
                } else {
                    l.queue_capacity
                });
        let rx = prev(l, input_capacity)?;
        if many {
            l.fan_out(&name)?;
        }
        let scope = l.scope(opts.max_failures);
        let ctx = l.resizable_stage(name, kind, (concurrency, planned), scope);
        let (tx, out_rx) = l.queue(&ctx.name, out_cap);
        if let Some(hook) = parts.on_stop {
            ctx.on_trip(hook.clone());
            l.run.on_stop(Box::new(move || hook()));
        }
        // Lanes share a gate only when something must be serialised at their input:
        // numbering items for input order, or an epoch boundary waiting for the items in
        // flight. Otherwise they take items straight from the queue. A stage that may be
        // tuned above one lane has it from the start, so that lanes can come and go.
        let needs_gate = opts.order == Order::Input || continuous;
        let gated = planned > 1 && needs_gate;
        if runs == Runs::Async {
            rx.read_by_async_lanes();
        }
        let input = Arc::new(StageInput::new(rx, gated));
        let executor = opts.executor.unwrap_or_default();
        let (max, why_fixed) = if many_in_order {
            (
                1,
                Some("it yields many items per input and keeps input order"),
            )
        } else if needs_gate && !gated {
            (
                1,
                Some(
                    "it keeps input order or sees epochs and was built with one lane; give \
                     it `concurrency_auto` bounds to make it resizable",
                ),
            )
        } else {
            (ctx.lanes.max(), None)
        };
        let runtime = match runs {
            Runs::Async => Some(l.relay()?),
            _ => None,
        };
        // Makes and runs lane `index` over the stage's input and output: the lanes started
        // now, and those a resize adds later.
        let start_lane = {
            let ctx = ctx.clone();
            let body = parts.body.clone();
            let order = opts.order;
            let executor = executor.clone();
            let pool = l.default_pool.clone();
            move |index: usize, input: Arc<StageInput<T>>, output: Tx<U>| {
                let lane = Lane {
                    _guard: ctx.lane_guard(),
                    ctx: ctx.clone(),
                    input,
                    output,
                    body: body.clone(),
                    order,
                    index,
                };
                match &runtime {
                    Some(relay) => relay.spawn(Box::pin(lane.run())),
                    None => executor.spawn_lane(&pool, Box::pin(lane.run())),
                }
            }
        };
        let on_default_pool = runs == Runs::Threads && matches!(executor, Executor::Default);
        ctx.lanes_starting(concurrency);
        for index in 0..concurrency {
            start_lane(index, input.clone(), tx.clone());
        }
        let spawner = {
            let ctx = ctx.clone();
            let input = Arc::downgrade(&input);
            let output = tx.downgrade();
            move |index: usize| -> bool {
                let (Some(input), Some(output)) = (input.upgrade(), output.upgrade()) else {
                    return false;
                };
                if !ctx.lane_joining() {
                    return false;
                }
                start_lane(index, input, output);
                true
            }
        };
        l.resizers.push(StageResizer::new(
            ctx,
            max,
            why_fixed,
            auto,
            (on_default_pool, runs == Runs::Async),
            Box::new(spawner),
        ));
        Ok(out_rx)
    })
}
