//! The typed builder: `PipelineBuilder::new().source(..)` → stages → `.sink()` → `.build()`.
//!
//! Each stage method seals the stage before it and wraps the previous stages' launch
//! function, so the chain is statically typed (a stage takes what the previous one produces)
//! and nothing runs until the pipeline starts. The stage just added stays open: its options
//! are set by the methods that follow it (`.pipe(f).concurrency(4)`), only where they differ
//! from the defaults. Every builder of a chain whose items are `T` has the one type
//! `StageBuilder<T>`, so a chain assembled at run time (in a loop, or by functions that add
//! stages) needs no conversions; an option that does not apply to the last stage is reported
//! by `build()` (the `pipeline!` macro rejects it at compile time).
//!
//! One file per part: sources here, [`options`] for the open stage's options, [`shape`] for
//! the function shapes, [`pipe`] for thread and async stages, [`process`] for process stages,
//! [`aggregate`] for batching, [`sink`] for the pipeline-wide settings.

mod aggregate;
mod merge;
mod options;
mod pipe;
#[cfg(unix)]
mod process;
#[cfg(unix)]
mod region;
mod route;
mod shape;
mod sink;

use std::fmt;

use futures::{Stream, StreamExt};

use crate::budget::SizeFn;
use crate::error::{BoxError, BuildError};
use crate::launch::{Launch, LaunchFn};
use crate::stage::source::{
    run_iter_source, run_stream_source, Admit, BoxedErrors, Oks, Pass, SourceKind,
};
use crate::stats::StageKind;

pub(crate) use options::{AggregateOptions, Options, PipeOptions, SourceOptions};
pub use route::{BatchedBranches, BatchedRoute, Branches, Route};
pub use sink::{SinkBuilder, DEFAULT_SINK_BUFFER};

/// Starts a pipeline definition; the first call names the source.
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
        let pass: Pass<I::Item> = Box::new(Oks(items.into_iter()));
        StageBuilder::from_source(SourceKind::Once(pass))
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
        let pass: Pass<T> = Box::new(BoxedErrors(items.into_iter()));
        StageBuilder::from_source(SourceKind::Once(pass))
    }

    /// Continuous mode: `items` is iterated again for every epoch, forever, and the consumer
    /// sees the epoch boundaries (see [`Pipeline::epoch`](crate::Pipeline::epoch)).
    ///
    /// Resuming in epoch `e` (see [`SinkBuilder::resume_from`]) clones and turns `items` into
    /// an iterator once for each epoch before `e` without reading it, so a source that counts
    /// its passes (a new order each epoch) counts those too.
    pub fn continuous_source<I>(self, items: I) -> StageBuilder<I::Item>
    where
        I: IntoIterator + Clone + Send + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
    {
        let make_pass = move || -> Pass<I::Item> { Box::new(Oks(items.clone().into_iter())) };
        StageBuilder::from_source(SourceKind::Continuous(Box::new(make_pass)))
    }

    /// Items from an async `Stream`, polled on the pipeline's async runtime.
    pub fn async_source<S>(self, stream: S) -> StageBuilder<S::Item>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
    {
        StageBuilder::from_source(SourceKind::Stream(stream.map(Ok).boxed()))
    }

    /// Items from an async `Stream` of `Result`s: an `Err` ends the pipeline with a source
    /// error, after the items before it are delivered.
    pub fn async_try_source<S, T, E>(self, stream: S) -> StageBuilder<T>
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        StageBuilder::from_source(SourceKind::Stream(
            stream.map(|r| r.map_err(Into::into)).boxed(),
        ))
    }
}

/// What the chain of stages knows beyond the launch function: definition errors (reported
/// by `build()`), the number of stages, and whether epochs travel through it.
#[derive(Debug)]
pub(crate) struct Chain {
    pub(crate) errors: Vec<BuildError>,
    pub(crate) stage_count: usize,
    /// The source is continuous, so epoch boundaries travel through the stages.
    pub(crate) continuous: bool,
    /// One word per stage, as a check that a resume state comes from a pipeline of the same
    /// shape (e.g. `continuous source`, `pipe`, `aggregate(32, drop_last=false)`).
    pub(crate) shape: Vec<String>,
    /// The source was given the size of its items (`item_bytes`).
    pub(crate) sized_source: bool,
    /// Stages given `concurrency_auto` bounds (which need autotune on).
    pub(crate) auto_bounds: Vec<String>,
}

