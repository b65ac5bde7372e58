//! Statistics: what a running pipeline measures about itself, to find the stage that holds
//! it back. Per stage, task counts, failures and task times ([`StageStats`]); per queue,
//! put and get waits and occupancy ([`QueueStats`]); the consumer's wait and step time
//! ([`ConsumerStats`]); all of it as one snapshot ([`PipelineStats`], from
//! [`Pipeline::stats`](crate::Pipeline::stats)) or over time ([`StatsSeries`]). The same
//! figures are logged through `tracing` under the target [`TARGET`], at the sink's
//! `report_interval` and when the pipeline ends, and drawn by
//! [`Pipeline::write_report`](crate::Pipeline::write_report). Autotune's decisions are kept
//! here too ([`TuneDecision`]).

mod consumer;
mod histogram;
mod queue;
pub(crate) mod report;
mod series;
mod stage;
pub(crate) mod svg;
mod table;
mod tuning;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::resume::accounts::EpochAccount;
pub(crate) use consumer::ConsumerClock;
pub use consumer::ConsumerStats;
pub use histogram::DurationStats;
pub(crate) use queue::QueueCounters;
pub use queue::QueueStats;
pub use report::TARGET;
pub use series::{ConsumerSeries, QueueSeries, StageSeries, StatsSeries};
#[cfg(unix)]
pub(crate) use stage::remote::RemoteCounts;
pub(crate) use stage::{StageCounters, TaskSampler};
pub use stage::{StageKind, StageStats};
pub use tuning::{TuneDecision, TuneTarget};

use crate::clock;
use crate::sync::lock;
use consumer::ConsumerCounters;
use series::SeriesRecorder;

/// A snapshot of a whole pipeline: every stage, every queue between them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PipelineStats {
    /// One entry per stage, source first.
    pub stages: Vec<StageStats>,
    /// One entry per queue, in pipeline order: in a chain, `queues[i]` carries the outputs of
    /// `stages[i]` (a route's router feeds one queue per branch; [`QueueStats::reader`] says
    /// who reads each); the last one feeds the consumer. Empty when statistics are off.
    pub queues: Vec<QueueStats>,
    /// The code reading the pipeline: how long it waited for items, and how long it worked
    /// on each. Empty when statistics are off.
    pub consumer: ConsumerStats,
    /// Time since the pipeline started (until now, or until it ended).
    pub elapsed: Duration,
    /// Every change of a stage's concurrency or of the default pool's size, by autotune or
    /// by [`Pipeline::resize`](crate::Pipeline::resize), oldest first (the last 512).
    pub tuning: Vec<TuneDecision>,
    /// Threads of the default pool now.
    pub pool_threads: usize,
    /// The memory limit, when `memory_limit` is set.
    pub memory: Option<crate::tune::MemoryStats>,
    /// The ledger's accounts, one per epoch, oldest first (see
    /// [`Pipeline::accounts`](crate::Pipeline::accounts)): kept whether statistics are on
    /// or off.
    pub accounts: Vec<EpochAccount>,
}

impl PipelineStats {
    /// The stage with the highest [busy share](StageStats::busy_share).
    pub fn busiest_stage(&self) -> Option<&StageStats> {
        self.stages
            .iter()
            .filter(|s| s.tasks > 0 && !s.busy.is_zero())
            .max_by(|a, b| a.busy_share().total_cmp(&b.busy_share()))
    }

    /// The stage that limits throughput: the busiest one, if it was busy at least half the
    /// time and the consumer is not the slowest part (see
    /// [`consumer_bound`](Self::consumer_bound)).
    pub fn bottleneck(&self) -> Option<&StageStats> {
        if self.consumer_bound() {
            return None;
        }
        self.busiest_stage().filter(|s| s.busy_share() >= 0.5)
    }

    /// True when the queue feeding the consumer held items at least 90% of the time (over
    /// at least 20 samples): the code reading the pipeline, not a stage, is the slowest part.
    pub fn consumer_bound(&self) -> bool {
        self.queues
            .last()
            .is_some_and(|q| q.occupancy >= 0.9 && q.samples >= 20)
    }
}

/// Looks at a queue: how many messages it holds (`None` once it is gone).
pub(crate) type QueueLen = Box<dyn Fn() -> Option<usize> + Send + Sync>;

/// A queue, as the statistics know it.
pub(crate) struct QueueEntry {
    /// The stage that puts into it; `None` when that stage puts into several (a router).
    pub(crate) writer: Option<usize>,
    /// The stage that takes from it; `None` when its reader counts what it takes (the
    /// consumer, a merge, a route's join).
    pub(crate) reader: Option<usize>,
    pub(crate) after: String,
    pub(crate) capacity: usize,
    pub(crate) counters: Arc<QueueCounters>,
    pub(crate) len: QueueLen,
}

impl std::fmt::Debug for QueueEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueEntry")
            .field("after", &self.after)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// A stage, as the statistics know it: its identity and the counters its lanes update.
