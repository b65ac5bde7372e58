//! A lock-free log-linear histogram for streaming percentiles of durations.
//!
//! Values (clock ticks) fall into buckets 16 to a power of two, so a bucket is at most 1/16
//! of its value wide and a percentile read from the bucket's midpoint is within about 3%.
//! Recording is one relaxed `fetch_add` on a bucket plus one on the sum; each lane of a
//! stage records into its own histogram, and a snapshot merges them, so the hot path takes
//! no lock and shares no cache line between lanes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values of 2^44 ticks (hours) and more share the last bucket; the maximum stays exact.
const MAX_EXP: u32 = 44;
const BUCKETS: usize = SUB + (MAX_EXP - SUB_BITS + 1) as usize * SUB;

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The midpoint of a bucket's range of values.
fn midpoint(index: usize) -> f64 {
    if index < SUB {
        return index as f64;
    }
    let group = (index / SUB) as u32;
    let exp = group + SUB_BITS - 1;
    let width = 1u64 << (exp - SUB_BITS);
    let low = (SUB + index % SUB) as u64 * width;
    low as f64 + width as f64 / 2.0
}

/// Adds `n` to a counter: a plain load and store when this thread is its only writer (the
/// readers, snapshots, tolerate a stale value), else an atomic add.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64, exclusive: bool) {
    if exclusive {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A histogram that many threads may record into at once.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records a value; any thread may call this at any time.
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        self.record_as(value, false);
    }

    /// Records a value; `exclusive` promises that no other thread records into this
    /// histogram concurrently (one lane's own shard), which allows plain stores instead of
    /// locked read-modify-writes.
    #[inline]
    pub(crate) fn record_as(&self, value: u64, exclusive: bool) {
        self.record_times(value, 1, exclusive);
    }

    /// Records `value` as `times` observations: one timed task standing for the untimed
    /// ones beside it (see `stats::stage::TaskSampler`).
    #[inline]
    pub(crate) fn record_times(&self, value: u64, times: u64, exclusive: bool) {
        add(&self.buckets[bucket_of(value)], times, exclusive);
        add(&self.sum, value.wrapping_mul(times), exclusive);
        if value > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(value, Ordering::Relaxed);
        }
    }

    /// Adds this histogram's counts to `into`.
    /// The sum of the recorded values (ticks), wrapping like the counter.
    pub(crate) fn sum_ticks_u64(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    pub(crate) fn merge_into(&self, into: &mut Distribution) {
        if into.counts.is_empty() {
            into.counts = vec![0; BUCKETS];
        }
        for (total, b) in into.counts.iter_mut().zip(self.buckets.iter()) {
            let n = b.load(Ordering::Relaxed);
            *total += n;
            into.count += n;
        }
        into.sum += u128::from(self.sum.load(Ordering::Relaxed));
        into.max = into.max.max(self.max.load(Ordering::Relaxed));
    }
}

#[cfg(unix)]
impl Histogram {
    /// The non-empty buckets as (index, count), the sum and the maximum (a process region's
    /// worker sends them to its parent).
    pub(crate) fn export(&self) -> (Vec<(u16, u64)>, u64, u64) {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u16, n))
            })
            .collect();
        let sum = self.sum.load(Ordering::Relaxed);
        (buckets, sum, self.max.load(Ordering::Relaxed))
    }

    /// Adds counts exported by [`export`](Self::export) (by any thread).
    pub(crate) fn absorb(&self, buckets: &[(u16, u64)], sum: u64, max: u64) {
        for &(i, n) in buckets {
            if let Some(b) = self.buckets.get(usize::from(i)) {
                b.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum.fetch_add(sum, Ordering::Relaxed);
        self.max.fetch_max(max, Ordering::Relaxed);
    }
}

/// Merged counts of one or more histograms, in ticks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Distribution {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Distribution {
    /// Adds `n` values of zero (operations that did not wait at all).
    pub(crate) fn add_zeros(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[0] += n;
        self.count += n;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn sum_ticks(&self) -> u128 {
        self.sum
    }

    /// The value (in ticks) below which a share `q` of the values fall.
    pub(crate) fn quantile_ticks(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return midpoint(i).min(self.max as f64);
            }
        }
        self.max as f64
    }

    /// Mean, percentiles and maximum, converted from ticks to time.
    pub(crate) fn summary(&self) -> DurationStats {
        let time = |ticks: f64| Duration::from_nanos(clock::ticks_to_ns(ticks).round() as u64);
        DurationStats {
            count: self.count,
            mean: if self.count == 0 {
                Duration::ZERO
            } else {
                time(self.sum as f64 / self.count as f64)
            },
            p50: time(self.quantile_ticks(0.50)),
            p90: time(self.quantile_ticks(0.90)),
            p99: time(self.quantile_ticks(0.99)),
            max: time(self.max as f64),
        }
    }
}

