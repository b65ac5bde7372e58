//! The error types the rest of the crate builds on: a definition's mistakes
//! ([`BuildError`]), one item's failure ([`ItemError`]), which failure budget ran out
//! ([`BudgetScope`]), and the boxed error of a stage function ([`BoxError`]). Their public
//! paths are in `error` (and `BoxError` at the crate root).

use std::error::Error as StdError;
use std::fmt;

use crate::sync::panic_message;

/// A boxed error from a stage function, a source or an aggregator.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// One error that says every mistake of a definition: the first alone, or each on its own
    /// line after a count.
    pub(crate) fn all(errors: Vec<BuildError>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.into_iter().next(),
            n => {
                let mut message = format!("{n} mistakes in the pipeline definition:");
                for e in errors {
                    message.push_str("\n  - ");
                    message.push_str(&e.message);
                }
                Some(Self { message })
            }
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
    #[cfg_attr(not(unix), allow(dead_code))] // only process stages get panics as messages
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
