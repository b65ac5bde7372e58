//! The options of the stage a builder has open (the one added last), and the methods that
//! set them: `.pipe(f).concurrency(4).name("decode")`, `.aggregate(32).drop_last(true)`.
//!
//! An option given to a stage that does not have it (`.aggregate(8).concurrency(2)`) is a
//! definition error that `build()` reports, naming the option and the stage.

use super::StageBuilder;
use crate::budget::ItemBytes;
use crate::error::BuildError;
use crate::executor::Executor;
use crate::failure::MaxFailures;
use crate::stage::pipe::Order;

/// Options of a `pipe` stage. Unset, a stage has one lane, keeps completion order, counts
/// against the pipeline's failure budget and runs on the default pool.
#[derive(Clone, Default, Debug)]
pub(crate) struct PipeOptions {
    pub(crate) concurrency: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) order: Order,
    pub(crate) max_failures: Option<MaxFailures>,
    pub(crate) executor: Option<Executor>,
    pub(crate) buffer: Option<usize>,
    /// Bounds for autotune (`concurrency_auto(lo..=hi)`).
    pub(crate) auto: Option<(usize, usize)>,
}

/// Options of the source: the size function of its items, for the memory budget (a
/// `SizeFn<T>` of the source's item type, boxed so that `Options` needs no type).
#[derive(Default)]
pub(crate) struct SourceOptions {
    pub(crate) item_bytes: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceOptions")
            .field("item_bytes", &self.item_bytes.is_some())
            .finish()
    }
}

/// Options of an `aggregate` stage.
#[derive(Debug, Clone, Default)]
pub(crate) struct AggregateOptions {
    pub(crate) drop_last: bool,
    pub(crate) name: Option<String>,
    pub(crate) buffer: Option<usize>,
}

/// The open stage's options, by kind of stage.
#[derive(Debug)]
pub(crate) enum Options {
    /// A stage without options; says which, for the error of an option given to it.
    None(&'static str),
    Source(SourceOptions),
    Pipe(PipeOptions),
    Aggregate(AggregateOptions),
    Merge(super::merge::MergeOptions),
}

impl Options {
    pub(crate) fn pipe() -> Self {
        Options::Pipe(PipeOptions::default())
    }

    pub(crate) fn aggregate() -> Self {
        Options::Aggregate(AggregateOptions::default())
    }

    pub(crate) fn into_pipe(self) -> PipeOptions {
        match self {
            Options::Pipe(opts) => opts,
            _ => PipeOptions::default(),
        }
    }

    pub(crate) fn into_aggregate(self) -> AggregateOptions {
        match self {
            Options::Aggregate(opts) => opts,
            _ => AggregateOptions::default(),
        }
    }

    fn stage(&self) -> &'static str {
        match self {
            Options::None(stage) => stage,
            Options::Source(_) => "the source",
            Options::Pipe(_) => "a `pipe` stage",
            Options::Aggregate(_) => "an `aggregate` stage",
            Options::Merge(_) => "a `merge`",
        }
    }
}

impl<T> StageBuilder<T> {
    /// Items in flight at once in the `pipe` stage just added (at least 1; default 1). For a
    /// synchronous stage the executor's thread count also caps how many calls truly run in
    /// parallel.
    pub fn concurrency(self, n: usize) -> Self {
        self.pipe_option("concurrency", |o| o.concurrency = Some(n))
    }

    /// Lets autotune ([`SinkBuilder::autotune`](crate::SinkBuilder::autotune)) choose the
    /// concurrency of the `pipe` stage just added within `bounds` (e.g. `1..=64`); it starts
    /// at [`concurrency`](Self::concurrency) if given, else at the lower bound. Under
    /// autotune a stage with neither is tuned within `1..=64`; one with only `concurrency`
    /// keeps it.
    pub fn concurrency_auto(self, bounds: std::ops::RangeInclusive<usize>) -> Self {
        let bounds = (*bounds.start(), *bounds.end());
        self.pipe_option("concurrency_auto", |o| o.auto = Some(bounds))
    }

