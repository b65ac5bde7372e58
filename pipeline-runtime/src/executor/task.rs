//! A lane task: a boxed future polled on whatever threads a scheduler owns.
//!
//! Synchronous stage functions run *inside* the poll of a lane future, on the executor's
//! threads. A lane that waits for a queue returns `Pending` and gives its thread back, so a
//! small pool never deadlocks on a long chain of stages.
//!
//! A lane future is never dropped where a task happens to lose its last reference. That
//! happens inside wakers: a pool that is shutting down refuses a woken task, and the waker
//! that woke it runs inside whatever called `wake`, often with a lock held (the input-order
//! gate's `futures::lock::Mutex` wakes the next waiter while holding its waiter list, and
//! `event_listener`, under `async-channel`, wakes listeners under its list lock). Dropping
//! the lane there runs its destructor, which unregisters its own waker from that same lock:
//! the thread deadlocks on itself. So a task dropped with its future still alive hands the
//! future to [`defer_drop`], and threads drop deferred futures at points where they hold no
//! lock ([`drop_deferred`]): a pool thread between two tasks and before it exits, the async
//! runtime's thread after the runtime, the source thread at its end, and whoever stops a
//! pipeline once its threads are joined.

use crate::sync::lock;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

pub(crate) type LaneFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a woken task is sent to be polled again.
pub(crate) trait Schedule: Send + Sync + 'static {
    fn schedule(&self, task: Arc<Task>);
}

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;

pub(crate) struct Task {
    future: Mutex<Option<LaneFuture>>,
    state: AtomicU8,
    scheduler: Arc<dyn Schedule>,
}

impl Task {
    pub(crate) fn spawn(future: LaneFuture, scheduler: Arc<dyn Schedule>) {
        let task = Self::scheduled(future, scheduler);
        let scheduler = task.scheduler.clone();
        scheduler.schedule(task);
    }

    /// A task for `future`, marked scheduled: the caller hands it to its scheduler.
    pub(crate) fn scheduled(future: LaneFuture, scheduler: Arc<dyn Schedule>) -> Arc<Task> {
        Arc::new(Task {
            future: Mutex::new(Some(future)),
            state: AtomicU8::new(SCHEDULED),
            scheduler,
        })
    }

    /// Polls the future until it is pending with no wake-up in between, or finished.
    pub(crate) fn run(self: Arc<Self>) {
        self.state.store(RUNNING, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = lock(&self.future);
        loop {
            let Some(fut) = slot.as_mut() else { return };
            if fut.as_mut().poll(&mut cx).is_ready() {
                *slot = None;
                return;
            }
            // Woken while running: poll again instead of re-queueing.
            match self
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(_) => self.state.store(RUNNING, Ordering::Release),
            }
        }
    }

    /// Polls the future once. Woken while it ran, the task is scheduled again, behind the
    /// others: a scheduler running many lanes on one thread (the async runtime's relay)
    /// gives each a turn instead of re-polling one that yields.
    pub(crate) fn run_once(self: Arc<Self>) {
        self.state.store(RUNNING, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = lock(&self.future);
        let Some(fut) = slot.as_mut() else { return };
        // A lane catches its stage function's panics; one escaping here ends only this lane,
        // not the scheduler polling it beside the others.
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        if !matches!(polled, Ok(Poll::Pending)) {
            *slot = None;
            return;
        }
        drop(slot);
        if self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.state.store(SCHEDULED, Ordering::Release);
            self.scheduler.schedule(self.clone());
        }
    }

    /// The future has completed (or was dropped). False while it is being polled.
    pub(crate) fn is_finished(&self) -> bool {
        self.future.try_lock().is_ok_and(|future| future.is_none())
    }

    /// Drops the future unfinished (deferred, see [`defer_drop`]): its scheduler is gone.
    pub(crate) fn cancel(&self) {
        let future = lock(&self.future).take();
        if let Some(future) = future {
            defer_drop(future);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == SCHEDULED => {
                    self.scheduler.schedule(self.clone());
                    return;
                }
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let future = self
            .future
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(future) = future {
            defer_drop(future);
        }
    }
}

/// Lane futures whose task was dropped where their destructor must not run (see the module
/// docs), waiting for a thread at a safe point to drop them.
static DEFERRED: Mutex<Vec<LaneFuture>> = Mutex::new(Vec::new());
/// `DEFERRED.len()`, readable without the lock on every pool thread's hot path.
static DEFERRED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Keeps `future` alive until a thread reaches a safe point.
pub(crate) fn defer_drop(future: LaneFuture) {
    let mut deferred = lock(&DEFERRED);
    deferred.push(future);
    DEFERRED_COUNT.fetch_add(1, Ordering::Release);
}

/// Drops every deferred lane future. Call only where the calling thread holds no lock that
/// a lane's destructor could take (a lane's drop may defer more; those are dropped too).
pub(crate) fn drop_deferred() {
    while DEFERRED_COUNT.load(Ordering::Acquire) > 0 {
        let batch = {
            let mut deferred = lock(&DEFERRED);
            DEFERRED_COUNT.fetch_sub(deferred.len(), Ordering::AcqRel);
            std::mem::take(&mut *deferred)
        };
        drop(batch);
    }
}

/// Yields once to the scheduler so that other lanes sharing the threads get a turn.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
