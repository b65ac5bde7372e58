//! Statistics reports through `tracing`: one event per stage and per queue, at the build's
//! report interval and once when the pipeline ends.
//!
//! Events are `INFO` with target `pipeline_runtime::stats` and a `report` field
//! (`"periodic"` or `"final"`), so a subscriber can route or silence them.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::table::duration;
use super::{PipelineStats, StatsRegistry};

/// The `tracing` target of every statistics event.
pub const TARGET: &str = "pipeline_runtime::stats";

/// Logs one snapshot: a line per stage, a line per queue, and the bottleneck.
pub(crate) fn log(stats: &PipelineStats, report: &'static str) {
    for s in &stats.stages {
        let t = &s.task_time;
        tracing::info!(
            target: TARGET,
            report,
            stage = %s.name,
            tasks = s.tasks,
            failures = s.failures,
            outputs = s.outputs,
            mean_us = t.mean.as_secs_f64() * 1e6,
            p50_us = t.p50.as_secs_f64() * 1e6,
            p90_us = t.p90.as_secs_f64() * 1e6,
            p99_us = t.p99.as_secs_f64() * 1e6,
            busy_share = s.busy_share(),
            "[{}] completed {} tasks ({} failed); task time mean {}, p50 {}, p90 {}, p99 {}; \
             busy {:.0}%",
            s.name,
            s.tasks,
            s.failures,
            duration(s.mean_task_time()),
            duration(t.p50),
            duration(t.p90),
            duration(t.p99),
            s.busy_share() * 100.0,
        );
    }
    for q in &stats.queues {
        tracing::info!(
            target: TARGET,
            report,
            queue = %q.after,
            items = q.items,
            items_per_sec = q.items_per_sec(),
            occupancy = q.occupancy,
            put_wait_mean_us = q.put_wait.mean.as_secs_f64() * 1e6,
            put_wait_p99_us = q.put_wait.p99.as_secs_f64() * 1e6,
            get_wait_mean_us = q.get_wait.mean.as_secs_f64() * 1e6,
            get_wait_p99_us = q.get_wait.p99.as_secs_f64() * 1e6,
            "[{} queue] {} items ({:.1}/s); waits: put mean {} p90 {} p99 {}, get mean {} \
             p90 {} p99 {}; occupancy {:.0}%",
            q.after,
            q.items,
            q.items_per_sec(),
            duration(q.put_wait.mean),
            duration(q.put_wait.p90),
            duration(q.put_wait.p99),
            duration(q.get_wait.mean),
            duration(q.get_wait.p90),
            duration(q.get_wait.p99),
            q.occupancy * 100.0,
        );
    }
    if stats.stages.len() > 1 {
        if let Some(b) = stats.bottleneck() {
            tracing::info!(
                target: TARGET,
                report,
                bottleneck = %b.name,
                consumer_bound = stats.consumer_bound(),
                "bottleneck: `{}` (busy {:.0}%){}",
                b.name,
                b.busy_share() * 100.0,
                if stats.consumer_bound() {
                    "; the consumer is slower still"
                } else {
                    ""
                },
            );
        }
    }
}

/// The body of the reporter thread: a report every `interval` until `stop` is dropped or
/// signalled.
pub(crate) fn run_reporter(registry: Arc<StatsRegistry>, interval: Duration, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => log(&registry.snapshot(), "periodic"),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
