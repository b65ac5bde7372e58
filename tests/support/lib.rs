//! Helpers shared by the integration tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Number of threads in this process right now (Linux: entries of `/proc/self/task`).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// An endless source that counts how many items were pulled from it.
#[derive(Clone, Debug)]
pub struct CountingSource {
    pub pulled: Arc<AtomicUsize>,
}

impl CountingSource {
    pub fn new() -> Self {
        Self {
            pulled: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn pulled(&self) -> usize {
        self.pulled.load(Ordering::SeqCst)
    }

    /// Waits until the pulled count has not changed for `quiet`, up to `timeout`.
    pub fn settle(&self, quiet: Duration, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut last = self.pulled();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.pulled();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }
}

impl Default for CountingSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for CountingSource {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        Some(self.pulled.fetch_add(1, Ordering::SeqCst))
    }
}

/// Tracks how many calls are inside a section at once, and the maximum seen.
#[derive(Clone, Default, Debug)]
pub struct InFlight {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl InFlight {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` counted as one call in flight.
    pub fn track<R>(&self, f: impl FnOnce() -> R) -> R {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        let r = f();
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }

    pub fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Collects a pipeline's items, panicking on a failure.
pub fn collect_ok<T: Send + 'static>(pipeline: pipeline_runtime::Pipeline<T>) -> Vec<T> {
    pipeline
        .map(|r| r.unwrap_or_else(|e| panic!("unexpected failure: {e}")))
        .collect()
}
