//! Errors of a pipeline or iterator running in a subprocess. A failed pipeline in the child
//! arrives structured, as a [`RemotePipelineError`] (defined with the pipeline's own
//! failures, which process regions carry too; its public path is here).

use std::fmt;
use std::time::Duration;

pub use crate::failure::{RemoteFailureKind, RemotePipelineError, RemoteStageFailure};
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
