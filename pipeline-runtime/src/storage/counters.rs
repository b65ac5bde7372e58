//! What a store has done, counted as it runs: requests, bytes, retries and failures. One
//! set of counters per [`Store`](super::Store), shared by its clones and readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The counters of a store and its clones. Cheap to clone; every clone sees the same counts.
#[derive(Debug, Clone, Default)]
pub struct StoreCounters {
    inner: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    lists: AtomicU64,
}

/// A copy of a store's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Requests started: gets, range gets and the re-opened reads of a stream, retries
    /// included, listings excluded.
    pub requests: u64,
    /// Bytes of object data received.
    pub bytes: u64,
    /// Requests repeated after a transient error (our retries, on top of any the HTTP
    /// client made itself).
    pub retries: u64,
    /// Reads that failed for good: a permanent error, or a transient one that outlasted the
    /// retry policy.
    pub failures: u64,
    /// Listings started.
    pub lists: u64,
}

impl StoreCounters {
    /// The counts now.
    pub fn snapshot(&self) -> StoreCounts {
        let c = &self.inner;
        StoreCounts {
            requests: c.requests.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self, n: usize) {
        self.inner.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn list(&self) {
        self.inner.lists.fetch_add(1, Ordering::Relaxed);
    }
}
