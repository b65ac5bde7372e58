//! Where senders wait for room in a full queue.
//!
//! A reader that takes an item wakes waiting senders only once the queue is down to `low`
//! (half its capacity) or when it pauses (see [`Room::top_up`]), and then as many as there is room for, less those already woken
//! that have not yet sent: a slow reader wakes a blocked source once per half a queue, not
//! once per item, and a thousand async lanes waiting on a small queue are woken a batch at a
//! time with no herd. Wakers are called after the list's lock is released, so a waiter that
//! is registering never waits on a wake-up's system call.
//!
//! An eager waiter (a sender whose peer keeps up: see `Tx`) is woken at the first free slot
//! instead: when both ends are fast, waiting for half a queue to drain makes the two
//! threads take turns (one drains while the other sleeps) instead of running side by side.
//! A plain thread is eager unless the queue is read by async lanes (see
//! [`Room::read_by_async_lanes`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::sync::lock;

pub(super) struct Room {
    state: Mutex<State>,
    /// `state.waiters.len()`, readable without the lock on every take.
    waiting: AtomicUsize,
    /// Eager waiters listed: while there are any, a take wakes at the first free slot.
    eager: AtomicUsize,
    capacity: usize,
    low: usize,
    /// The reader is a stage whose lanes run on the async runtime.
    async_reader: AtomicBool,
}

#[derive(Default)]
struct State {
    waiters: VecDeque<Arc<Waiter>>,
    /// Woken waiters that have not retried yet: the room they will take is spoken for.
    pending: usize,
}

#[derive(Default)]
struct Waiter {
    eager: bool,
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl Room {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            waiting: AtomicUsize::new(0),
            eager: AtomicUsize::new(0),
            capacity,
            low: capacity / 2,
            async_reader: AtomicBool::new(false),
        }
    }

    /// After an item was taken, the queue holding `len()` messages: wakes senders if it is
    /// down to `low`, counting the room already promised to woken ones.
    #[inline]
    pub(super) fn taken(&self, len: impl FnOnce() -> usize) {
        // Pairs with the fence in `register`: either this reader sees the sender listed, or
        // the sender's retry after listing itself sees the slot just freed.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let len = len();
        let low = if self.eager.load(Ordering::Relaxed) > 0 {
            self.capacity - 1
        } else {
            self.low
        };
        if len > low {
            return;
        }
        let mut state = lock(&self.state);
        if len + state.pending > low {
            return;
        }
        let n = self.capacity.saturating_sub(len + state.pending);
        let woken = self.take_waiters(&mut state, n);
        drop(state);
        wake_all(woken);
    }

    /// The reader is about to stop taking for a while (it waits on its own output): wakes
    /// senders for all the room there is, below `low` or not, so that a paused stage's input
    /// fills up as the backpressure bound says it does.
    pub(super) fn top_up(&self, len: impl FnOnce() -> usize) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let len = len();
        let mut state = lock(&self.state);
        let n = self.capacity.saturating_sub(len + state.pending);
        let woken = self.take_waiters(&mut state, n);
        drop(state);
        wake_all(woken);
    }

    /// The queue closed: every waiting sender must retry (and see it closed).
    pub(super) fn closed(&self) {
        let mut state = lock(&self.state);
        let woken = self.take_waiters(&mut state, usize::MAX);
        drop(state);
        wake_all(woken);
    }

    /// Marks the reader as async lanes. They take items in bursts (all the lanes a timer
    /// tick or a batch of replies woke, then none until the next), and each wake-up of a
    /// parked thread costs the runtime's thread a system call: a thread sender then waits
    /// for half a queue, woken once per half a queue instead of once per item, and refills
    /// it in one go while the lanes work through the other half.
    pub(super) fn read_by_async_lanes(&self) {
        self.async_reader.store(true, Ordering::Relaxed);
    }

    pub(super) fn async_reader(&self) -> bool {
        self.async_reader.load(Ordering::Relaxed)
    }

    /// Senders listed as waiting now.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn take_waiters(&self, state: &mut State, n: usize) -> Vec<Arc<Waiter>> {
        let n = n.min(state.waiters.len());
        let woken: Vec<_> = state.waiters.drain(..n).collect();
        let mut eager = 0;
        for waiter in &woken {
            waiter.woken.store(true, Ordering::Release);
            eager += usize::from(waiter.eager);
        }
        if eager > 0 {
            self.eager.fetch_sub(eager, Ordering::Relaxed);
        }
        state.pending += woken.len();
        self.waiting.store(state.waiters.len(), Ordering::Relaxed);
        woken
    }

    fn register(&self, waiter: Arc<Waiter>) {
        let mut state = lock(&self.state);
        if waiter.eager {
            self.eager.fetch_add(1, Ordering::Relaxed);
        }
        state.waiters.push_back(waiter);
        self.waiting.store(state.waiters.len(), Ordering::Relaxed);
        drop(state);
        fence(Ordering::SeqCst);
    }

    /// A woken waiter retries: its promised room is its own now.
    fn resumed(&self) {
        let mut state = lock(&self.state);
        state.pending = state.pending.saturating_sub(1);
    }

    /// A waiter gives up (its send was cancelled). Woken already, it passes its turn on.
    fn cancel(&self, waiter: &Arc<Waiter>) {
        let mut state = lock(&self.state);
        // From the back: a waiter whose first retry succeeded was listed last.
        if let Some(at) = state.waiters.iter().rposition(|w| Arc::ptr_eq(w, waiter)) {
            if waiter.eager {
                self.eager.fetch_sub(1, Ordering::Relaxed);
            }
            state.waiters.remove(at);
            self.waiting.store(state.waiters.len(), Ordering::Relaxed);
            return;
        }
        state.pending = state.pending.saturating_sub(1);
        let woken = self.take_waiters(&mut state, 1);
        drop(state);
        wake_all(woken);
    }
}

fn wake_all(woken: Vec<Arc<Waiter>>) {
    for waiter in woken {
        waiter.waker.wake();
    }
}

/// One sender's wait for room, across retries. Poll it after each failed try: `Ready` means
/// "try again now" (just listed, so a slot freed meanwhile is not missed; or woken).
pub(super) struct RoomWait<'a> {
    room: &'a Room,
    waiter: Option<Arc<Waiter>>,
    eager: bool,
}

impl<'a> RoomWait<'a> {
    /// `eager`: wake this sender at the first free slot, not once the queue is half empty.
    pub(super) fn new(room: &'a Room, eager: bool) -> Self {
        Self {
            room,
            waiter: None,
            eager,
        }
    }
}

impl Future for RoomWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(waiter) = &this.waiter else {
            let waiter = Arc::new(Waiter {
                eager: this.eager,
                ..Waiter::default()
            });
            waiter.waker.register(cx.waker());
            this.room.register(waiter.clone());
            this.waiter = Some(waiter);
            return Poll::Ready(());
        };
        if !waiter.woken.load(Ordering::Acquire) {
            waiter.waker.register(cx.waker());
            if !waiter.woken.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        this.waiter = None;
        this.room.resumed();
        Poll::Ready(())
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            self.room.cancel(&waiter);
        }
    }
}
