//! The lanes of async stages, run by one tokio task: the relay.
//!
//! A tokio task woken from another thread costs that thread a system call: the runtime's
//! I/O driver is woken through an `eventfd` on every remote wake, whether it sleeps or not.
//! A source thread feeding 256 waiting lanes paid one per item, and so did a consumer
//! making room for lanes waiting on a full sink. Lanes run as [`Task`]s instead, queued on
//! the relay: waking one from any thread is a push on the relay's queue, and only waking
//! the relay itself, when it has run out of lanes to poll, goes through tokio. A burst of
//! wakes from another thread then costs one system call, not one per lane.
//!
//! The relay polls lanes inside its own poll, so they run in the runtime's context (tokio
//! timers and `tokio::spawn` work in them), and it hands the thread back to tokio after
//! [`TURN`] lanes so that timers and other tokio tasks are served between turns. The relay
//! owns its lanes until they finish, as tokio owns its tasks; when the runtime shuts down,
//! the relay's future is dropped and every lane still alive is dropped with it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::clock;
use crate::executor::task::{LaneFuture, Schedule, Task};
use crate::sync::lock;

/// How many lanes the relay polls before it gives the thread back to tokio.
const TURN: usize = 32;

#[derive(Default)]
pub(crate) struct Relay {
    state: Mutex<State>,
    /// `state.ready.len()`, for spinning without the lock.
    queued: AtomicUsize,
    /// The relay's own tokio waker.
    waker: AtomicWaker,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Arc<Task>>,
    /// The relay is scheduled or polling: a push needs no wake-up.
    awake: bool,
    /// The runtime is shutting down: lanes woken now are dropped, not queued.
    closed: bool,
    /// Every lane spawned and not seen finished. Held strongly, as tokio holds its tasks: a
    /// lane whose waker nobody holds (parked on a future that never completes) stays alive,
    /// stalled where the stall detector sees it, until the runtime shuts down.
    lanes: Vec<Arc<Task>>,
    /// `lanes.len()` after the last pruning.
    pruned_at: usize,
}

impl Relay {
    /// Starts `lane` on the relay.
    pub(crate) fn spawn(self: &Arc<Self>, lane: LaneFuture) {
        let task = Task::scheduled(lane, self.clone());
        {
            let mut state = lock(&self.state);
            if state.lanes.len() >= 2 * state.pruned_at.max(64) {
                state.lanes.retain(|lane| !lane.is_finished());
                state.pruned_at = state.lanes.len();
            }
            state.lanes.push(task.clone());
        }
        self.schedule(task);
    }

