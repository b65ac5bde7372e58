//! Per-stage counters: tasks, failures, outputs and the distribution of task times.
//!
//! Each lane records into its own shard; a snapshot adds the shards up. Counts are exact
//! (every task is one `fetch_add`), whatever the concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(unix)]
pub(crate) mod remote;

use super::histogram::{add, Distribution, DurationStats, Histogram};
use crate::clock;

/// At most this many shards per stage: lanes beyond share them (a shard is ~5 KiB).
const MAX_SHARDS: usize = 16;
/// A stage that has not started or ended has this as its start or end tick.
const UNSET: u64 = 0;

/// One lane's counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LaneCounters {
    tasks: AtomicU64,
    failures: AtomicU64,
    outputs: AtomicU64,
    task_time: Histogram,
    /// Busy time outside tasks (ticks).
    extra: AtomicU64,
}

/// Which of a lane's tasks are timed. A task shorter than [`SHORT_TASK`] costs about as
/// much as the two clock readings that time it (13 ns each on the development machine,
/// against a few hundred for a whole hop of an identity stage), so such tasks are timed one
/// in [`SAMPLE_EVERY`], and each timed one is recorded for itself and the untimed ones
/// before it: the task-time sums (busy time) and the distribution stay unbiased, the task
/// count stays exact, and a lane's untimed tail is recorded when it ends. A task that
/// takes longer makes the lane time every task again, from the next one.
#[derive(Debug)]
pub(crate) struct TaskSampler {
    /// Tasks since the last timed one.
    untimed: u64,
    /// Ticks of the last timed task ([`NOT_YET`] before the first: the first is timed).
    last: u64,
    /// [`SHORT_TASK_NS`] in ticks.
    short: u64,
}

/// Tasks below this (ns) are timed one in [`SAMPLE_EVERY`].
const SHORT_TASK_NS: f64 = 2_000.0;
const SAMPLE_EVERY: u64 = 8;
const NOT_YET: u64 = u64::MAX;

impl TaskSampler {
    pub(crate) fn new() -> Self {
        Self {
            untimed: 0,
            last: NOT_YET,
            short: (SHORT_TASK_NS / clock::ns_per_tick()) as u64,
        }
    }

    /// Whether to time the next task.
    #[inline]
    pub(crate) fn due(&self) -> bool {
        self.last >= self.short || self.untimed + 1 >= SAMPLE_EVERY
    }

    /// Counts a task that ended, timed (`Some(ticks)`) or not, into `lane`.
    #[inline]
    pub(crate) fn record(&mut self, lane: LaneRef<'_>, ticks: Option<u64>, failed: bool) {
        let c = lane.counters;
        add(&c.tasks, 1, lane.exclusive);
        if failed {
            add(&c.failures, 1, lane.exclusive);
        }
        match ticks {
            Some(t) => {
                c.task_time
                    .record_times(t, self.untimed + 1, lane.exclusive);
                self.untimed = 0;
                self.last = t;
            }
            None => self.untimed += 1,
        }
    }

    /// The lane ends: its untimed tasks since the last timed one are recorded as that one.
    pub(crate) fn finish(&mut self, lane: LaneRef<'_>) {
        if self.untimed > 0 && self.last != NOT_YET {
            lane.counters
                .task_time
                .record_times(self.last, self.untimed, lane.exclusive);
            self.untimed = 0;
        }
    }
}

/// The counters one lane records into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneRef<'a> {
    counters: &'a LaneCounters,
    /// This lane is the only writer of these counters.
    exclusive: bool,
}

impl LaneRef<'_> {
    /// Counts one task; `ticks` is its duration when the stage is timed.
    #[inline]
    pub(crate) fn record_task(self, ticks: Option<u64>, failed: bool) {
        let c = self.counters;
        add(&c.tasks, 1, self.exclusive);
        if failed {
            add(&c.failures, 1, self.exclusive);
        }
        if let Some(t) = ticks {
            c.task_time.record_as(t, self.exclusive);
        }
    }

    /// Counts time spent in the stage that is not a task of its own (an aggregator's flush).
    pub(crate) fn record_extra_time(self, ticks: u64) {
        add(&self.counters.extra, ticks, self.exclusive);
    }

    #[inline]
    pub(crate) fn record_outputs(self, n: u64) {
        add(&self.counters.outputs, n, self.exclusive);
    }
}

