//! How a pipeline fails: the failure budgets (how many failed items a stage, or the whole
//! pipeline, tolerates), the counters that check them, and the error a pipeline ends with
//! when a stage fails for good.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

mod error_types;
#[cfg(unix)]
mod remote;
pub use error_types::{BoxError, BudgetScope, BuildError, ItemError};
#[cfg(unix)]
pub use remote::{RemoteFailureKind, RemotePipelineError, RemoteStageFailure};

/// How many failed items are tolerated before the pipeline ends with an error.
///
/// Counting follows SPDL: a count trips when failures exceed it (`Count(0)` allows none);
/// a rate trips when `failures / invocations > rate`, checked only once `min_invocations`
/// items have been tried, so that a few early failures do not end a long run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MaxFailures {
    /// Never end the pipeline because of failed items (they are still counted and logged).
    #[default]
    Unlimited,
    /// End the pipeline when more than this many items have failed.
    Count(u64),
    /// End the pipeline when more than this share of invocations failed, once at least
    /// `min_invocations` invocations were made. `rate` is in `(0, 1]`.
    Rate {
        /// Largest tolerated share of failed invocations.
        rate: f64,
        /// Invocations before the rate is first checked.
        min_invocations: u64,
    },
}

impl MaxFailures {
    /// A rate with SPDL's probation of 100 invocations.
    pub fn rate(rate: f64) -> Self {
        MaxFailures::Rate {
            rate,
            min_invocations: 100,
        }
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), BuildError> {
        match *self {
            MaxFailures::Rate { rate, .. } if !(rate > 0.0 && rate <= 1.0) => Err(BuildError::new(
                format!("{what}: a failure rate must be in (0, 1], got {rate}"),
            )),
            _ => Ok(()),
        }
    }

    fn exceeded(&self, failures: u64, invocations: u64) -> bool {
        match *self {
            MaxFailures::Unlimited => false,
            MaxFailures::Count(max) => failures > max,
            MaxFailures::Rate {
                rate,
                min_invocations,
            } => {
                invocations >= min_invocations.max(1) && failures as f64 > rate * invocations as f64
            }
        }
    }
}

impl fmt::Display for MaxFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxFailures::Unlimited => f.write_str("unlimited"),
            MaxFailures::Count(n) => write!(f, "at most {n} failures"),
            MaxFailures::Rate {
                rate,
                min_invocations,
            } => write!(
                f,
                "at most {:.1}% failures after {min_invocations} invocations",
                rate * 100.0
            ),
        }
    }
}

/// Counters for one budget: a stage's own, or the pipeline-wide one shared by stages.
#[derive(Debug)]
pub(crate) struct FailureScope {
    budget: MaxFailures,
    scope: BudgetScope,
    invocations: AtomicU64,
    failures: AtomicU64,
}

