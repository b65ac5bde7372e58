//! What autotune changed, as the statistics show it.

use std::fmt;
use std::time::Duration;

/// What a [`TuneDecision`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TuneTarget {
    /// A stage's concurrency.
    Stage(String),
    /// The default pool's number of threads.
    Pool,
}

impl fmt::Display for TuneTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuneTarget::Stage(name) => write!(f, "stage `{name}`"),
            TuneTarget::Pool => f.write_str("the default pool"),
        }
    }
}

/// One change made by autotune (or by [`Pipeline::resize`](crate::Pipeline::resize)), in
/// [`PipelineStats::tuning`](super::PipelineStats::tuning).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TuneDecision {
    /// When, from the pipeline's start.
    pub at: Duration,
    /// What changed.
    pub target: TuneTarget,
    /// Concurrency (or threads) before.
    pub from: usize,
    /// Concurrency (or threads) after.
    pub to: usize,
    /// Why, in words (`"busiest stage, 97% busy"`, `"no gain: reverted"`, `"user"`).
    pub reason: String,
    /// Sink throughput (items/s into the last stage) measured before the change.
    pub throughput: f64,
}

impl fmt::Display for TuneDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2}s: {} {} -> {} ({}; {:.0} items/s)",
            self.at.as_secs_f64(),
            self.target,
            self.from,
            self.to,
            self.reason,
            self.throughput
        )
    }
}
