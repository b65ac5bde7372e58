//! `aggregate` (items into batches, or any [`Aggregator`]) and `disaggregate` (batches back
//! into items): the builder methods, the options (`drop_last`, `name`, `buffer`), the
//! start-up, and (in [`lane`]) the aggregating lane.

pub(crate) mod lane;

use std::sync::Arc;

use crate::builder::open::KindOptions;
use crate::builder::StageBuilder;
use crate::failure::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::stage::pipe::lane::{Body, Output};
use crate::stage::pipe::PipeSpec;
use crate::stats::StageKind;
use lane::AggregateLane;
pub use lane::Aggregator;
use lane::Batch;

/// What an option given to an `aggregate` stage that it does not take calls it.
pub(crate) const WHAT: &str = "an `aggregate` stage";

/// Options of an `aggregate` stage (and of `aggregate_by`).
#[derive(Debug, Clone, Default)]
pub(crate) struct AggregateOptions {
    pub(crate) drop_last: bool,
    pub(crate) name: Option<String>,
    pub(crate) buffer: Option<usize>,
}

impl KindOptions for AggregateOptions {
    fn name(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.name)
    }

    fn buffer(&mut self) -> Option<&mut Option<usize>> {
        Some(&mut self.buffer)
    }
}

impl<T> StageBuilder<T> {
    /// Whether the `aggregate` (or `aggregate_by`) stage just added drops the partial batch
    /// at the end of the stream (or of each epoch) instead of emitting it (default `false`).
    pub fn drop_last(self, drop_last: bool) -> Self {
        self.kind_option("drop_last", |o: &mut AggregateOptions| {
            o.drop_last = drop_last
        })
    }
}

impl<T: Send + 'static> StageBuilder<T> {
    /// Batches of `size` items; the last partial batch is emitted unless
    /// [`drop_last`](StageBuilder::drop_last) is set.
    pub fn aggregate(self, size: usize) -> StageBuilder<Vec<T>> {
        let mistake =
            (size == 0).then(|| BuildError::new("aggregate: the batch size must be at least 1"));
        self.aggregate_stage(mistake, move |opts: &AggregateOptions| {
            let name = format!("aggregate({size}, drop_last={})", opts.drop_last);
            (Batch::new(size.max(1)), Some(name))
        })
    }

    /// A user-defined [`Aggregator`] (the `drop_last` option is handed to its `flush`).
    pub fn aggregate_with<A>(self, aggregator: A) -> StageBuilder<A::Output>
    where
        A: Aggregator<T>,
    {
        self.aggregate_stage(None, move |_: &AggregateOptions| (aggregator, None))
    }

    /// Opens an aggregate stage; `mistake` is an error in its arguments, reported in
    /// definition order.
    fn aggregate_stage<A>(
        self,
        mistake: Option<BuildError>,
        make: impl FnOnce(&AggregateOptions) -> (A, Option<String>) + Send + 'static,
    ) -> StageBuilder<A::Output>
    where
        A: Aggregator<T>,
    {
        let index = self.chain.stage_count;
        self.then(
            WHAT,
            AggregateOptions::default(),
            move |prev, opts, chain| {
                chain.errors.extend(mistake);
                if opts.buffer == Some(0) {
                    chain
                        .errors
                        .push(BuildError::new("aggregate: buffer must be at least 1"));
                }
                let (aggregator, default_name) = make(&opts);
                let word = default_name.as_deref().unwrap_or("aggregate_with");
                chain.shape.push(word.to_owned());
                let name = opts
                    .name
                    .clone()
                    .or(default_name)
                    .unwrap_or_else(|| format!("aggregate#{index}"));
                launch_aggregate(prev, aggregator, opts, name)
            },
        )
    }

    /// Turns each collection (e.g. a batch) back into its items, in order.
    pub fn disaggregate(self) -> StageBuilder<<T as IntoIterator>::Item>
    where
        T: IntoIterator,
        T::IntoIter: Send + 'static,
        T::Item: Send + 'static,
    {
        let body = Body::Sync(Arc::new(|batch: T| {
            Output::Iter(Box::new(batch.into_iter().map(Ok)))
        }));
        self.add_pipe(PipeSpec {
            kind: StageKind::Disaggregate,
            ..PipeSpec::plain(body, true, Some("disaggregate".to_owned()))
        })
        .without_options("`disaggregate`")
    }
}

fn launch_aggregate<T: Send + 'static, A: Aggregator<T>>(
    prev: LaunchFn<T>,
    aggregator: A,
    opts: AggregateOptions,
    name: String,
) -> LaunchFn<A::Output> {
    Box::new(move |l: &mut Launch, out_cap| {
        let rx = prev(l, opts.buffer.unwrap_or(l.queue_capacity))?;
        let (lane, out_rx) = l.one_lane_stage(name, StageKind::Aggregate, out_cap);
        let members = lane::Members::for_stage(&lane.ctx);
        let lane = AggregateLane {
            _guard: lane.guard,
            ctx: lane.ctx,
            input: rx,
            output: lane.output,
            aggregator,
            drop_last: opts.drop_last,
            members,
        };
        l.spawn_lane(lane.run());
        Ok(out_rx)
    })
}
