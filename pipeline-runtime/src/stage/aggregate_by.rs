//! `aggregate_by(key, size)`: batches whose items share a key (bucketing), as aspect-ratio
//! buckets for images and length buckets for text need, so that a batch can be stacked or
//! padded little.
//!
//! Each item goes to the bucket of its key; a bucket that reaches `size` items goes out as a
//! batch. At the end of each epoch (and of the stream) every bucket that never filled is
//! flushed, in the order of their oldest items (or dropped, with `drop_last`), so no batch
//! spans two epochs; a resumed run, which sees again only the items that were pending, so
//! flushes in the same order. One lane, so batches are formed in arrival order. Memory holds at
//! most `size - 1` items per distinct key: a key function with unbounded distinct values
//! (a raw length rather than a bucket of lengths) holds that many partial buckets.
//!
//! A key function that panics fails that item (counted against the failure budget). With
//! resume tracking on, a batch covers exactly the items of its bucket, and the items of a
//! bucket dropped by `drop_last` are resolved.

use std::collections::HashMap;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::builder::StageBuilder;
use crate::failure::{BuildError, ItemError};
use crate::hook::TaskOutcome;
use crate::launch::{Launch, LaunchFn};
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::Outcome;
use crate::resume::Tag;
use crate::stage::aggregate::AggregateOptions;
use crate::stage::{LaneGuard, LaneTurns, StageCtx};
use crate::stats::StageKind;

impl<T: Send + 'static> StageBuilder<T> {
    /// Batches of `size` items that share a key: `key` gives each item's bucket (e.g. its
    /// aspect ratio rounded to a few classes). A full bucket goes out at once; the buckets
    /// that never filled go out at the end of each epoch and of the stream, unless
    /// [`drop_last`](StageBuilder::drop_last) is set. Options: `drop_last`, `name`,
    /// `buffer`.
    ///
    /// ```
    /// use pipeline_runtime::PipelineBuilder;
    ///
    /// let batches: Vec<Vec<u32>> = PipelineBuilder::new()
    ///     .source([1u32, 2, 3, 4, 5, 6, 7])
    ///     .aggregate_by(|x: &u32| x % 2, 2)
    ///     .sink()
    ///     .build()?
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(batches, [vec![1, 3], vec![2, 4], vec![5, 7], vec![6]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn aggregate_by<K, F>(self, key: F, size: usize) -> StageBuilder<Vec<T>>
    where
        F: Fn(&T) -> K + Send + Sync + 'static,
        K: Eq + Hash + Send + 'static,
    {
        let index = self.chain.stage_count;
        let what = "an `aggregate_by` stage";
        self.then(
            what,
            AggregateOptions::default(),
            move |prev, opts, chain| {
                if size == 0 {
                    chain.errors.push(BuildError::new(
                        "aggregate_by: the batch size must be at least 1",
                    ));
                }
                if opts.buffer == Some(0) {
                    chain
                        .errors
                        .push(BuildError::new("aggregate_by: buffer must be at least 1"));
                }
                let word = format!("aggregate_by({size}, drop_last={})", opts.drop_last);
                chain.shape.push(word);
                let name = opts
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("aggregate_by#{index}"));
                launch(prev, key, size.max(1), opts, name)
            },
        )
    }
}

fn launch<T, K, F>(
    prev: LaunchFn<T>,
    key: F,
    size: usize,
    opts: AggregateOptions,
    name: String,
) -> LaunchFn<Vec<T>>
where
    T: Send + 'static,
    F: Fn(&T) -> K + Send + Sync + 'static,
    K: Eq + Hash + Send + 'static,
{
    Box::new(move |l: &mut Launch, out_cap| {
        let input = prev(l, opts.buffer.unwrap_or(l.queue_capacity))?;
        let (lane, out_rx) = l.one_lane_stage(name, StageKind::Aggregate, out_cap);
        let lane = BucketLane {
            _guard: lane.guard,
            ctx: lane.ctx,
            input,
            output: lane.output,
            key,
            size,
            drop_last: opts.drop_last,
            buckets: Vec::new(),
            by_key: HashMap::new(),
            arrived: 0,
        };
        l.spawn_lane(lane.run());
        Ok(out_rx)
    })
}

