//! The memory limit (`memory_limit`): a hard limit on the bytes of the items in flight,
//! enforced by admission. ("Budget", everywhere in this crate, means the failure budget.)
//!
//! The source admits an item only once its size (the user's size function, or its
//! [`ItemBytes`]) fits under the limit together with every item admitted before it and not
//! yet resolved, and waits for room otherwise. An item is resolved when the resume ledger
//! says so: every message carrying it was delivered to the consumer, failed or was dropped
//! (a batch resolves its members when it is delivered). So the sum of admitted sizes never
//! exceeds the limit, not even for a moment; the size to give is the most an item will hold
//! anywhere on its way (e.g. the decoded image, not the file name).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;

use crate::sync::lock;

/// Items that know how many bytes they hold, for
/// [`SinkBuilder::memory_limit`](crate::SinkBuilder::memory_limit): give the source's items
/// this trait and call [`StageBuilder::reported_bytes`](crate::StageBuilder::reported_bytes)
/// after the source (or give a function with
/// [`item_bytes`](crate::StageBuilder::item_bytes)).
pub trait ItemBytes {
    /// The most bytes this item will hold while it is in the pipeline.
    fn item_bytes(&self) -> usize;
}

impl ItemBytes for Vec<u8> {
    fn item_bytes(&self) -> usize {
        self.len()
    }
}

impl ItemBytes for String {
    fn item_bytes(&self) -> usize {
        self.len()
    }
}

impl ItemBytes for Box<[u8]> {
    fn item_bytes(&self) -> usize {
        self.len()
    }
}

/// The size function of the source's items, type-erased in the builder's options.
pub(crate) type SizeFn<T> = Arc<dyn Fn(&T) -> usize + Send + Sync>;

/// What admitting an item came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted,
    /// Larger than the whole limit: it can never be admitted.
    TooLarge,
    /// The pipeline is stopping.
    Stopped,
}

#[derive(Debug, Default)]
struct Held {
    used: u64,
    /// Bytes of each admitted source position not yet resolved.
    by_pos: HashMap<u64, u64>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct MemoryLimit {
    limit: u64,
    held: Mutex<Held>,
    room: Condvar,
    /// An async source waiting for room.
    waker: AtomicWaker,
    peak: AtomicU64,
    /// The source is waiting for room now (stall detection reads it).
    waiting: AtomicBool,
    closed: AtomicBool,
}

/// The memory limit's accounting at one moment, in
/// [`PipelineStats::memory`](crate::stats::PipelineStats::memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// The limit (`memory_limit`), bytes.
    pub limit: u64,
    /// Bytes of the items in flight now.
    pub in_flight: u64,
    /// The most bytes that were in flight at once.
    pub peak: u64,
    /// The source is waiting for room now.
    pub source_waiting: bool,
}

impl MemoryLimit {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            held: Mutex::new(Held::default()),
            room: Condvar::new(),
            waker: AtomicWaker::new(),
            peak: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Admits `bytes` for position `pos` if they fit now.
    fn try_admit(&self, pos: u64, bytes: u64) -> Option<Admission> {
        if bytes > self.limit {
            return Some(Admission::TooLarge);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Some(Admission::Stopped);
        }
        let mut held = lock(&self.held);
        if held.used + bytes > self.limit {
            return None;
        }
        held.used += bytes;
        *held.by_pos.entry(pos).or_insert(0) += bytes;
        self.peak.fetch_max(held.used, Ordering::Relaxed);
        Some(Admission::Admitted)
    }

    /// Admits an item from a plain thread, waiting for room.
    pub(crate) fn admit_blocking(&self, pos: u64, bytes: u64) -> Admission {
        if let Some(done) = self.try_admit(pos, bytes) {
            return done;
        }
        self.waiting.store(true, Ordering::Relaxed);
        let mut held = lock(&self.held);
        let outcome = loop {
            if self.closed.load(Ordering::Relaxed) {
                break Admission::Stopped;
            }
            if held.used + bytes <= self.limit {
                held.used += bytes;
                *held.by_pos.entry(pos).or_insert(0) += bytes;
                self.peak.fetch_max(held.used, Ordering::Relaxed);
                break Admission::Admitted;
            }
            // Woken by every release; the timeout only bounds a missed wake-up.
            held = self
                .room
                .wait_timeout(held, Duration::from_millis(50))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        };
        self.waiting.store(false, Ordering::Relaxed);
        outcome
    }

    /// Admits an item from async code, waiting for room.
    pub(crate) fn admit(&self, pos: u64, bytes: u64) -> impl Future<Output = Admission> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(done) = self.try_admit(pos, bytes) {
                self.waiting.store(false, Ordering::Relaxed);
                return Poll::Ready(done);
            }
            self.waker.register(cx.waker());
            self.waiting.store(true, Ordering::Relaxed);
            match self.try_admit(pos, bytes) {
                Some(done) => {
                    self.waiting.store(false, Ordering::Relaxed);
                    Poll::Ready(done)
                }
                None => Poll::Pending,
            }
        })
    }

    /// Position `pos` is resolved: its bytes no longer count against the limit.
    pub(crate) fn release(&self, pos: u64) {
        let mut held = lock(&self.held);
        let Some(bytes) = held.by_pos.remove(&pos) else {
            return;
        };
        held.used -= bytes;
        drop(held);
        self.room.notify_all();
        self.waker.wake();
    }

    /// The pipeline stops: a waiting source gives up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _held = lock(&self.held);
        self.room.notify_all();
        self.waker.wake();
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            limit: self.limit,
            in_flight: lock(&self.held).used,
            peak: self.peak.load(Ordering::Relaxed),
            source_waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_waits_for_room_and_never_goes_over_the_limit() {
        let memory = Arc::new(MemoryLimit::new(10));
        assert_eq!(memory.admit_blocking(0, 6), Admission::Admitted);
        assert_eq!(memory.admit_blocking(1, 11), Admission::TooLarge);
        let waiter = {
            let memory = memory.clone();
            std::thread::spawn(move || memory.admit_blocking(2, 6))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(memory.stats().in_flight, 6, "the second item waits");
        memory.release(0);
        assert_eq!(waiter.join().unwrap(), Admission::Admitted);
        let stats = memory.stats();
        assert_eq!((stats.in_flight, stats.peak), (6, 6));
        memory.close();
        assert_eq!(memory.admit_blocking(3, 5), Admission::Stopped);
    }
}
