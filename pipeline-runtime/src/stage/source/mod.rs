//! The source: the `PipelineBuilder` methods that start a chain (an iterator, once or per
//! epoch, or a `Stream`), its one option (`item_bytes`, the size of its items for the memory
//! limit), its start-up, and (in [`lane`]) how it runs.

pub(crate) mod lane;

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::builder::open::KindOptions;
use crate::builder::{Chain, PipelineBuilder, StageBuilder};
use crate::failure::BoxError;
use crate::failure::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::memory::{ItemBytes, SizeFn};
use crate::stats::StageKind;
use lane::{run_iter_source, run_stream_source, Admit, BoxedErrors, Oks, Pass, SourceKind};

/// Options of the source: the size function of its items, for the memory limit.
pub(crate) struct SourceOptions<T> {
    item_bytes: Option<SizeFn<T>>,
}

impl<T: 'static> KindOptions for SourceOptions<T> {}

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
    /// Resuming in epoch `e` (see [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from)) clones and turns `items` into
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
                let (lane, rx) = l.one_lane_stage("source".to_owned(), StageKind::Source, out_cap);
                let (base, resume) = l.next_source()?;
                let admit = match (l.memory.clone(), size) {
                    (Some(memory), Some(size)) => Some(Admit { memory, size }),
                    _ => None,
                };
                match kind {
                    SourceKind::Stream(stream) => {
                        l.runtime()?
                            .spawn(run_stream_source(lane, stream, (base, resume), admit));
                    }
                    kind => {
                        let thread = std::thread::Builder::new()
                            .name("pipeline-source".to_owned())
                            .spawn(move || {
                                run_iter_source(lane, kind, (base, resume), admit);
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
        let chain = Chain::new(continuous, vec![shape.to_owned()]);
        Self::opened(
            chain,
            "the source",
            SourceOptions { item_bytes: None },
            move |options, chain| {
                chain.sized_source = options.item_bytes.is_some();
                make(options.item_bytes)
            },
        )
    }

    /// The size of each of the source's items, in bytes, for
    /// [`memory_limit`](crate::SinkBuilder::memory_limit): the most memory the item will
    /// hold anywhere in the pipeline (its largest form, e.g. the decoded image). Goes right
    /// after the source.
    pub fn item_bytes(self, size: impl Fn(&T) -> usize + Send + Sync + 'static) -> Self {
        let size: SizeFn<T> = Arc::new(size);
        self.kind_option("item_bytes", |o: &mut SourceOptions<T>| {
            o.item_bytes = Some(size)
        })
    }
}

impl<T: ItemBytes + Send + 'static> StageBuilder<T> {
    /// [`item_bytes`](Self::item_bytes) with the size the items report through
    /// [`ItemBytes`].
    pub fn reported_bytes(self) -> Self {
        self.item_bytes(T::item_bytes)
    }
}
