//! The statistics over time: a bounded series of readings of the cumulative counters, taken
//! by the statistics thread, from which rates per interval are derived ([`StatsSeries`]).
//!
//! Each reading (a *mark*) holds running totals, not rates, so thinning the series keeps it
//! exact: when it reaches [`MAX_MARKS`], every other mark is dropped and the interval
//! doubles. A run of any length is described by at most that many intervals, the whole run
//! at an even resolution, and the rates of the intervals add up to the run's totals.

use std::time::Duration;

use super::{PipelineStats, StageKind};
use crate::clock;

/// At most this many marks are kept (a few KiB per stage).
pub(crate) const MAX_MARKS: usize = 256;
/// The first interval between marks; it doubles each time the series is thinned.
const FIRST_INTERVAL: Duration = Duration::from_millis(50);

/// Running totals at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Mark {
    /// Time since the pipeline started.
    at: Duration,
    /// Per stage: tasks, busy time.
    stages: Vec<(u64, Duration)>,
    /// Per queue: occupancy samples taken, and how many found an item.
    queues: Vec<(u64, u64)>,
    /// The consumer: items taken, total wait, total step time.
    consumer: (u64, Duration, Duration),
}

impl Mark {
    /// `consumer`: the consumer's wait and step under way, counted as far as they went.
    fn of(stats: &PipelineStats, (wait, step): (Duration, Duration)) -> Self {
        Self {
            at: stats.elapsed,
            stages: stats.stages.iter().map(|s| (s.tasks, s.busy)).collect(),
            queues: stats
                .queues
                .iter()
                .map(|q| (q.samples, (q.occupancy * q.samples as f64).round() as u64))
                .collect(),
            consumer: (
                stats.consumer.items,
                stats.consumer.wait_total + wait,
                stats.consumer.step_total + step,
            ),
        }
    }
}

/// Keeps the marks; owned by the statistics registry.
#[derive(Debug)]
pub(crate) struct SeriesRecorder {
    marks: Vec<Mark>,
    /// The stages' identities, from the first snapshot.
    stages: Vec<(String, StageKind, usize)>,
    queues: Vec<String>,
    interval: Duration,
    /// Clock tick at which the next mark is due (0: not started).
    next_due: u64,
}

impl Default for SeriesRecorder {
    fn default() -> Self {
        Self {
            marks: Vec::new(),
            stages: Vec::new(),
            queues: Vec::new(),
            interval: FIRST_INTERVAL,
            next_due: 0,
        }
    }
}

impl SeriesRecorder {
    /// Starts afresh: a mark of zeros at time zero for the pipeline's stages and queues.
    pub(crate) fn start(&mut self, stats: &PipelineStats) {
        *self = Self::default();
        self.stages = stats
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.kind, s.concurrency))
            .collect();
        self.queues = stats.queues.iter().map(|q| q.after.clone()).collect();
        self.marks.push(Mark {
            at: Duration::ZERO,
            stages: vec![(0, Duration::ZERO); stats.stages.len()],
            queues: vec![(0, 0); stats.queues.len()],
            consumer: (0, Duration::ZERO, Duration::ZERO),
        });
        self.schedule(clock::now());
    }

    /// Whether a mark is due at tick `now`.
    pub(crate) fn is_due(&self, now: u64) -> bool {
        self.next_due != 0 && now >= self.next_due
    }

    /// Adds a mark read from `stats` (and the consumer's wait and step under way), thinning
    /// the series if it is full.
    pub(crate) fn record(
        &mut self,
        stats: &PipelineStats,
        consumer: (Duration, Duration),
        now: u64,
    ) {
        if self.next_due == 0 || stats.stages.len() != self.stages.len() {
            return;
        }
        let mark = Mark::of(stats, consumer);
        match self.marks.last() {
            // The same moment twice (the end right after a periodic mark): keep the later.
            Some(last) if last.at >= mark.at => {
                let n = self.marks.len();
                if n > 1 {
                    self.marks[n - 1] = mark;
                }
            }
            _ => self.marks.push(mark),
        }
        if self.marks.len() >= MAX_MARKS {
            // Keep marks 0, 2, 4, … and the latest: each kept interval spans two old ones.
            let last = self.marks.len() - 1;
            let mut i = 0;
            self.marks.retain(|_| {
                let keep = i % 2 == 0 || i == last;
                i += 1;
                keep
            });
            self.interval *= 2;
        }
        self.schedule(now);
    }

    fn schedule(&mut self, now: u64) {
        let ticks = self.interval.as_nanos() as f64 / clock::ns_per_tick();
        self.next_due = now.saturating_add(ticks as u64).max(1);
    }

    /// The rates between consecutive marks.
    pub(crate) fn series(&self) -> StatsSeries {
        let pairs: Vec<(&Mark, &Mark)> = self.marks.windows(2).map(|w| (&w[0], &w[1])).collect();
        let secs = |a: &Mark, b: &Mark| (b.at.saturating_sub(a.at)).as_secs_f64();
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, (name, kind, concurrency))| {
                let lanes = (*concurrency).max(1) as f64;
                StageSeries {
                    name: name.clone(),
                    kind: *kind,
                    concurrency: *concurrency,
                    items_per_sec: pairs
                        .iter()
                        .map(|(a, b)| rate(b.stages[i].0 - a.stages[i].0, secs(a, b)))
                        .collect(),
                    busy_share: pairs
                        .iter()
                        .map(|(a, b)| {
                            let busy = b.stages[i].1.saturating_sub(a.stages[i].1);
                            share(busy.as_secs_f64(), secs(a, b) * lanes)
                        })
                        .collect(),
                }
            })
            .collect();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, after)| QueueSeries {
                after: after.clone(),
                occupancy: pairs
                    .iter()
                    .map(|(a, b)| {
                        let (s0, n0) = a.queues[i];
                        let (s1, n1) = b.queues[i];
                        let samples = s1.saturating_sub(s0);
                        (samples > 0).then(|| share(n1.saturating_sub(n0) as f64, samples as f64))
                    })
                    .collect(),
            })
            .collect();
        let consumer = ConsumerSeries {
            items_per_sec: pairs
                .iter()
                .map(|(a, b)| rate(b.consumer.0 - a.consumer.0, secs(a, b)))
                .collect(),
            wait_share: pairs
                .iter()
                .map(|(a, b)| {
                    let wait = b.consumer.1.saturating_sub(a.consumer.1).as_secs_f64();
                    let step = b.consumer.2.saturating_sub(a.consumer.2).as_secs_f64();
                    share(wait, wait + step)
                })
                .collect(),
        };
        StatsSeries {
            starts: pairs.iter().map(|(a, _)| a.at).collect(),
            ends: pairs.iter().map(|(_, b)| b.at).collect(),
            stages,
            queues,
            consumer,
        }
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        0.0
    } else {
        (part / whole).clamp(0.0, 1.0)
    }
}

