//! Statistics reports through `tracing`: one event per stage and per queue, at the build's
//! report interval and once when the pipeline ends.
//!
//! Events are `INFO` with target `pipeline_runtime::stats` and a `report` field
//! (`"periodic"` or `"final"`), so a subscriber can route or silence them.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::table::duration;
use super::{PipelineStats, StageKind, StatsRegistry};

/// The `tracing` target of every statistics event.
pub const TARGET: &str = "pipeline_runtime::stats";

/// Logs one snapshot: a line per stage, a line per queue, and the bottleneck.
pub(crate) fn log(stats: &PipelineStats, report: &'static str) {
    for s in &stats.stages {
        let t = &s.task_time;
        if s.kind == StageKind::Source {
            tracing::info!(
                target: TARGET,
                report,
                stage = %s.name,
                tasks = s.tasks,
                failures = s.failures,
                outputs = s.outputs,
                busy_share = s.busy_share(),
                "[{}] produced {} items; busy {:.0}%",
                s.name,
                s.outputs,
                s.busy_share() * 100.0,
            );
            continue;
        }
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
    for a in &stats.accounts {
        tracing::info!(
            target: TARGET,
            report,
            epoch = a.epoch,
            sourced = a.sourced,
            delivered = a.delivered,
            failed = a.failed,
            filtered = a.filtered,
            in_flight = a.in_flight,
            checksum = a.checksum,
            balanced = a.balanced(),
            "[ledger] {a}"
        );
    }
    let c = &stats.consumer;
    if c.items > 0 {
        let verdict = match (stats.consumer_bound(), stats.bottleneck()) {
            (true, _) => "; bottleneck: the consumer".to_owned(),
            (false, Some(b)) if stats.stages.len() > 1 => format!("; bottleneck: `{}`", b.name),
            _ => String::new(),
        };
        tracing::info!(
            target: TARGET,
            report,
            consumer_items = c.items,
            wait_mean_us = c.wait.mean.as_secs_f64() * 1e6,
            wait_p50_us = c.wait.p50.as_secs_f64() * 1e6,
            wait_p90_us = c.wait.p90.as_secs_f64() * 1e6,
            step_mean_us = c.step.mean.as_secs_f64() * 1e6,
            wait_share = c.wait_share(),
            "[consumer] waited {} per item (p90 {}; {:.0}% of its time), step {}{verdict}",
            duration(c.wait.mean),
            duration(c.wait.p90),
            c.wait_share() * 100.0,
            duration(c.step.mean),
        );
    }
    if stats.consumer_bound() {
        tracing::info!(
            target: TARGET,
            report,
            bottleneck = "consumer",
            "bottleneck: the consumer (the queue it reads is nearly always full)"
        );
    } else if let (Some(b), true) = (stats.bottleneck(), stats.stages.len() > 1) {
        tracing::info!(
            target: TARGET,
            report,
            bottleneck = %b.name,
            "bottleneck: `{}` (busy {:.0}%)",
            b.name,
            b.busy_share() * 100.0,
        );
    }
}

/// How often the statistics thread samples the queues' occupancy: 500 samples a second
/// resolve occupancy to a few percent within a second, for well under 1% of a core.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// The body of the statistics thread: samples queue occupancy, and logs a report every
/// `interval` (if any), until `stop` is dropped or signalled.
pub(crate) fn run_stats_thread(
    registry: Arc<StatsRegistry>,
    interval: Option<Duration>,
    stop: Receiver<()>,
) {
    let mut next_report = interval.map(|i| Instant::now() + i);
    loop {
        match stop.recv_timeout(SAMPLE_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        registry.sample();
        registry.mark_if_due();
        if let (Some(at), Some(interval)) = (next_report, interval) {
            let now = Instant::now();
            if now >= at {
                log(&registry.snapshot(), "periodic");
                // From now, not from `at`: a late report is not followed by a hurried one.
                next_report = Some(now + interval);
            }
        }
    }
}
