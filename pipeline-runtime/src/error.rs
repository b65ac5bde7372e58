//! Public error types.

use std::error::Error as StdError;
use std::fmt;

use crate::failure::MaxFailures;
use crate::sync::panic_message;

/// A boxed error from a stage function, a source or an aggregator.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An invalid pipeline definition, reported by `build()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pipeline: {}", self.message)
    }
}

impl StdError for BuildError {}

/// Why one item failed in one stage: the function returned `Err` or panicked.
#[derive(Debug)]
pub struct ItemError {
    stage: String,
    kind: ItemErrorKind,
}

#[derive(Debug)]
enum ItemErrorKind {
    Error(BoxError),
    Panic(String),
}

impl ItemError {
    pub(crate) fn from_error(stage: &str, error: BoxError) -> Self {
        Self {
            stage: stage.to_owned(),
            kind: ItemErrorKind::Error(error),
        }
    }

    pub(crate) fn panic(stage: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        Self {
            stage: stage.to_owned(),
            kind: ItemErrorKind::Panic(panic_message(payload)),
        }
    }

    /// A panic reported as a message (from a worker process).
    pub(crate) fn panic_message(stage: &str, message: String) -> Self {
        Self {
            stage: stage.to_owned(),
            kind: ItemErrorKind::Panic(message),
        }
    }

    /// The stage the item failed in.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// `true` if the stage function panicked (rather than returning `Err`).
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, ItemErrorKind::Panic(_))
    }

    /// The error the stage function returned, if it returned one.
    pub fn error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match &self.kind {
            ItemErrorKind::Error(e) => Some(e.as_ref()),
            ItemErrorKind::Panic(_) => None,
        }
    }
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ItemErrorKind::Error(e) => write!(f, "stage `{}`: {e}", self.stage),
            ItemErrorKind::Panic(m) => write!(f, "stage `{}` panicked: {m}", self.stage),
        }
    }
}

impl StdError for ItemError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            ItemErrorKind::Error(e) => Some(e.as_ref()),
            ItemErrorKind::Panic(_) => None,
        }
    }
}

/// Which failure budget a stage exceeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetScope {
    /// The stage's own `max_failures`.
    Stage,
    /// The pipeline-wide `max_failures`, shared by every stage without its own.
    Pipeline,
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
        }
    }
}

/// Why [`Pipeline::get_timeout`](crate::Pipeline::get_timeout) returned no item.
#[derive(Debug)]
pub enum GetError {
    /// No item arrived within the timeout; the pipeline is still running.
    Timeout,
    /// The pipeline failed (reported once; later calls say [`GetError::Finished`]).
    Failed(PipelineError),
    /// The pipeline has finished and every item was read.
    Finished,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Timeout => f.write_str("no item became available before the timeout"),
            GetError::Failed(e) => e.fmt(f),
            GetError::Finished => f.write_str("the pipeline has finished"),
        }
    }
}

impl StdError for GetError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            GetError::Failed(e) => Some(e),
            _ => None,
        }
    }
}