    /// The name of the stage just added, in logs, errors and stats (default: the function's
    /// name, else `pipe#N`; `aggregate(N, drop_last=..)` for a batch stage).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        match &mut self.opts {
            Options::Pipe(o) => o.name = Some(name),
            Options::Aggregate(o) => o.name = Some(name),
            Options::Merge(o) => o.name = Some(name),
            Options::None(_) | Options::Source(_) => self.misplaced("name"),
        }
        self
    }

    /// Output order of the `pipe` stage just added (default [`Order::Completion`]);
    /// [`Order::Input`] keeps the order of the stage's input.
    pub fn order(self, order: Order) -> Self {
        self.pipe_option("order", |o| o.order = order)
    }

    /// A failure budget for the `pipe` stage just added alone, instead of the pipeline-wide
    /// one.
    pub fn max_failures(self, budget: MaxFailures) -> Self {
        self.pipe_option("max_failures", |o| o.max_failures = Some(budget))
    }

    /// Where the (synchronous) `pipe` stage just added runs (default: the pipeline's pool).
    /// Async stages reject this; process stages need a [`ProcessPool`](crate::ProcessPool).
    pub fn executor(self, executor: impl Into<Executor>) -> Self {
        let executor = executor.into();
        self.pipe_option("executor", |o| o.executor = Some(executor))
    }

    /// Capacity of the queue in front of the stage just added (default: the pipeline's
    /// `queue_capacity`; for an async stage, when `queue_capacity` is not set, its
    /// concurrency if that is larger, so that every lane finds an item waiting). Lower it for
    /// large items.
    pub fn buffer(mut self, capacity: usize) -> Self {
        match &mut self.opts {
            Options::Pipe(o) => o.buffer = Some(capacity),
            Options::Aggregate(o) => o.buffer = Some(capacity),
            Options::None(_) | Options::Merge(_) | Options::Source(_) => self.misplaced("buffer"),
        }
        self
    }

    /// Whether the `aggregate` stage just added drops the partial batch at the end of the
    /// stream (or of each epoch) instead of emitting it (default `false`).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        match &mut self.opts {
            Options::Aggregate(o) => o.drop_last = drop_last,
            _ => self.misplaced("drop_last"),
        }
        self
    }

    /// The size of each of the source's items, in bytes, for
    /// [`memory_limit`](crate::SinkBuilder::memory_limit): the most memory the item will
    /// hold anywhere in the pipeline (its largest form, e.g. the decoded image). Goes right
    /// after the source.
    pub fn item_bytes(mut self, size: impl Fn(&T) -> usize + Send + Sync + 'static) -> Self
    where
        T: 'static,
    {
        let size: crate::budget::SizeFn<T> = std::sync::Arc::new(size);
        match &mut self.opts {
            Options::Source(o) => o.item_bytes = Some(Box::new(size)),
            _ => self.misplaced("item_bytes"),
        }
        self
    }

    /// Closes the stage just added to options (it takes none); `stage` names it in errors.
    pub(crate) fn without_options(mut self, stage: &'static str) -> Self {
        self.opts = Options::None(stage);
        self
    }

    fn pipe_option(mut self, option: &str, set: impl FnOnce(&mut PipeOptions)) -> Self {
        match &mut self.opts {
            Options::Pipe(o) => set(o),
            _ => self.misplaced(option),
        }
        self
    }

    pub(super) fn misplaced(&mut self, option: &str) {
        let error = format!(
            "`{option}` is not an option of {}, the stage before it",
            self.opts.stage()
        );
        self.chain.errors.push(BuildError::new(error));
    }
}

impl<T: ItemBytes + 'static> StageBuilder<T> {
    /// [`item_bytes`](Self::item_bytes) with the size the items report through
    /// [`ItemBytes`].
    pub fn reported_bytes(self) -> Self {
        self.item_bytes(T::item_bytes)
    }
}
