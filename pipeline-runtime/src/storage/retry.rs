//! Our retry policy around reads: which errors are worth another try, and how long to wait
//! before it (exponential backoff with a cap). The HTTP client of a cloud store retries
//! single requests on its own as well (configured by
//! [`StoreOptions::http_retry`](super::StoreOptions::http_retry)); this policy covers what
//! it does not: a body that breaks off midway, a connection refused after the client gave
//! up, and local I/O errors.

use std::time::Duration;

/// How often, and how patiently, a failed read is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries after the first one; 0 turns retrying off.
    pub max_retries: u32,
    /// The wait before the first retry; each later wait doubles, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Three retries, waiting 100 ms, 200 ms, 400 ms (at most 5 s).
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// No retries: the first error is the answer.
    pub const NONE: Retry = Retry {
        max_retries: 0,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// The wait before retry number `attempt` (1 for the first retry).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Whether another try of the same read may succeed: network and server trouble, yes; a
/// missing object, a refused permission or a bad path, no.
pub(crate) fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    if let Some(status) = http_status(error) {
        // A client error is the request's fault, and another try changes nothing, except
        // for a timeout or being asked to slow down.
        if (400..500).contains(&status) && status != 408 && status != 429 {
            return false;
        }
    }
    !matches!(
        error,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// The HTTP status a cloud store's error reports, if any. object_store maps only some
/// statuses to their own variants (a listing's 404 stays `Generic`), and its error with
/// the status is private, so the status is read from the message: "... status code: 404".
pub(crate) fn http_status(error: &object_store::Error) -> Option<u16> {
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if let Some(i) = text.find("status code: ") {
            let code = text[i + 13..].get(..3)?;
            return code.parse().ok();
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        };
        let waits: Vec<u128> = (1..=5).map(|a| r.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        assert_eq!(r.backoff(200), Duration::from_millis(700));
    }

    #[test]
    fn a_missing_object_is_not_retried_but_a_generic_error_is() {
        let missing = object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        };
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert!(!is_transient(&missing));
        assert!(is_transient(&generic));
        let status = |code: &str| object_store::Error::Generic {
            store: "S3",
            source: format!("Server returned non-2xx status code: {code}: <Error/>").into(),
        };
        assert_eq!(http_status(&status("404 Not Found")), Some(404));
        assert!(!is_transient(&status("400 Bad Request")));
        assert!(is_transient(&status("503 Service Unavailable")));
        assert!(is_transient(&status("429 Too Many Requests")));
    }
}