/// The items of one key not yet sent, and their tags (resume tracking only).
struct Bucket<T> {
    items: Vec<T>,
    members: Vec<Tag>,
    /// When its oldest item arrived (the lane's count of items then).
    oldest: u64,
}

struct BucketLane<T, K, F> {
    /// First, so that it drops first (see `Lane::_guard`).
    _guard: LaneGuard,
    ctx: Arc<StageCtx>,
    input: Rx<T>,
    output: Tx<Vec<T>>,
    key: F,
    size: usize,
    drop_last: bool,
    /// In the order their keys were first seen this epoch.
    buckets: Vec<Bucket<T>>,
    by_key: HashMap<K, usize>,
    /// Items taken so far.
    arrived: u64,
}

impl<T, K, F> BucketLane<T, K, F>
where
    T: Send + 'static,
    F: Fn(&T) -> K + Send + Sync + 'static,
    K: Eq + Hash + Send + 'static,
{
    async fn run(mut self) {
        let mut turns = LaneTurns::default();
        loop {
            if self.ctx.should_stop() {
                break;
            }
            match self.input.recv().await {
                Ok(Msg::Item(item, tag)) => {
                    if !self.take(item, tag).await {
                        break;
                    }
                }
                Ok(Msg::EpochEnd) => {
                    if !self.flush().await || self.output.send(Msg::EpochEnd).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    if !self.ctx.run.stop_requested() {
                        self.flush().await;
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

    /// Puts one item in its bucket and sends the bucket if it is full. False to stop.
    async fn take(&mut self, item: T, tag: Tag) -> bool {
        let started = self.ctx.task_started();
        let key = {
            let _span = self.ctx.task_span().entered();
            catch_unwind(AssertUnwindSafe(|| (self.key)(&item)))
        };
        let ticks = StageCtx::elapsed(started);
        let key = match key {
            Ok(key) => key,
            Err(panic) => {
                self.ctx.task_ended(0, ticks, TaskOutcome::Panicked);
                self.ctx.resolve(tag, Outcome::Failed);
                return self
                    .ctx
                    .on_failure(ItemError::panic(&self.ctx.name, panic.as_ref()));
            }
        };
        self.ctx.task_ended(0, ticks, TaskOutcome::Succeeded);
        // Counted, so that a rate budget sees the items that passed, not only the failures.
        if !self.ctx.on_success() {
            return false;
        }
        let next = self.buckets.len();
        let index = *self.by_key.entry(key).or_insert(next);
        if index == next {
            self.buckets.push(Bucket {
                items: Vec::new(),
                members: Vec::new(),
                oldest: 0,
            });
        }
        let tracked = self.ctx.ledger.is_some();
        let bucket = &mut self.buckets[index];
        if bucket.items.is_empty() {
            bucket.oldest = self.arrived;
        }
        self.arrived += 1;
        bucket.items.push(item);
        if tracked {
            bucket.members.push(tag);
        }
        if bucket.items.len() < self.size {
            return true;
        }
        let items = std::mem::take(&mut bucket.items);
        let members = std::mem::take(&mut bucket.members);
        self.send(items, members).await
    }

    /// Sends (or, with `drop_last`, drops) every partial bucket and forgets the keys: no
    /// batch spans two epochs. False to stop.
    async fn flush(&mut self) -> bool {
        self.by_key.clear();
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort_by_key(|bucket| bucket.oldest);
        for bucket in buckets {
            if bucket.items.is_empty() {
                continue;
            }
            if self.drop_last {
                if let Some(ledger) = &self.ctx.ledger {
                    ledger.resolve_all(&bucket.members, Outcome::Filtered);
                }
            } else if !self.send(bucket.items, bucket.members).await {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, batch: Vec<T>, members: Vec<Tag>) -> bool {
        let tag = match &self.ctx.ledger {
            Some(ledger) => ledger.group(members),
            None => Tag::NONE,
        };
        let sent = self
            .output
            .send_or_pause(Msg::Item(batch, tag), || self.input.top_up())
            .await
            .is_ok();
        if sent {
            self.ctx.counters.lane(0).record_outputs(1);
        }
        sent
    }
}
