//! Per-queue counters: time blocked in put and get, and how often the queue held items.
//!
//! Nothing here runs for an operation that succeeds at once: items put and taken are the
//! producing stage's outputs and the consuming stage's tasks (counted by the stages anyway),
//! and only a put or get that has to wait reads the clock. Occupancy is sampled by the
//! pipeline's statistics thread, not tracked on every put and get, whose transitions from
//! empty to non-empty would cost a shared write per item.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::{add, Distribution, DurationStats, Histogram};
use crate::clock;

/// Waits of one side of a queue, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Waits(Histogram);

/// A counter on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Live counters of one queue, shared by its producers, its consumers and the sampler.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    put_waits: Waits,
    get_waits: Waits,
    /// Items taken by the pipeline's consumer (the sink queue only; one writer).
    taken: Padded,
    samples: AtomicU64,
    non_empty: AtomicU64,
    created: u64,
}

impl QueueCounters {
    pub(crate) fn new() -> Self {
        Self {
            put_waits: Waits::default(),
            get_waits: Waits::default(),
            taken: Padded::default(),
            samples: AtomicU64::new(0),
            non_empty: AtomicU64::new(0),
            created: clock::now(),
        }
    }

    /// A put that found the queue full waited `ticks`.
    pub(crate) fn on_put_wait(&self, ticks: u64) {
        self.put_waits.0.record(ticks);
    }

    /// A get that found the queue empty waited `ticks`.
    pub(crate) fn on_get_wait(&self, ticks: u64) {
        self.get_waits.0.record(ticks);
    }

    /// The consumer took an item (the caller is the queue's only consumer).
    #[inline]
    pub(crate) fn on_take(&self) {
        add(&self.taken.0, 1, true);
    }

    /// Items the consumer took.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.0.load(Ordering::Relaxed)
    }

    /// One look at the queue by the sampler: did it hold an item?
    pub(crate) fn sample(&self, non_empty: bool) {
        add(&self.samples, 1, true);
        if non_empty {
            add(&self.non_empty, 1, true);
        }
    }

    /// Total time producers were blocked on this queue (ticks).
    pub(crate) fn put_wait_ticks(&self) -> u64 {
        let mut d = Distribution::default();
        self.put_waits.0.merge_into(&mut d);
        d.sum_ticks().min(u128::from(u64::MAX)) as u64
    }

    /// A snapshot: `puts` and `gets` are the items put and taken (from the stages around
    /// the queue), `until` (ticks) is now or when the pipeline ended.
    pub(crate) fn snapshot(
        &self,
        after: &str,
        capacity: usize,
        (puts, gets): (u64, u64),
        until: u64,
    ) -> QueueStats {
        let waits = |w: &Waits, ops: u64| {
            let mut d = Distribution::default();
            w.0.merge_into(&mut d);
            d.add_zeros(ops.saturating_sub(d.count()));
            d.summary()
        };
        let samples = self.samples.load(Ordering::Relaxed);
        QueueStats {
            after: after.to_owned(),
            capacity,
            items: gets,
            put_wait: waits(&self.put_waits, puts),
            get_wait: waits(&self.get_waits, gets),
            samples,
            occupancy: if samples == 0 {
                0.0
            } else {
                self.non_empty.load(Ordering::Relaxed) as f64 / samples as f64
            },
            elapsed: clock::ticks_to_duration(until.saturating_sub(self.created)),
            reader: None,
        }
    }
}

/// A snapshot of one queue: the queue that carries a stage's outputs to the next stage (or,
/// after the last stage, to the consumer).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The stage that puts into this queue.
    pub after: String,
    /// The queue's capacity.
    pub capacity: usize,
    /// Items taken out of the queue.
    pub items: u64,
    /// How long a put waited for room (zero when the queue was not full).
    pub put_wait: DurationStats,
    /// How long a get waited for an item (zero when the queue was not empty).
    pub get_wait: DurationStats,
    /// Share of the time the queue held at least one item, between 0 and 1 (SPDL's "data
    /// readiness"). Near 1: the next stage always had work waiting, so it (or something after
    /// it) is slower than what feeds it. Near 0: the next stage starves.
    pub occupancy: f64,
    /// How many times occupancy was sampled (every 2 ms while the pipeline runs): few
    /// samples, a rough figure.
    pub samples: u64,
    /// Time since the queue was created (until now, or until the pipeline ended).
    pub elapsed: Duration,
    /// The index (in [`PipelineStats::stages`](super::PipelineStats::stages)) of the stage
    /// that takes from this queue; `None` for the consumer's queue and for a queue read by a
    /// merge or a route's join, which read several.
    pub reader: Option<usize>,
}

impl QueueStats {
    /// Items taken per second over the queue's life.
    pub fn items_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.items as f64 / secs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_count_every_operation_and_blocked_ones_are_timed() {
        let q = QueueCounters::new();
        for _ in 0..10 {
            q.on_put_wait(1_000_000);
        }
        q.on_get_wait(500);
        let s = q.snapshot("a", 4, (100, 100), clock::now());
        assert_eq!(s.items, 100);
        assert_eq!(s.put_wait.count, 100);
        assert_eq!(s.get_wait.count, 100);
        assert_eq!(s.put_wait.p50, Duration::ZERO, "90% of puts did not wait");
        assert!(s.put_wait.p99 > Duration::ZERO, "10% did");
        assert!(s.get_wait.max > Duration::ZERO);
        assert_eq!(q.put_wait_ticks(), 10 * 1_000_000);
    }

    #[test]
    fn occupancy_is_the_share_of_samples_that_found_items() {
        let q = QueueCounters::new();
        assert_eq!(q.snapshot("a", 1, (0, 0), clock::now()).occupancy, 0.0);
        for i in 0..100 {
            q.sample(i % 4 != 0);
        }
        let s = q.snapshot("a", 1, (0, 0), clock::now());
        assert!((s.occupancy - 0.75).abs() < 1e-9, "{}", s.occupancy);
    }

    #[test]
    fn takes_are_counted() {
        let q = QueueCounters::new();
        for _ in 0..7 {
            q.on_take();
        }
        assert_eq!(q.taken(), 7);
    }
}
