//! Per-queue counters: items, time blocked in put and get, and time spent empty.
//!
//! Only an operation that has to wait reads the clock; one that succeeds at once counts as a
//! wait of zero. Time empty is taken at the transitions: a get that leaves the queue empty
//! notes the time, and the next put adds the interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::{Distribution, DurationStats, Histogram};
use crate::clock;

const NOT_EMPTY: u64 = u64::MAX;

/// One side (put or get) of a queue, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Side {
    ops: AtomicU64,
    /// Waits of the operations that blocked (the others waited zero).
    waits: Histogram,
}

impl Side {
    fn distribution(&self) -> Distribution {
        let mut d = Distribution::default();
        self.waits.merge_into(&mut d);
        let ops = self.ops.load(Ordering::Relaxed);
        d.add_zeros(ops.saturating_sub(d.count()));
        d
    }
}

/// Live counters of one queue, shared by its producers and consumers.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    put: Side,
    get: Side,
    created: u64,
    empty_since: AtomicU64,
    empty_total: AtomicU64,
}

impl QueueCounters {
    pub(crate) fn new() -> Self {
        let created = clock::now();
        Self {
            put: Side::default(),
            get: Side::default(),
            created,
            empty_since: AtomicU64::new(created),
            empty_total: AtomicU64::new(0),
        }
    }

    /// Counts an item put; `waited` is the time blocked (ticks) if the queue was full.
    #[inline]
    pub(crate) fn on_put(&self, waited: Option<u64>) {
        self.put.ops.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = waited {
            self.put.waits.record(w);
        }
        if self.empty_since.load(Ordering::Relaxed) != NOT_EMPTY {
            let since = self.empty_since.swap(NOT_EMPTY, Ordering::Relaxed);
            if since != NOT_EMPTY {
                let now = clock::now();
                self.empty_total
                    .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            }
        }
    }

    /// Counts an item taken; `waited` as for puts; `now_empty` if it was the last one.
    #[inline]
    pub(crate) fn on_get(&self, waited: Option<u64>, now_empty: bool) {
        self.get.ops.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = waited {
            self.get.waits.record(w);
        }
        if now_empty && self.empty_since.load(Ordering::Relaxed) == NOT_EMPTY {
            let _ = self.empty_since.compare_exchange(
                NOT_EMPTY,
                clock::now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Total time producers were blocked on this queue (ticks).
    pub(crate) fn put_wait_ticks(&self) -> u64 {
        self.put
            .distribution()
            .sum_ticks()
            .min(u128::from(u64::MAX)) as u64
    }

    /// A snapshot; `until` (ticks) is now, or when the pipeline ended.
    pub(crate) fn snapshot(&self, after: &str, capacity: usize, until: u64) -> QueueStats {
        let elapsed_ticks = until.saturating_sub(self.created);
        let mut empty = self.empty_total.load(Ordering::Relaxed);
        let since = self.empty_since.load(Ordering::Relaxed);
        if since != NOT_EMPTY {
            empty += until.saturating_sub(since);
        }
        let occupancy = if elapsed_ticks == 0 {
            0.0
        } else {
            (1.0 - empty as f64 / elapsed_ticks as f64).clamp(0.0, 1.0)
        };
        QueueStats {
            after: after.to_owned(),
            capacity,
            items: self.get.ops.load(Ordering::Relaxed),
            put_wait: self.put.distribution().summary(),
            get_wait: self.get.distribution().summary(),
            occupancy,
            elapsed: clock::ticks_to_duration(elapsed_ticks),
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
    /// Time since the queue was created (until now, or until the pipeline ended).
    pub elapsed: Duration,
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
    fn counts_and_waits() {
        let q = QueueCounters::new();
        for i in 0..100u64 {
            q.on_put(if i % 10 == 0 { Some(1_000_000) } else { None });
        }
        for _ in 0..100 {
            q.on_get(None, false);
        }
        let s = q.snapshot("a", 4, clock::now());
        assert_eq!(s.items, 100);
        assert_eq!(s.put_wait.count, 100);
        assert_eq!(s.get_wait.count, 100);
        assert_eq!(s.get_wait.max, Duration::ZERO);
        assert_eq!(s.put_wait.p50, Duration::ZERO, "90% of puts did not wait");
        assert!(s.put_wait.p99 > Duration::ZERO, "10% did");
        assert_eq!(q.put_wait_ticks(), 10 * 1_000_000);
    }

    #[test]
    fn occupancy_follows_empty_and_non_empty_periods() {
        let q = QueueCounters::new();
        let start = q.created;
        // Empty from creation for 100 ticks, then non-empty for 300, then empty for 100.
        q.empty_since.store(start, Ordering::Relaxed);
        q.empty_total.store(0, Ordering::Relaxed);
        let s = q.snapshot("a", 1, start + 100);
        assert_eq!(s.occupancy, 0.0, "never held an item");
        q.empty_since.store(NOT_EMPTY, Ordering::Relaxed);
        q.empty_total.store(100, Ordering::Relaxed);
        q.empty_since.store(start + 400, Ordering::Relaxed);
        let s = q.snapshot("a", 1, start + 500);
        assert!((s.occupancy - 0.6).abs() < 1e-9, "{}", s.occupancy);
    }

    #[test]
    fn a_put_ends_an_empty_period_and_a_last_get_starts_one() {
        let q = QueueCounters::new();
        q.on_put(None);
        assert_eq!(q.empty_since.load(Ordering::Relaxed), NOT_EMPTY);
        q.on_get(None, false);
        assert_eq!(q.empty_since.load(Ordering::Relaxed), NOT_EMPTY);
        q.on_get(None, true);
        assert_ne!(q.empty_since.load(Ordering::Relaxed), NOT_EMPTY);
    }
}