/// Live counters of one stage, updated by its lanes.
#[derive(Debug)]
pub(crate) struct StageCounters {
    lanes: Box<[LaneCounters]>,
    /// One shard per lane: each lane is the only writer of its own.
    exclusive: bool,
    /// Lanes `0..built_for` record into `lanes`; lanes a resize added beyond, into
    /// `overflow`, shared (so that an exclusive shard keeps its single writer).
    built_for: usize,
    overflow: Box<LaneCounters>,
    started: AtomicU64,
    ended: AtomicU64,
}

impl StageCounters {
    pub(crate) fn new(concurrency: usize) -> Self {
        let shards = concurrency.clamp(1, MAX_SHARDS);
        Self {
            lanes: (0..shards).map(|_| LaneCounters::default()).collect(),
            exclusive: concurrency <= shards,
            built_for: concurrency.max(1),
            overflow: Box::default(),
            started: AtomicU64::new(UNSET),
            ended: AtomicU64::new(UNSET),
        }
    }

    /// The counters lane `index` records into. A lane is polled by one thread at a time
    /// (and a thread that takes it over synchronises with the last one), so with a shard
    /// per lane each shard has a single writer.
    #[inline]
    pub(crate) fn lane(&self, index: usize) -> LaneRef<'_> {
        if index >= self.built_for {
            return LaneRef {
                counters: &self.overflow,
                exclusive: false,
            };
        }
        LaneRef {
            counters: &self.lanes[index % self.lanes.len()],
            exclusive: self.exclusive,
        }
    }

    pub(crate) fn mark_started(&self) {
        let _ = self.started.compare_exchange(
            UNSET,
            clock::now().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn mark_ended(&self) {
        let _ = self.ended.compare_exchange(
            UNSET,
            clock::now().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn tasks(&self) -> u64 {
        self.shards().map(|l| l.tasks.load(Ordering::Relaxed)).sum()
    }

    /// Items sent downstream so far.
    pub(crate) fn outputs(&self) -> u64 {
        self.shards()
            .map(|l| l.outputs.load(Ordering::Relaxed))
            .sum()
    }

    /// Busy ticks so far: the sum of task times (and time outside tasks), statistics on.
    pub(crate) fn busy_ticks(&self) -> u64 {
        self.shards()
            .map(|l| l.task_time.sum_ticks_u64() + l.extra.load(Ordering::Relaxed))
            .sum()
    }

    fn shards(&self) -> impl Iterator<Item = &LaneCounters> {
        self.lanes.iter().chain(std::iter::once(&*self.overflow))
    }

    /// A snapshot; `now` (ticks) ends the elapsed time of a stage still running.
    pub(crate) fn snapshot(
        &self,
        name: &str,
        kind: StageKind,
        concurrency: usize,
        now: u64,
    ) -> StageStats {
        let mut time = Distribution::default();
        let (mut tasks, mut failures, mut outputs, mut extra) = (0, 0, 0, 0u128);
        for lane in self.shards() {
            tasks += lane.tasks.load(Ordering::Relaxed);
            failures += lane.failures.load(Ordering::Relaxed);
            outputs += lane.outputs.load(Ordering::Relaxed);
            extra += u128::from(lane.extra.load(Ordering::Relaxed));
            lane.task_time.merge_into(&mut time);
        }
        let started = self.started.load(Ordering::Relaxed);
        let ended = match self.ended.load(Ordering::Relaxed) {
            UNSET => now,
            ended => ended,
        };
        let elapsed = if started == UNSET {
            Duration::ZERO
        } else {
            clock::ticks_to_duration(ended.saturating_sub(started))
        };
        StageStats {
            name: name.to_owned(),
            kind,
            concurrency,
            // A source has no tasks of its own: each item it produces counts as one.
            tasks: if kind == StageKind::Source {
                outputs
            } else {
                tasks
            },
            failures,
            outputs,
            busy: clock::ticks_to_duration(
                (time.sum_ticks() + extra).min(u128::from(u64::MAX)) as u64
            ),
            task_time: time.summary(),
            elapsed,
        }
    }
}

/// What kind of stage a [`StageStats`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// The source.
    Source,
    /// A `pipe` stage (any function shape).
    Pipe,
    /// An `aggregate` stage.
    Aggregate,
    /// A `disaggregate` stage.
    Disaggregate,
    /// A merge of several inputs into one stream.
    Merge,
    /// A route's router (items to branches) or its join (branches back into one stream).
    Route,
}

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageStats {
    /// Stage name.
    pub name: String,
    /// Stage kind.
    pub kind: StageKind,
    /// Items the stage may have in flight.
    pub concurrency: usize,
    /// Items taken in (for the source: items produced).
    pub tasks: u64,
    /// Items that failed (the function returned `Err` or panicked).
    pub failures: u64,
    /// Items sent downstream.
    pub outputs: u64,
    /// Total time spent in the stage function, summed over lanes. For the source: the time
    /// it ran less the time it waited for room in its output queue.
    pub busy: Duration,
    /// Distribution of the time of one task (one call of the stage function, failed calls
    /// included). Empty for the source and when statistics are off.
    pub task_time: DurationStats,
    /// How long the pipeline has been running (until now, or until it ended): the time
    /// [`busy_share`](Self::busy_share) compares with.
    pub elapsed: Duration,
}

impl StageStats {
    /// Mean time per task in the stage function.
    pub fn mean_task_time(&self) -> Duration {
        if self.task_time.count > 0 {
            self.task_time.mean
        } else if self.tasks == 0 {
            Duration::ZERO
        } else {
            self.busy.div_f64(self.tasks as f64)
        }
    }

    /// The share of its lanes' time the stage spent working: `busy / (elapsed × concurrency)`,
    /// between 0 and 1. The stage closest to 1 is the pipeline's bottleneck.
    pub fn busy_share(&self) -> f64 {
        let capacity = self.elapsed.as_secs_f64() * self.concurrency.max(1) as f64;
        if capacity <= 0.0 {
            0.0
        } else {
            (self.busy.as_secs_f64() / capacity).min(1.0)
        }
    }
}

#[cfg(test)]
mod sampler_tests {
    use super::*;

    /// Ticks of `ns` nanoseconds.
    fn ticks(ns: f64) -> u64 {
        (ns / clock::ns_per_tick()).round() as u64
    }

    /// Runs `durations` (ticks) through a sampler as one lane would; returns what was timed.
    fn run(counters: &StageCounters, durations: &[u64]) -> Vec<bool> {
        let mut sampler = TaskSampler::new();
        let timed = durations
            .iter()
            .map(|&d| {
                let due = sampler.due();
                sampler.record(counters.lane(0), due.then_some(d), false);
                due
            })
            .collect();
        sampler.finish(counters.lane(0));
        timed
    }

    fn histogram_count(counters: &StageCounters) -> u64 {
        let mut time = Distribution::default();
        counters.lanes[0].task_time.merge_into(&mut time);
        time.count()
    }

    #[test]
    fn short_tasks_are_timed_one_in_eight_and_counted_exactly() {
        let counters = StageCounters::new(1);
        let short = ticks(100.0);
        let timed = run(&counters, &vec![short; 100]);
        // The first task is timed (nothing is known yet), then one in eight.
        assert!(timed[0]);
        assert_eq!(timed.iter().filter(|&&t| t).count(), 1 + 99 / 8);
        assert_eq!(counters.tasks(), 100);
        // Every task is in the distribution, the untimed ones as the timed one after them
        // (and the tail as the last timed one): all durations equal, so the sum is exact.
        assert_eq!(histogram_count(&counters), 100);
        assert_eq!(counters.busy_ticks(), 100 * short);
    }

    #[test]
    fn a_long_task_makes_the_lane_time_every_task() {
        let counters = StageCounters::new(1);
        let (short, long) = (ticks(100.0), ticks(50_000.0));
        let mut durations = vec![short; 20];
        durations.extend([long; 5]);
        durations.extend([short; 3]);
        let timed = run(&counters, &durations);
        // After the first timed long task, every task is timed until a short one is seen.
        let first_long_timed = (20..25).find(|&i| timed[i]).unwrap();
        assert!(timed[first_long_timed + 1..=25].iter().all(|&t| t));
        assert!(
            !timed[26],
            "timing goes back to one in eight after a short task"
        );
        assert_eq!(counters.tasks(), 28);
        assert_eq!(histogram_count(&counters), 28);
    }

    #[test]
    fn a_lane_with_slow_tasks_times_all_of_them() {
        let counters = StageCounters::new(1);
        let slow = ticks(2_000_000.0);
        let timed = run(&counters, &[slow, slow, slow]);
        assert_eq!(timed, [true, true, true]);
        assert_eq!(counters.busy_ticks(), 3 * slow);
    }
}