/// Turns the open stage and its options into its launch function.
pub(crate) type Finish<T> = Box<dyn FnOnce(Options, &mut Chain) -> LaunchFn<T> + Send>;

/// A pipeline under construction whose items are `T` at this point. The stage added last
/// is open: the option methods that follow it (`concurrency`, `name`, ...) set its options.
pub struct StageBuilder<T> {
    chain: Chain,
    /// The open stage's options.
    opts: Options,
    finish: Finish<T>,
}

impl<T> fmt::Debug for StageBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageBuilder")
            .field("stages", &self.chain.stage_count)
            .field("last_stage_options", &self.opts)
            .field("errors", &self.chain.errors)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> StageBuilder<T> {
    fn from_source(kind: SourceKind<T>) -> Self {
        let continuous = matches!(kind, SourceKind::Continuous(_));
        let shape = match kind {
            SourceKind::Once(_) => "source",
            SourceKind::Continuous(_) => "continuous source",
            SourceKind::Stream(_) => "stream source",
        };
        let make = move |size: Option<SizeFn<T>>| -> LaunchFn<T> {
            Box::new(move |l: &mut Launch, out_cap| {
                let name = "source";
                let scope = l.pipeline_scope.clone();
                let ctx = l.stage(name.to_owned(), StageKind::Source, 1, scope);
                let (tx, rx) = l.queue(&ctx.name, out_cap);
                ctx.lanes_starting(1);
                let lane = ctx.lane_guard();
                let resume = l.resume_from.take();
                let admit = match (l.budget.clone(), size) {
                    (Some(budget), Some(size)) => Some(Admit { budget, size }),
                    _ => None,
                };
                match kind {
                    SourceKind::Stream(stream) => {
                        l.runtime()?
                            .spawn(run_stream_source(lane, ctx, stream, tx, resume, admit));
                    }
                    kind => {
                        let thread = std::thread::Builder::new()
                            .name("pipeline-source".to_owned())
                            .spawn(move || {
                                run_iter_source(lane, ctx, kind, tx, resume, admit);
                                // Lanes this thread's last sends cancelled (see `executor::task`).
                                crate::executor::drop_deferred();
                            })
                            .map_err(|e| {
                                BuildError::new(format!("cannot start source thread: {e}"))
                            })?;
                        l.run.register_thread(thread);
                    }
                }
                Ok(rx)
            })
        };
        let chain = Chain {
            errors: Vec::new(),
            stage_count: 1,
            continuous,
            shape: vec![shape.to_owned()],
            sized_source: false,
            auto_bounds: Vec::new(),
        };
        Self {
            chain,
            opts: Options::Source(SourceOptions::default()),
            finish: Box::new(move |opts, chain| {
                let size = match opts {
                    Options::Source(o) => o
                        .item_bytes
                        .and_then(|b| b.downcast::<SizeFn<T>>().ok())
                        .map(|b| *b),
                    _ => None,
                };
                chain.sized_source = size.is_some();
                make(size)
            }),
        }
    }

    /// A builder whose last stage has no options left to set.
    fn ready(chain: Chain, launch: LaunchFn<T>) -> Self {
        Self {
            chain,
            opts: Options::None("the source"),
            finish: Box::new(move |_, _| launch),
        }
    }

    /// Fixes the last stage's options: its launch function, and the chain.
    fn seal(self) -> (LaunchFn<T>, Chain) {
        let mut chain = self.chain;
        let launch = (self.finish)(self.opts, &mut chain);
        (launch, chain)
    }

    /// Seals this stage and opens the next one, with `opts` as its options; `finish` makes
    /// its launch function from the previous one once its options are fixed.
    fn then<U>(
        self,
        opts: Options,
        finish: impl FnOnce(LaunchFn<T>, Options, &mut Chain) -> LaunchFn<U> + Send + 'static,
    ) -> StageBuilder<U> {
        let (prev, mut chain) = self.seal();
        chain.stage_count += 1;
        StageBuilder {
            chain,
            opts,
            finish: Box::new(move |opts, chain| finish(prev, opts, chain)),
        }
    }

    /// Records a definition error, reported by `build()`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn push_error(&mut self, error: BuildError) {
        self.chain.errors.push(error);
    }
}

/// A readable default stage name from a function's type: `my_crate::decode` gives
/// `decode`; a closure has no name.
pub(crate) fn fn_name<F>() -> Option<String> {
    let full = std::any::type_name::<F>();
    if full.contains("{{closure}}") || full.contains('<') {
        return None;
    }
    full.rsplit("::").next().map(str::to_owned)
}
