//! Errors of a pipeline or iterator running in a subprocess, kept structured across the
//! process boundary: a failed stage arrives with its name, what kind of failure it was and
//! its messages, not as one string.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::failure::{PipelineError, StageFailureKind};
use crate::process::{ExitReport, ProcessError};

/// Why a subprocess could not start, or why iterating it failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubprocessError {
    /// The child could not be started (see [`ProcessError`]), or the function to run in it
    /// is not registered.
    Spawn(ProcessError),
    /// The initialiser, or the function that builds the pipeline or iterator, failed or
    /// panicked in the child. Returned by the call that starts the subprocess.
    Init {
        /// `"initializer"`, `"factory"`, or `"transport"` (the child could not map the
        /// shared memory).
        step: &'static str,
        /// What it said.
        message: String,
    },
    /// The pipeline in the child failed: one or more of its stages.
    Pipeline(RemotePipelineError),
    /// The child ended (exited, crashed, was killed) before its output was complete.
    ChildEnded(ExitReport),
    /// The child produced nothing for longer than the inactivity timeout; it was killed.
    Timeout(Duration),
    /// The child already ended (an earlier error); it cannot be iterated again.
    Ended,
    /// Talking to the child failed (a broken pipe, an item that does not decode).
    Io(std::io::Error),
}

impl fmt::Display for SubprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start the subprocess: {e}"),
            Self::Init { step, message } => {
                write!(f, "the subprocess's {step} failed: {message}")
            }
            Self::Pipeline(e) => write!(f, "in the subprocess, {e}"),
            Self::ChildEnded(report) => write!(
                f,
                "the subprocess ended before its output was complete: it {report}"
            ),
            Self::Timeout(t) => write!(
                f,
                "the subprocess produced no item for {t:?} (the inactivity timeout); it was \
                 killed"
            ),
            Self::Ended => f.write_str(
                "the subprocess has already ended after an error; it cannot be iterated again",
            ),
            Self::Io(e) => write!(f, "talking to the subprocess failed: {e}"),
        }
    }
}

impl std::error::Error for SubprocessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) => Some(e),
            Self::Pipeline(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A [`PipelineError`] from the child, carried across the process boundary.
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

/// One stage's terminal failure in the child.
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

    /// The failure, in words (as the child's [`StageFailure`](crate::StageFailure) displays).
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
}
