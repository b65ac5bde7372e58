//! The consumer's side of the pipeline: how long the code reading the pipeline (a training
//! loop) waited for each item, and how long it spent between two reads (its own step).
//!
//! A read that has to wait means the loader is behind; a consumer that never waits is the
//! slowest part itself. One clock reading when the item is handed over (which ends the wait
//! and, for an item that was already waiting, the previous step), and one more only when the
//! read has to wait (where the step ends and the wait begins). Only the consumer's
//! thread writes these counters; the statistics thread reads them, and also what is under
//! way (a wait or a step not yet ended), so that the series over time shows a long wait
//! while it lasts rather than all at once when it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::{Distribution, DurationStats, Histogram};
use crate::clock;

/// Counters of the consumer, written by the thread that reads the pipeline.
#[derive(Debug, Default)]
pub(crate) struct ConsumerCounters {
    waits: Histogram,
    steps: Histogram,
    /// Mirrors of [`ConsumerClock`]'s fields, for the statistics thread.
    waiting_since: AtomicU64,
    handed_at: AtomicU64,
}

impl ConsumerCounters {
    /// The wait and the step under way at tick `now` (zero when there is none).
    pub(crate) fn in_progress(&self, now: u64) -> (Duration, Duration) {
        let since = |t: u64| {
            if t == 0 {
                Duration::ZERO
            } else {
                clock::ticks_to_duration(now.saturating_sub(t))
            }
        };
        (
            since(self.waiting_since.load(Ordering::Relaxed)),
            since(self.handed_at.load(Ordering::Relaxed)),
        )
    }

    pub(crate) fn snapshot(&self) -> ConsumerStats {
        let summary = |h: &Histogram| {
            let mut d = Distribution::default();
            h.merge_into(&mut d);
            let total = clock::ticks_to_duration(d.sum_ticks().min(u128::from(u64::MAX)) as u64);
            (d.summary(), total)
        };
        let (wait, wait_total) = summary(&self.waits);
        let (step, step_total) = summary(&self.steps);
        ConsumerStats {
            items: wait.count,
            wait,
            wait_total,
            step,
            step_total,
        }
    }
}

/// Where the consumer is between reads; kept by the pipeline handle (one consumer at a time,
/// `&mut self`), so the clock readings need no synchronisation.
#[derive(Debug, Default)]
pub(crate) struct ConsumerClock {
    /// When the last item was handed over (0: none yet, or the consumer stopped reading).
    handed_at: u64,
    /// When the current read began waiting (0: not waiting).
    waiting_since: u64,
    /// A read began and has not had to wait yet ([`on_read`](Self::on_read)).
    lazy_read: bool,
}

impl ConsumerClock {
    /// The consumer asks for an item. The clock is read only if it has to wait
    /// ([`on_wait`](Self::on_wait)): an item already waiting is handed over with a wait of
    /// zero and the step ends at the hand-over, one clock reading instead of two. A read
    /// already under way (a stream polled again, a read after a timeout) goes on with the
    /// same wait.
    #[inline]
    pub(crate) fn on_read(&mut self) {
        if self.waiting_since == 0 {
            self.lazy_read = true;
        }
    }

    /// The read has to wait: the consumer's step ends and its wait begins now.
    #[inline]
    pub(crate) fn on_wait(&mut self, counters: &ConsumerCounters) {
        if !std::mem::take(&mut self.lazy_read) || self.waiting_since != 0 {
            return;
        }
        let now = clock::now().max(1);
        if self.handed_at != 0 {
            counters
                .steps
                .record_as(now.saturating_sub(self.handed_at), true);
        }
        self.waiting_since = now;
        self.mirror(counters);
    }

    fn mirror(&self, counters: &ConsumerCounters) {
        // At most one of the two is set: a step ends where a wait begins.
        let step = if self.waiting_since == 0 {
            self.handed_at
        } else {
            0
        };
        counters
            .waiting_since
            .store(self.waiting_since, Ordering::Relaxed);
        counters.handed_at.store(step, Ordering::Relaxed);
    }

    /// An item is handed over: the wait since [`on_read`](Self::on_read) ends.
    #[inline]
    pub(crate) fn on_item(&mut self, counters: &ConsumerCounters) {
        let now = clock::now().max(1);
        if self.waiting_since != 0 {
            counters
                .waits
                .record_as(now.saturating_sub(self.waiting_since), true);
        } else if std::mem::take(&mut self.lazy_read) {
            // Taken without waiting: the step ran until now, the wait was nil.
            if self.handed_at != 0 {
                counters
                    .steps
                    .record_as(now.saturating_sub(self.handed_at), true);
            }
            counters.waits.record_as(0, true);
        }
        self.waiting_since = 0;
        self.handed_at = now;
        self.mirror(counters);
    }

