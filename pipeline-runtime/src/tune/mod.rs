//! Tuning: running a pipeline well without hand-tuning it. A running pipeline can be resized
//! ([`Pipeline::resize`](crate::Pipeline::resize) and
//! [`resize_pool`](crate::Pipeline::resize_pool), which fail with a [`TuneError`]);
//! autotune ([`SinkBuilder::autotune`](crate::SinkBuilder::autotune)) resizes its stages and
//! the default pool on its own, within a [thread limit](crate::SinkBuilder::thread_limit);
//! a [memory limit](crate::SinkBuilder::memory_limit) bounds the bytes of the items in
//! flight, each sized by its [`ItemBytes`] or a function of yours, and reported as
//! [`MemoryStats`]; stall detection warns or fails when nothing moves. Decisions and
//! warnings are logged through `tracing` under the target [`TARGET`]. The guide's chapter
//! "Tuning" explains each.
//!
//! Inside: resizing (`resize`), the autotune controller (`controller`) and stall detection
//! (`stall`), both driven by one supervisor thread (`supervisor`) over the pipeline's
//! resizable parts (`running`); the memory limit is enforced by admission at the source
//! (`crate::memory`).

pub(crate) mod controller;
pub(crate) mod resize;
pub(crate) mod running;
pub(crate) mod stall;
pub(crate) mod supervisor;

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::stats::TuneDecision;
use crate::sync::lock;

pub use crate::memory::{ItemBytes, MemoryStats};

/// The `tracing` target of autotune's decisions and of stall warnings.
pub const TARGET: &str = "pipeline_runtime::tune";

/// Autotune's upper bound for a stage given no `concurrency_auto` bounds.
pub(crate) const DEFAULT_AUTO_MAX: usize = 64;

/// Autotune, memory limit and stall detection, as set on the sink.
#[derive(Debug, Clone, Default)]
pub(crate) struct TuneSettings {
    pub(crate) autotune: bool,
    /// Most threads autotune may give the default pool (default: the CPUs).
    pub(crate) thread_limit: Option<usize>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) stall_warn: Option<Duration>,
    pub(crate) stall_fail: Option<Duration>,
    /// How often the controller looks (default 50 ms).
    pub(crate) interval: Option<Duration>,
}

impl TuneSettings {
    /// Whether the supervisor thread runs (and stages record their calls under way).
    pub(crate) fn supervised(&self) -> bool {
        self.autotune || self.stall_warn.is_some() || self.stall_fail.is_some()
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_millis(50))
    }
}

/// A resize that cannot be done, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuneError(String);

impl TuneError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for TuneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TuneError {}

/// Most decisions kept for the statistics (the oldest go first).
const KEPT_DECISIONS: usize = 512;

/// The decisions made so far, shared by the supervisor, the pipeline and its statistics.
#[derive(Debug, Default)]
pub(crate) struct TuneLog {
    decisions: Mutex<Vec<TuneDecision>>,
}

impl TuneLog {
    pub(crate) fn record(&self, decision: TuneDecision) {
        tracing::info!(
            target: TARGET,
            target_kind = %decision.target,
            from = decision.from,
            to = decision.to,
            reason = %decision.reason,
            throughput = decision.throughput,
            "autotune: {decision}"
        );
        let mut decisions = lock(&self.decisions);
        if decisions.len() == KEPT_DECISIONS {
            decisions.remove(0);
        }
        decisions.push(decision);
    }

    pub(crate) fn decisions(&self) -> Vec<TuneDecision> {
        lock(&self.decisions).clone()
    }
}
