//! Stage kinds, one file each, and what they share: the per-stage context that counts
//! tasks, applies the failure budget and knows when to stop.

pub(crate) mod aggregate;
pub(crate) mod pipe;
pub(crate) mod source;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{ItemError, StageFailureKind};
use crate::failure::{FailureScope, RecentErrors};
use crate::run_state::RunState;
use crate::stats::{StageCounters, StageKind, StageStats};

/// One stage's identity, counters and failure accounting, shared by its lanes.
#[derive(Debug)]
pub(crate) struct StageCtx {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    pub(crate) concurrency: usize,
    pub(crate) counters: StageCounters,
    scope: Arc<FailureScope>,
    recent: RecentErrors,
    tripped: AtomicBool,
    pub(crate) run: Arc<RunState>,
}

impl StageCtx {
    pub(crate) fn new(
        name: String,
        kind: StageKind,
        concurrency: usize,
        scope: Arc<FailureScope>,
        run: Arc<RunState>,
    ) -> Self {
        Self {
            name,
            kind,
            concurrency,
            counters: StageCounters::default(),
            scope,
            recent: RecentErrors::default(),
            tripped: AtomicBool::new(false),
            run,
        }
    }

    /// True once the pipeline is stopping or this stage has ended on a failure.
    pub(crate) fn should_stop(&self) -> bool {
        self.run.stop_requested() || self.tripped.load(Ordering::Relaxed)
    }

    /// Counts a successful invocation. Returns false if the stage must stop (a rate budget
    /// can trip on a success, once the probation is over).
    pub(crate) fn on_success(&self) -> bool {
        match self.scope.record_success() {
            None => true,
            Some(state) => {
                self.trip(state);
                false
            }
        }
    }

    /// Counts, logs and keeps a failed item. Returns false if the stage must stop.
    pub(crate) fn on_failure(&self, error: ItemError) -> bool {
        tracing::warn!(stage = %self.name, "item failed: {error}");
        self.recent.push(error);
        match self.scope.record_failure() {
            None => true,
            Some(state) => {
                self.trip(state);
                false
            }
        }
    }

    fn trip(&self, (failures, invocations): (u64, u64)) {
        if !self.tripped.swap(true, Ordering::Relaxed) {
            // A count budget does not count invocations on the hot path; report this
            // stage's own tasks instead.
            let invocations = if self.scope.counts_invocations() {
                invocations
            } else {
                self.snapshot().tasks
            };
            let kind = self
                .scope
                .tripped_kind((failures, invocations), self.recent.take());
            self.run.fail(&self.name, kind);
        }
    }

    /// Ends the stage with a terminal failure that is not a budget (aggregator, source).
    pub(crate) fn fail_stage(&self, kind: StageFailureKind) {
        if !self.tripped.swap(true, Ordering::Relaxed) {
            self.run.fail(&self.name, kind);
        }
    }

    pub(crate) fn snapshot(&self) -> StageStats {
        self.counters
            .snapshot(&self.name, self.kind, self.concurrency)
    }
}

/// How many items a lane handles in a row before it yields its thread to other lanes.
pub(crate) const LANE_BUDGET: u32 = 128;