    /// The relay's future: spawn it once on the runtime.
    pub(crate) fn run(self: Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        Driver {
            relay: self,
            turn: Vec::with_capacity(TURN),
            spin: SPIN_MAX,
        }
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Schedule for Relay {
    fn schedule(&self, task: Arc<Task>) {
        let mut state = lock(&self.state);
        if state.closed {
            // Refused: the task defers its lane's drop if this was the last reference.
            drop(state);
            drop(task);
            return;
        }
        state.ready.push_back(task);
        self.queued.store(state.ready.len(), Ordering::Release);
        let wake = !std::mem::replace(&mut state.awake, true);
        drop(state);
        if wake {
            self.waker.wake();
        }
    }
}

struct Driver {
    relay: Arc<Relay>,
    /// The lanes of the current turn, taken from the queue under one lock.
    turn: Vec<Arc<Task>>,
    /// How long (ns) the relay waits for a lane to be woken before it lets tokio park.
    spin: u64,
}

/// The longest the relay waits for a wake-up before it lets tokio park (adapted down when
/// such waits find nothing, up when they do).
const SPIN_MAX: u64 = 20_000;
const SPIN_MIN: u64 = 500;

impl Driver {
    /// Waits up to `self.spin` for a lane to be queued: a lane woken by another thread in
    /// mid-burst (a consumer making room, a source delivering) is then polled without the
    /// runtime parking and being woken through the kernel. True if one was.
    ///
    /// After the first tenth of the budget it yields the core rather than spinning on it:
    /// the thread that would wake a lane may be waiting for this very core. On two cores
    /// the kernel put the runtime's thread, woken by the consumer, on the consumer's core
    /// (the other idle), so the consumer could not make room while the relay spun, the
    /// relay parked, and the next item woke it again: W3.c256 took one park and one
    /// `eventfd` wake-up per 2.4 items (27k of each for 64k items, at 89% of ideal and
    /// 8 µs of CPU per item). Yielding lets the consumer drain in turn: 480 parks, 96%,
    /// 2 µs.
    fn spin_for_work(&mut self) -> bool {
        let ticks = (self.spin as f64 / clock::ns_per_tick()) as u64;
        let started = clock::now();
        loop {
            if self.relay.queued.load(Ordering::Acquire) > 0 {
                self.spin = (self.spin * 2).min(SPIN_MAX);
                return true;
            }
            let spun = clock::now().saturating_sub(started);
            if spun >= ticks {
                self.spin = (self.spin / 2).max(SPIN_MIN);
                return false;
            }
            if spun * 10 >= ticks {
                std::thread::yield_now();
            } else {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.relay.waker.register(cx.waker());
        if this.relay.queued.load(Ordering::Acquire) == 0 {
            this.spin_for_work();
        }
        {
            let mut state = lock(&this.relay.state);
            if state.ready.is_empty() {
                state.awake = false;
                return Poll::Pending;
            }
            let n = state.ready.len().min(TURN);
            this.turn.extend(state.ready.drain(..n));
            this.relay
                .queued
                .store(state.ready.len(), Ordering::Release);
        }
        for task in this.turn.drain(..) {
            task.run_once();
        }
        // More may be queued (by these lanes or other threads): come back after tokio's
        // other work. `awake` stays set, so their pushes needed no wake-up.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let (ready, lanes) = {
            let mut state = lock(&self.relay.state);
            state.closed = true;
            (
                std::mem::take(&mut state.ready),
                std::mem::take(&mut state.lanes),
            )
        };
        drop(ready);
        for lane in &lanes {
            lane.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use futures::channel::oneshot;

    use super::*;
    use crate::async_runtime::AsyncRuntime;
    use crate::executor::task::yield_now;

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lanes_woken_from_another_thread_all_run_and_use_tokio_timers() {
        let runtime = AsyncRuntime::start().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let mut triggers = Vec::new();
        for _ in 0..500 {
            let (tx, rx) = oneshot::channel::<()>();
            triggers.push(tx);
            let done = done.clone();
            runtime.relay().spawn(Box::pin(async move {
                rx.await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        // Fired from this thread: each wake is a push on the relay's queue.
        std::thread::sleep(Duration::from_millis(5));
        for tx in triggers {
            tx.send(()).unwrap();
        }
        wait_until("every lane ran", || done.load(Ordering::Relaxed) == 500);
    }

    #[test]
    fn a_lane_that_keeps_yielding_does_not_starve_the_others() {
        let mut runtime = AsyncRuntime::start().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let yields = Arc::new(AtomicUsize::new(0));
        {
            let (stop, yields) = (stop.clone(), yields.clone());
            runtime.relay().spawn(Box::pin(async move {
                while !stop.load(Ordering::Relaxed) {
                    yields.fetch_add(1, Ordering::Relaxed);
                    yield_now().await;
                }
            }));
        }
        wait_until("the busy lane runs", || {
            yields.load(Ordering::Relaxed) > 100
        });
        let other = Arc::new(AtomicBool::new(false));
        {
            let other = other.clone();
            runtime.relay().spawn(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                other.store(true, Ordering::Relaxed);
            }));
        }
        wait_until("the other lane ran", || other.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        assert!(runtime.shutdown(Instant::now() + Duration::from_secs(10)));
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn shutting_the_runtime_down_drops_lanes_that_never_finish() {
        let mut runtime = AsyncRuntime::start().unwrap();
        let (parked, never, queued) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let started = Arc::new(AtomicBool::new(false));
        {
            let (flag, started) = (DropFlag(parked.clone()), started.clone());
            runtime.relay().spawn(Box::pin(async move {
                let _flag = flag;
                started.store(true, Ordering::Relaxed);
                // Parked on a timer that outlives the runtime.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }));
        }
        {
            let flag = DropFlag(never.clone());
            runtime.relay().spawn(Box::pin(async move {
                let _flag = flag;
                // Parked with its waker held by nothing but itself.
                std::future::pending::<()>().await;
            }));
        }
        wait_until("the lanes started", || started.load(Ordering::Relaxed));
        let (tx, rx) = oneshot::channel::<()>();
        {
            let flag = DropFlag(queued.clone());
            runtime.relay().spawn(Box::pin(async move {
                let _flag = flag;
                let _ = rx.await;
                std::future::pending::<()>().await;
            }));
        }
        // Until the shutdown, a lane nobody can wake stays alive (stalled, not vanished).
        std::thread::sleep(Duration::from_millis(20));
        crate::executor::drop_deferred();
        assert!(
            !never.load(Ordering::Relaxed),
            "a stalled lane vanished before shutdown"
        );
        assert!(runtime.shutdown(Instant::now() + Duration::from_secs(10)));
        crate::executor::drop_deferred();
        assert!(
            parked.load(Ordering::Relaxed),
            "the lane parked on a timer was dropped"
        );
        assert!(
            never.load(Ordering::Relaxed),
            "the lane waiting on nothing was dropped"
        );
        assert!(
            queued.load(Ordering::Relaxed),
            "the lane waiting on a channel was dropped"
        );
        // A wake after the shutdown is refused, not queued.
        drop(tx);
    }

    #[test]
    fn a_panic_escaping_a_lane_ends_that_lane_only() {
        let runtime = AsyncRuntime::start().unwrap();
        runtime.relay().spawn(Box::pin(async {
            panic!("a bug in a lane, not in a stage function")
        }));
        let done = Arc::new(AtomicBool::new(false));
        {
            let done = done.clone();
            runtime.relay().spawn(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                done.store(true, Ordering::Relaxed);
            }));
        }
        wait_until("the other lane ran", || done.load(Ordering::Relaxed));
    }
}
