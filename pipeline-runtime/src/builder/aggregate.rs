//! `aggregate` (items into batches, or any [`Aggregator`]) and `disaggregate` (batches back
//! into items).

use std::sync::Arc;

use super::pipe::PipeSpec;
use super::{AggregateOptions, Options, StageBuilder};
use crate::error::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::stage::aggregate::{AggregateLane, Aggregator, Batch};
use crate::stage::pipe::{Body, Output};
use crate::stats::StageKind;

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
        self.then(Options::aggregate(), move |prev, opts, chain| {
            let opts = opts.into_aggregate();
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
        })
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
            members: Vec::new(),
        };
        l.default_pool.spawn_lane(Box::pin(lane.run()));
        Ok(out_rx)
    })
}
