//! A pipeline's failure in another process (a subprocess, or a process region's worker),
//! kept structured across the process boundary: a failed stage arrives with its name, what
//! kind of failure it was and its messages, not as one string. It sits here, beside the
//! failure it mirrors, so that [`StageFailureKind::InWorker`] can carry it while the worker
//! wing (`process`, `subprocess`) depends on failures, never the other way round; its
//! public path is `subprocess`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{PipelineError, StageFailureKind};

/// A [`PipelineError`] from a child process, carried across the process boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemotePipelineError {
    failures: Vec<RemoteStageFailure>,
}

impl RemotePipelineError {
    /// Every stage that failed, in the order they failed.
    pub fn failures(&self) -> &[RemoteStageFailure] {
        &self.failures
    }

    /// The first stage that failed.
    pub fn first(&self) -> &RemoteStageFailure {
        &self.failures[0]
    }
}

impl From<&PipelineError> for RemotePipelineError {
    fn from(e: &PipelineError) -> Self {
        let failures = e
            .failures()
            .iter()
            .map(|f| {
                let (kind, causes) = match f.kind() {
                    StageFailureKind::BudgetExceeded {
                        failures,
                        invocations,
                        causes,
                        ..
                    } => (
                        RemoteFailureKind::BudgetExceeded {
                            failures: *failures,
                            invocations: *invocations,
                        },
                        causes.iter().map(|c| c.to_string()).collect(),
                    ),
                    StageFailureKind::Source(c) => (RemoteFailureKind::Source, vec![c.to_string()]),
                    StageFailureKind::Aggregator(c) => {
                        (RemoteFailureKind::Aggregator, vec![c.to_string()])
                    }
                    StageFailureKind::Start(c) => (RemoteFailureKind::Start, vec![c.to_string()]),
                    StageFailureKind::InWorker(r) => (r.kind().clone(), r.causes().to_vec()),
                    StageFailureKind::Stalled { .. } => (RemoteFailureKind::Stalled, Vec::new()),
                    StageFailureKind::LedgerMismatch(_) => {
                        (RemoteFailureKind::LedgerMismatch, Vec::new())
                    }
                };
                RemoteStageFailure {
                    stage: f.stage().to_owned(),
                    kind,
                    message: f.to_string(),
                    causes,
                }
            })
            .collect();
        Self { failures }
    }
}

impl fmt::Display for RemotePipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline failed: {}", self.failures[0].message)?;
        for other in &self.failures[1..] {
            write!(f, "; also {}", other.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for RemotePipelineError {}

/// One stage's terminal failure in a child process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteStageFailure {
    stage: String,
    kind: RemoteFailureKind,
    message: String,
    causes: Vec<String>,
}

impl RemoteStageFailure {
    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> &RemoteFailureKind {
        &self.kind
    }

    /// The failure, in words (as the child's [`StageFailure`](crate::error::StageFailure) displays).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The item errors behind it, oldest first (for a budget: the most recent ones, at most
    /// 16; for a source or aggregator: the one error).
    pub fn causes(&self) -> &[String] {
        &self.causes
    }
}

/// The kind of a [`RemoteStageFailure`], mirroring [`StageFailureKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteFailureKind {
    /// More items failed than the budget allows.
    BudgetExceeded {
        /// Failures counted when the budget tripped.
        failures: u64,
        /// Invocations counted when the budget tripped.
        invocations: u64,
    },
    /// The source failed.
    Source,
    /// An aggregator failed.
    Aggregator,
    /// The pipeline could not start.
    Start,
    /// The pipeline stalled past its limit.
    Stalled,
    /// An epoch's ledger account did not balance.
    LedgerMismatch,
}