#[derive(Debug)]
pub(crate) struct StageEntry {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    /// Its target concurrency now (it changes when the stage is resized).
    pub(crate) concurrency: Arc<AtomicUsize>,
    pub(crate) counters: Arc<StageCounters>,
}

/// Everything a snapshot reads, shared by the pipeline handle and the reporter thread.
#[derive(Debug)]
pub(crate) struct StatsRegistry {
    stages: Mutex<Vec<StageEntry>>,
    queues: Mutex<Vec<QueueEntry>>,
    /// Written by the consumer's thread only.
    pub(crate) consumer: ConsumerCounters,
    series: Mutex<SeriesRecorder>,
    started: AtomicU64,
    ended: AtomicU64,
}

impl Default for StatsRegistry {
    fn default() -> Self {
        Self {
            stages: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
            consumer: ConsumerCounters::default(),
            series: Mutex::new(SeriesRecorder::default()),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }
}

impl StatsRegistry {
    /// `series`: record the statistics over time (statistics on).
    pub(crate) fn start(&self, stages: Vec<StageEntry>, queues: Vec<QueueEntry>, series: bool) {
        self.started.store(clock::now().max(1), Ordering::Relaxed);
        *lock(&self.stages) = stages;
        *lock(&self.queues) = queues;
        if series {
            let first = self.snapshot();
            lock(&self.series).start(&first);
        }
    }

    /// Adds a mark to the series over time if one is due (the statistics thread calls this
    /// at every sample).
    pub(crate) fn mark_if_due(&self) {
        let now = clock::now();
        if !lock(&self.series).is_due(now) {
            return;
        }
        let stats = self.snapshot();
        let under_way = self.consumer.in_progress(now);
        lock(&self.series).record(&stats, under_way, now);
    }

    /// The statistics over time, so far.
    pub(crate) fn series(&self) -> StatsSeries {
        lock(&self.series).series()
    }

    /// One occupancy sample of every queue.
    pub(crate) fn sample(&self) {
        for q in lock(&self.queues).iter() {
            if let Some(len) = (q.len)() {
                q.counters.sample(len > 0);
            }
        }
    }

    /// Messages in each queue now, in pipeline order (`None` for a queue gone).
    pub(crate) fn queue_lens(&self) -> Vec<Option<usize>> {
        lock(&self.queues).iter().map(|q| (q.len)()).collect()
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Relaxed) != 0
    }

    /// Freezes the elapsed time at now (the first call only), and closes the series over
    /// time with a last mark.
    pub(crate) fn mark_ended(&self) {
        if self.started.load(Ordering::Relaxed) != 0 {
            let now = clock::now().max(1);
            let first = self
                .ended
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if first {
                // The last mark holds the final totals, which leave out the wait that found
                // the end of the stream.
                let stats = self.snapshot();
                lock(&self.series).record(&stats, (Duration::ZERO, Duration::ZERO), now);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> PipelineStats {
        let until = match self.ended.load(Ordering::Relaxed) {
            0 => clock::now(),
            ended => ended,
        };
        let started = self.started.load(Ordering::Relaxed);
        let mut stages: Vec<StageStats> = lock(&self.stages)
            .iter()
            .map(|s| {
                let concurrency = s.concurrency.load(Ordering::Relaxed);
                s.counters.snapshot(&s.name, s.kind, concurrency, until)
            })
            .collect();
        let queues = lock(&self.queues);
        // A source's busy time: the time it ran less the time it waited for room.
        for q in queues.iter() {
            if let Some(source) = q.writer.and_then(|w| stages.get_mut(w)) {
                if source.kind == StageKind::Source {
                    let waited = clock::ticks_to_duration(q.counters.put_wait_ticks());
                    source.busy = source.elapsed.saturating_sub(waited);
                }
            }
        }
        let elapsed = if started == 0 {
            Duration::ZERO
        } else {
            clock::ticks_to_duration(until.saturating_sub(started))
        };
        // Busy shares compare with the whole run: a stage that finished early (a source that
        // filled its queue at once) was not busy for the rest of it.
        for stage in &mut stages {
            stage.elapsed = elapsed;
        }
        // Items put into a queue are its writer's outputs; items taken, its reader's tasks,
        // or what a reader that counts them took (the consumer, a merge, a route's join).
        let queues = queues
            .iter()
            .map(|q| {
                let gets = match q.reader {
                    Some(r) => stages.get(r).map_or(0, |s| s.tasks),
                    None => q.counters.taken(),
                };
                let puts = match q.writer {
                    Some(w) => stages.get(w).map_or(0, |s| s.outputs),
                    None => gets,
                };
                let mut stats = q
                    .counters
                    .snapshot(&q.after, q.capacity, (puts, gets), until);
                stats.reader = q.reader;
                stats
            })
            .collect();
        PipelineStats {
            stages,
            queues,
            consumer: self.consumer.snapshot(),
            elapsed,
            tuning: Vec::new(),
            pool_threads: 0,
            memory: None,
            accounts: Vec::new(),
        }
    }
}