    /// The read ended without an item (the end of the stream, an epoch boundary, a
    /// failure): neither a wait nor the next step is counted.
    pub(crate) fn on_no_item(&mut self, counters: &ConsumerCounters) {
        if std::mem::take(&mut self.lazy_read) && self.handed_at != 0 {
            // A lazy read that found the end at once still ends the consumer's last step.
            let now = clock::now().max(1);
            counters
                .steps
                .record_as(now.saturating_sub(self.handed_at), true);
        }
        self.waiting_since = 0;
        self.handed_at = 0;
        self.mirror(counters);
    }
}

/// The consumer's view of a pipeline: per item handed out, how long the consumer waited for
/// it, and how long it worked between two reads.
///
/// The *wait* of an item runs from the call of `next()` (or the first poll of the stream)
/// to the moment the item is handed over; the first item's wait includes the pipeline's
/// start. The *step* runs from the moment an item is handed over to the next call: for a
/// training loop, the training step. Waits that end without an item (the end of the
/// stream, an epoch boundary) are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Items handed to the consumer.
    pub items: u64,
    /// The distribution of the wait per item.
    pub wait: DurationStats,
    /// The sum of the waits.
    pub wait_total: Duration,
    /// The distribution of the time between handing out an item and the next read
    /// (one fewer than the items if the consumer stopped after the last one).
    pub step: DurationStats,
    /// The sum of the steps.
    pub step_total: Duration,
}

impl ConsumerStats {
    /// The share of the consumer's time spent waiting for items: `wait / (wait + step)`,
    /// between 0 and 1 (0 when nothing was measured). Near 0: the pipeline keeps up.
    /// Well above 0: the consumer starves, and the pipeline's bottleneck is worth a look.
    pub fn wait_share(&self) -> f64 {
        let (wait, step) = (self.wait_total.as_secs_f64(), self.step_total.as_secs_f64());
        if wait + step <= 0.0 {
            0.0
        } else {
            wait / (wait + step)
        }
    }

    /// The mean time of one whole step as the consumer sees it: the wait for an item plus
    /// the work on it.
    pub fn mean_cycle(&self) -> Duration {
        self.wait.mean + self.step.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_steps_are_told_apart() {
        let counters = ConsumerCounters::default();
        let mut clock = ConsumerClock::default();
        for _ in 0..5 {
            clock.on_read();
            clock.on_wait(&counters);
            std::thread::sleep(Duration::from_millis(2));
            // A second poll of the same read does not restart its wait.
            clock.on_read();
            clock.on_wait(&counters);
            std::thread::sleep(Duration::from_millis(2));
            clock.on_item(&counters);
            std::thread::sleep(Duration::from_millis(12));
        }
        clock.on_read();
        clock.on_no_item(&counters);
        assert_eq!(
            counters.in_progress(clock::now()),
            (Duration::ZERO, Duration::ZERO)
        );
        let s = counters.snapshot();
        assert_eq!(s.items, 5);
        assert_eq!(s.step.count, 5);
        assert!(s.wait.mean >= Duration::from_millis(4), "{s:?}");
        assert!(s.step.mean >= Duration::from_millis(12), "{s:?}");
        let share = s.wait_total.as_secs_f64() / (s.wait_total + s.step_total).as_secs_f64();
        assert!((s.wait_share() - share).abs() < 1e-9, "{s:?}");
        assert!(s.wait_share() > 0.0 && s.wait_share() < 1.0, "{s:?}");
        // After the end of the stream, a new read starts afresh: no step is counted for it.
        clock.on_read();
        clock.on_wait(&counters);
        std::thread::sleep(Duration::from_millis(2));
        let (wait, step) = counters.in_progress(clock::now());
        assert!(wait >= Duration::from_millis(2) && step.is_zero());
        clock.on_no_item(&counters);
        assert_eq!(counters.snapshot().step.count, 5);
    }

    #[test]
    fn an_item_already_waiting_is_a_nil_wait_and_ends_the_step() {
        let counters = ConsumerCounters::default();
        let mut clock = ConsumerClock::default();
        clock.on_read();
        clock.on_item(&counters);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(5));
            clock.on_read(); // the item is there: no wait
            clock.on_item(&counters);
        }
        let s = counters.snapshot();
        assert_eq!(s.items, 4);
        assert_eq!(s.step.count, 3);
        assert!(s.step.mean >= Duration::from_millis(5), "{s:?}");
        assert_eq!(s.wait_total, Duration::ZERO, "{s:?}");
        // The last read finds the end at once: it still ends the last step.
        std::thread::sleep(Duration::from_millis(5));
        clock.on_read();
        clock.on_no_item(&counters);
        assert_eq!(counters.snapshot().step.count, 4);
    }

    #[test]
    fn nothing_measured_is_a_zero_share() {
        assert_eq!(ConsumerStats::default().wait_share(), 0.0);
    }
}