/// Mean, median, 90th and 99th percentiles and maximum of a set of durations.
///
/// Percentiles come from a log-linear histogram and are within about 3% of the exact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurationStats {
    /// How many durations were recorded.
    pub count: u64,
    /// Their mean (exact).
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantiles(values: impl IntoIterator<Item = u64>) -> Distribution {
        let h = Histogram::default();
        for v in values {
            h.record(v);
        }
        let mut d = Distribution::default();
        h.merge_into(&mut d);
        d
    }

    fn assert_close(got: f64, want: f64, tolerance: f64) {
        let err = (got - want).abs() / want;
        assert!(err <= tolerance, "got {got}, want {want} (error {err:.4})");
    }

    #[test]
    fn buckets_cover_values_in_order_and_contain_them() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, (1 << 44) - 1, u64::MAX / 2]) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went back");
            assert!(b < BUCKETS);
            last = b;
            if v < 1 << 44 {
                // The midpoint is within half a bucket (1/32 of the value) of v.
                let mid = midpoint(b);
                assert!(
                    (mid - v as f64).abs() <= (v as f64 / 32.0).max(0.5),
                    "{v}: {mid}"
                );
            }
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // 1..=100_000: the exact p50, p90, p99 are 50_000, 90_000, 99_000.
        let d = quantiles(1..=100_000);
        assert_eq!(d.count(), 100_000);
        assert_eq!(d.sum_ticks(), 100_000 * 100_001 / 2);
        assert_close(d.quantile_ticks(0.5), 50_000.0, 0.035);
        assert_close(d.quantile_ticks(0.9), 90_000.0, 0.035);
        assert_close(d.quantile_ticks(0.99), 99_000.0, 0.035);
        assert_eq!(d.quantile_ticks(1.0), 100_000.0);
    }

    #[test]
    fn percentiles_of_a_skewed_distribution() {
        // 98 fast values and 2 slow ones per hundred: p50 and p90 are fast, p99 is slow.
        let values = (0..10_000u64).map(|i| if i % 100 < 98 { 1_000 } else { 1_000_000 });
        let d = quantiles(values);
        assert_close(d.quantile_ticks(0.5), 1_000.0, 0.035);
        assert_close(d.quantile_ticks(0.9), 1_000.0, 0.035);
        assert_close(d.quantile_ticks(0.99), 1_000_000.0, 0.035);
    }

    #[test]
    fn zeros_count_and_pull_percentiles_down() {
        let mut d = quantiles([5_000; 10]);
        d.add_zeros(90);
        assert_eq!(d.count(), 100);
        assert_eq!(d.quantile_ticks(0.5), 0.0);
        assert_close(d.quantile_ticks(0.95), 5_000.0, 0.035);
    }

    #[test]
    fn merging_histograms_recorded_by_many_threads() {
        let h = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for v in 0..10_000u64 {
                        h.record(v * 4 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut d = Distribution::default();
        h.merge_into(&mut d);
        assert_eq!(d.count(), 40_000, "no increment lost");
        assert_eq!(d.max, 39_999);
        assert_close(d.quantile_ticks(0.5), 20_000.0, 0.035);
    }

    #[test]
    fn empty_distribution_is_all_zero() {
        let s = Distribution::default().summary();
        assert_eq!(s, DurationStats::default());
    }
}
