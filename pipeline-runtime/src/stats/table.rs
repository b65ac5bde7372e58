//! The human-readable report: a table of stages, a table of queues, and a line naming the
//! bottleneck.

use std::fmt;
use std::time::Duration;

use super::{PipelineStats, StageKind};

/// Widest name column before names are cut.
const MAX_NAME: usize = 40;

impl fmt::Display for PipelineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bottleneck = self.bottleneck().map(|s| s.name.as_str());
        let width = self
            .stages
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp("queue after".len(), MAX_NAME);
        writeln!(
            f,
            "{:<width$} {:>4} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>5}",
            "stage", "conc", "tasks", "failed", "outputs", "mean", "p50", "p90", "p99", "busy"
        )?;
        for s in &self.stages {
            let timed = s.task_time.count > 0;
            let time = |d: Duration| if timed { duration(d) } else { "-".into() };
            let mean = if s.kind == StageKind::Source || s.tasks == 0 {
                "-".into()
            } else {
                duration(s.mean_task_time())
            };
            let marker = if Some(s.name.as_str()) == bottleneck && self.stages.len() > 1 {
                "  <- bottleneck"
            } else {
                ""
            };
            writeln!(
                f,
                "{:<width$} {:>4} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>5}{marker}",
                truncate(&s.name, width),
                s.concurrency,
                s.tasks,
                s.failures,
                s.outputs,
                mean,
                time(s.task_time.p50),
                time(s.task_time.p90),
                time(s.task_time.p99),
                percent(s.busy_share()),
            )?;
        }
        if !self.queues.is_empty() {
            writeln!(
                f,
                "\n{:<width$} {:>4} {:>9} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9}",
                "queue after",
                "cap",
                "items",
                "items/s",
                "occup",
                "put mean",
                "put p99",
                "get mean",
                "get p99"
            )?;
            for q in &self.queues {
                writeln!(
                    f,
                    "{:<width$} {:>4} {:>9} {:>10.1} {:>6} {:>9} {:>9} {:>9} {:>9}",
                    truncate(&q.after, width),
                    q.capacity,
                    q.items,
                    q.items_per_sec(),
                    percent(q.occupancy),
                    duration(q.put_wait.mean),
                    duration(q.put_wait.p99),
                    duration(q.get_wait.mean),
                    duration(q.get_wait.p99),
                )?;
            }
        }
        if !self.accounts.is_empty() {
            writeln!(f)?;
        }
        for account in &self.accounts {
            writeln!(f, "ledger {account}")?;
        }
        let summary = self.summary_lines();
        if !summary.is_empty() {
            writeln!(f)?;
        }
        for line in summary {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl PipelineStats {
    /// The sentences under the tables: the consumer's wait, then the bottleneck.
    pub(crate) fn summary_lines(&self) -> Vec<String> {
        self.consumer_line()
            .into_iter()
            .chain(self.verdict())
            .collect()
    }

    /// How long the consumer waited for items, when it took any.
    pub(crate) fn consumer_line(&self) -> Option<String> {
        let c = &self.consumer;
        if c.items == 0 {
            return None;
        }
        let mut text = format!(
            "the consumer waited {} per item (p50 {}, p90 {}; {} of its time) over {} items",
            duration(c.wait.mean),
            duration(c.wait.p50),
            duration(c.wait.p90),
            percent(c.wait_share()),
            c.items
        );
        if c.step.count > 0 {
            text.push_str(&format!("; its own step took {}", duration(c.step.mean)));
        }
        Some(text)
    }

    /// One sentence naming what limits throughput, when the figures say so.
    fn verdict(&self) -> Option<String> {
        if self.consumer_bound() {
            let q = self.queues.last()?;
            return Some(format!(
                "bottleneck: the consumer (the queue it reads held items {} of the time)",
                percent(q.occupancy)
            ));
        }
        let stage = self.busiest_stage()?;
        let index = self.stages.iter().position(|s| s.name == stage.name)?;
        if self.bottleneck().is_none() {
            return Some(format!(
                "no stage is saturated (the busiest, `{}`, was busy {} of the time over {} \
                 lane{}): the source, the hand-offs between stages or the threads available \
                 limit throughput",
                stage.name,
                percent(stage.busy_share()),
                stage.concurrency,
                if stage.concurrency == 1 { "" } else { "s" }
            ));
        }
        let mut text = format!(
            "bottleneck: `{}` (busy {} of the time over {} lane{})",
            stage.name,
            percent(stage.busy_share()),
            stage.concurrency,
            if stage.concurrency == 1 { "" } else { "s" }
        );
        if let Some(input) = index.checked_sub(1).and_then(|i| self.queues.get(i)) {
            text.push_str(&format!(
                "; its input queue held items {} of the time",
                percent(input.occupancy)
            ));
        }
        Some(text)
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// A duration in the unit that suits it, at most 4 significant digits.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns == 0.0 {
        "0".into()
    } else if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
