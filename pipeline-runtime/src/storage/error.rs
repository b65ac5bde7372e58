//! Why a storage operation failed, in words that name the object (its URL) and, for a
//! shard or a file that is cut short or corrupt, the byte offset where reading stopped.

use std::error::Error as StdError;
use std::fmt;

/// A failed storage operation: opening a store, a listing, a read, or parsing what was read.
/// Its message names the URL of the object or prefix.
#[derive(Debug)]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// What kind of failure a [`StorageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The URL or the options are wrong (unknown scheme, a feature not built in).
    Config,
    /// The object, the prefix or the bucket does not exist.
    NotFound,
    /// The credentials were refused.
    Denied,
    /// The service could not be reached or kept failing after the retries.
    Unavailable,
    /// The data is not what its format says: a truncated or corrupt tar shard, a bad
    /// Parquet footer.
    Corrupt,
    /// Anything else the store reported.
    Other,
}

impl StorageError {
    pub(crate) fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// `what` (e.g. "get s3://bucket/key") failed with `error` from object_store.
    pub(crate) fn from_store(what: impl fmt::Display, error: object_store::Error) -> Self {
        use object_store::Error as E;
        let kind = match &error {
            E::NotFound { .. } => StorageErrorKind::NotFound,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => StorageErrorKind::Denied,
            E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } | E::NotSupported { .. } => {
                StorageErrorKind::Config
            }
            e => match super::retry::http_status(e) {
                Some(404) => StorageErrorKind::NotFound,
                Some(401 | 403) => StorageErrorKind::Denied,
                _ if super::retry::is_transient(e) => StorageErrorKind::Unavailable,
                _ => StorageErrorKind::Other,
            },
        };
        Self {
            kind,
            message: format!("{what}: {}", flatten(&error)),
            source: Some(Box::new(error)),
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The whole message (also what `Display` shows).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// An error and its causes on one line, each cause once (object_store's messages often
/// repeat their source).
fn flatten(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for StorageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