/// A pipeline's statistics over time: the run cut into intervals (at most a few hundred,
/// evenly spaced, longer for longer runs), and per interval each stage's throughput and busy
/// share, each queue's occupancy and the consumer's wait. Recorded while statistics are on;
/// read it with [`Pipeline::stats_series`](crate::Pipeline::stats_series), draw it with
/// [`Pipeline::write_report`](crate::Pipeline::write_report).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct StatsSeries {
    /// Where each interval starts, as time since the pipeline started.
    pub starts: Vec<Duration>,
    /// Where each interval ends.
    pub ends: Vec<Duration>,
    /// One entry per stage, source first, in the order of [`PipelineStats::stages`].
    pub stages: Vec<StageSeries>,
    /// One entry per queue, in the order of [`PipelineStats::queues`].
    pub queues: Vec<QueueSeries>,
    /// The consumer.
    pub consumer: ConsumerSeries,
}

impl StatsSeries {
    /// How many intervals the series has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True before the first interval is complete.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// One stage over time; every vector has one value per interval of its [`StatsSeries`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageSeries {
    /// Stage name.
    pub name: String,
    /// Stage kind.
    pub kind: StageKind,
    /// Items the stage may have in flight.
    pub concurrency: usize,
    /// Tasks completed per second (for the source: items produced).
    pub items_per_sec: Vec<f64>,
    /// Share of the stage's lanes busy in the stage function, between 0 and 1.
    pub busy_share: Vec<f64>,
}

/// One queue over time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueSeries {
    /// The stage that puts into this queue.
    pub after: String,
    /// Share of the occupancy samples that found an item, between 0 and 1; `None` for an
    /// interval without samples (a queue is sampled while the stage that fills it runs).
    pub occupancy: Vec<Option<f64>>,
}

/// The consumer over time.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ConsumerSeries {
    /// Items handed to the consumer per second.
    pub items_per_sec: Vec<f64>,
    /// Share of the consumer's time spent waiting for items, between 0 and 1.
    pub wait_share: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ConsumerStats, StageStats};

    const NONE: (Duration, Duration) = (Duration::ZERO, Duration::ZERO);

    fn stats(at_ms: u64, tasks: u64) -> PipelineStats {
        let at = Duration::from_millis(at_ms);
        PipelineStats {
            stages: vec![StageStats {
                name: "s".into(),
                kind: StageKind::Pipe,
                concurrency: 2,
                tasks,
                failures: 0,
                outputs: tasks,
                // Both lanes busy half the time.
                busy: at,
                task_time: Default::default(),
                elapsed: at,
            }],
            queues: Vec::new(),
            consumer: ConsumerStats::default(),
            elapsed: at,
            tuning: Vec::new(),
            pool_threads: 0,
            memory: None,
            accounts: Vec::new(),
        }
    }

    #[test]
    fn rates_come_from_the_differences_of_the_totals() {
        let mut r = SeriesRecorder::default();
        r.start(&stats(0, 0));
        r.record(&stats(100, 10), NONE, 1);
        r.record(&stats(300, 50), NONE, 2);
        let s = r.series();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.ends,
            [Duration::from_millis(100), Duration::from_millis(300)]
        );
        let items = &s.stages[0].items_per_sec;
        assert!((items[0] - 100.0).abs() < 1e-6 && (items[1] - 200.0).abs() < 1e-6);
        assert!(s.stages[0]
            .busy_share
            .iter()
            .all(|&b| (b - 0.5).abs() < 1e-6));
    }

    #[test]
    fn thinning_keeps_the_series_bounded_and_its_totals_exact() {
        let mut r = SeriesRecorder::default();
        r.start(&stats(0, 0));
        for i in 1..=10 * MAX_MARKS as u64 {
            r.record(&stats(i * 10, i * 3), NONE, i);
        }
        let s = r.series();
        assert!(s.len() < MAX_MARKS, "{}", s.len());
        assert!(s.len() > MAX_MARKS / 4, "{}", s.len());
        assert!(r.interval > FIRST_INTERVAL);
        // Integrating the rates over the intervals gives back the total.
        let total: f64 = (0..s.len())
            .map(|i| s.stages[0].items_per_sec[i] * (s.ends[i] - s.starts[i]).as_secs_f64())
            .sum();
        let last = s.ends.last().unwrap().as_millis() as f64 / 10.0 * 3.0;
        assert!((total - last).abs() < 1e-6, "{total} vs {last}");
    }
}
