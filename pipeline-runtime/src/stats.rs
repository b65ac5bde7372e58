//! Per-stage counters: tasks, failures, outputs and time spent in the stage function.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters of one stage, updated by its lanes.
#[derive(Debug, Default)]
pub(crate) struct StageCounters {
    tasks: AtomicU64,
    failures: AtomicU64,
    outputs: AtomicU64,
    busy_ns: AtomicU64,
}

impl StageCounters {
    pub(crate) fn record_task(&self, busy: Duration, failed: bool) {
        self.tasks.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_outputs(&self, n: u64) {
        self.outputs.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, name: &str, kind: StageKind, concurrency: usize) -> StageStats {
        StageStats {
            name: name.to_owned(),
            kind,
            concurrency,
            // A source has no tasks of its own: each item it produces counts as one.
            tasks: if kind == StageKind::Source {
                self.outputs.load(Ordering::Relaxed)
            } else {
                self.tasks.load(Ordering::Relaxed)
            },
            failures: self.failures.load(Ordering::Relaxed),
            outputs: self.outputs.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed)),
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
}

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, PartialEq)]
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
    /// Total time spent in the stage function, summed over lanes.
    pub busy: Duration,
}

impl StageStats {
    /// Mean time per task in the stage function.
    pub fn mean_task_time(&self) -> Duration {
        if self.tasks == 0 {
            Duration::ZERO
        } else {
            self.busy / self.tasks as u32
        }
    }
}

/// A snapshot of every stage of a pipeline, in pipeline order.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStats {
    /// One entry per stage, source first.
    pub stages: Vec<StageStats>,
}

impl fmt::Display for PipelineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<34} {:>5} {:>10} {:>8} {:>10} {:>12} {:>10}",
            "stage", "conc", "tasks", "failed", "outputs", "mean task", "busy"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:<34} {:>5} {:>10} {:>8} {:>10} {:>12} {:>10}",
                truncate(&s.name, 34),
                s.concurrency,
                s.tasks,
                s.failures,
                s.outputs,
                format!("{:.1?}", s.mean_task_time()),
                format!("{:.2?}", s.busy),
            )?;
        }
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