impl FailureScope {
    pub(crate) fn new(budget: MaxFailures, scope: BudgetScope) -> Self {
        Self {
            budget,
            scope,
            invocations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Whether invocations must be counted here (only rates look at them).
    pub(crate) fn counts_invocations(&self) -> bool {
        matches!(self.budget, MaxFailures::Rate { .. })
    }

    /// Records a successful invocation; returns the tripped state if the rate is now exceeded.
    pub(crate) fn record_success(&self) -> Option<(u64, u64)> {
        if !self.counts_invocations() {
            return None;
        }
        let invocations = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = self.failures.load(Ordering::Relaxed);
        self.budget
            .exceeded(failures, invocations)
            .then_some((failures, invocations))
    }

    /// Records a failure; returns the tripped state if the budget is now exceeded.
    pub(crate) fn record_failure(&self) -> Option<(u64, u64)> {
        let invocations = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.budget
            .exceeded(failures, invocations)
            .then_some((failures, invocations))
    }

    pub(crate) fn tripped_kind(
        &self,
        (failures, invocations): (u64, u64),
        causes: Vec<ItemError>,
    ) -> StageFailureKind {
        StageFailureKind::BudgetExceeded {
            failures,
            invocations,
            budget: self.budget,
            scope: self.scope,
            causes,
        }
    }
}

/// The most recent item errors of a stage, kept to explain a budget failure.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors {
    errors: Mutex<VecDeque<ItemError>>,
}

const KEPT_ERRORS: usize = 16;

impl RecentErrors {
    pub(crate) fn push(&self, error: ItemError) {
        let mut errors = lock(&self.errors);
        if errors.len() == KEPT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    pub(crate) fn take(&self) -> Vec<ItemError> {
        let mut errors = lock(&self.errors);
        errors.drain(..).collect()
    }
}

/// Why a stage ended the pipeline.
#[derive(Debug)]
#[non_exhaustive]
pub enum StageFailureKind {
    /// More items failed than the budget allows.
    BudgetExceeded {
        /// Failures counted in the budget's scope when it tripped.
        failures: u64,
        /// Invocations counted in the budget's scope when it tripped.
        invocations: u64,
        /// The budget.
        budget: MaxFailures,
        /// Whether it was the stage's budget or the pipeline's.
        scope: BudgetScope,
        /// The most recent item errors of this stage (at most 16), oldest first.
        causes: Vec<ItemError>,
    },
    /// The source returned an error or panicked; items before it were delivered.
    Source(ItemError),
    /// An aggregator's `accumulate` or `flush` failed.
    Aggregator(ItemError),
    /// The pipeline could not start (a thread or the async runtime failed to start).
    Start(BuildError),
    /// A stage of a process region ended the nested pipeline in a worker process (its own
    /// failure budget, or its aggregator): the failure as the worker reported it.
    #[cfg(unix)]
    InWorker(RemoteStageFailure),
    /// An epoch ended and the ledger's account of it does not balance: items were lost or
    /// duplicated (a defect of the pipeline or of a resume state, never of the data).
    LedgerMismatch(crate::stats::EpochAccount),
    /// No stage completed an item for `idle` while items waited, longer than the
    /// [stall limit](crate::SinkBuilder::stall_fatal); this stage held them.
    Stalled {
        /// How long nothing was completed.
        idle: std::time::Duration,
        /// Calls of the stage's function under way (or items waiting at its input).
        in_flight: usize,
        /// How long its oldest call had been running.
        oldest: std::time::Duration,
    },
}

/// One stage's terminal failure.
#[derive(Debug)]
pub struct StageFailure {
    pub(crate) stage: String,
    pub(crate) kind: StageFailureKind,
}

impl StageFailure {
    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// What happened.
    pub fn kind(&self) -> &StageFailureKind {
        &self.kind
    }
}

impl fmt::Display for StageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StageFailureKind::BudgetExceeded {
                failures,
                invocations,
                budget,
                scope,
                causes,
            } => {
                let scope = match scope {
                    BudgetScope::Stage => "the stage's",
                    BudgetScope::Pipeline => "the pipeline-wide",
                };
                write!(
                    f,
                    "stage `{}` exceeded {scope} failure budget ({budget}): \
                     {failures} failures in {invocations} invocations",
                    self.stage
                )?;
                if let Some(last) = causes.last() {
                    write!(f, "; last error: {last}")?;
                }
                Ok(())
            }
            StageFailureKind::Source(e) => write!(f, "source `{}` failed: {e}", self.stage),
            StageFailureKind::Aggregator(e) => {
                write!(f, "aggregator `{}` failed: {e}", self.stage)
            }
            StageFailureKind::Start(e) => write!(f, "cannot start: {e}"),
            StageFailureKind::LedgerMismatch(account) => {
                write!(f, "the ledger does not balance at the end of {account}")
            }
            #[cfg(unix)]
            StageFailureKind::InWorker(r) => write!(f, "in a worker process, {}", r.message()),
            StageFailureKind::Stalled {
                idle,
                in_flight,
                oldest,
            } => write!(
                f,
                "stalled: no stage completed an item for {:.1}s; stage `{}` held {in_flight} \
                 item(s), its oldest call running for {:.1}s (a stage function that never \
                 returns, or a deadlock in it?)",
                idle.as_secs_f64(),
                self.stage,
                oldest.as_secs_f64()
            ),
        }
    }
}

/// The pipeline ended because one or more stages failed. Items produced before the failure
/// were delivered first.
#[derive(Debug)]
pub struct PipelineError {
    failures: Vec<StageFailure>,
}

impl PipelineError {
    pub(crate) fn new(failures: Vec<StageFailure>) -> Self {
        Self { failures }
    }

    pub(crate) fn start_failed(error: BuildError) -> Self {
        Self::new(vec![StageFailure {
            stage: "pipeline".to_owned(),
            kind: StageFailureKind::Start(error),
        }])
    }

    /// An epoch's account that does not balance at its end.
    pub(crate) fn ledger_mismatch(account: crate::stats::EpochAccount) -> Self {
        Self::new(vec![StageFailure {
            stage: "ledger".to_owned(),
            kind: StageFailureKind::LedgerMismatch(account),
        }])
    }

    /// Every stage that failed, in the order they failed.
    pub fn failures(&self) -> &[StageFailure] {
        &self.failures
    }

    /// The first stage that failed.
    pub fn first(&self) -> &StageFailure {
        &self.failures[0]
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline failed: {}", self.failures[0])?;
        for other in &self.failures[1..] {
            write!(f, "; also {other}")?;
        }
        Ok(())
    }
}

impl StdError for PipelineError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.failures[0].kind {
            StageFailureKind::BudgetExceeded { causes, .. } => {
                causes.last().map(|e| e as &(dyn StdError + 'static))
            }
            StageFailureKind::Source(e) | StageFailureKind::Aggregator(e) => Some(e),
            StageFailureKind::Start(e) => Some(e),
            #[cfg(unix)]
            StageFailureKind::InWorker(_) => None,
            StageFailureKind::Stalled { .. } | StageFailureKind::LedgerMismatch(_) => None,
        }
    }
}
