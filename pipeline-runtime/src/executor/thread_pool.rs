//! A pool of named OS threads that runs stage lanes, with an optional per-thread initialiser.
//!
//! This is both the pipeline's default pool (`num_threads` threads, owned by the pipeline) and
//! the user's dedicated pool (for thread-affine state such as a CUDA stream), which may serve
//! several stages and several pipelines.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::task::{drop_deferred, LaneFuture, Schedule, Task};
use crate::failure::BuildError;
use crate::sync::lock;

type ThreadInit = Arc<dyn Fn(usize) + Send + Sync>;

/// Configures a [`ThreadPool`].
pub struct ThreadPoolBuilder {
    num_threads: usize,
    name: String,
    on_start: Option<ThreadInit>,
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("num_threads", &self.num_threads)
            .field("name", &self.name)
            .field("on_start", &self.on_start.is_some())
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// Number of threads (at least 1). Default 1.
    pub fn num_threads(mut self, n: usize) -> Self {
        self.num_threads = n;
        self
    }

    /// Thread name prefix; threads are named `{name}-{index}`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A function run once on each thread, with the thread's index, before it runs any stage.
    /// Use it to set up thread-local state (a CUDA stream, a decoder context).
    pub fn on_thread_start(mut self, init: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_start = Some(Arc::new(init));
        self
    }

    /// Starts the threads.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        if self.num_threads == 0 {
            return Err(BuildError::new(format!(
                "thread pool `{}`: num_threads must be at least 1",
                self.name
            )));
        }
        let inner = Arc::new(PoolInner {
            queue: Mutex::new(PoolQueue {
                tasks: VecDeque::new(),
                idle: 0,
                shutdown: false,
                retire: 0,
            }),
            available: Condvar::new(),
            queued: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(self.num_threads);
        for index in 0..self.num_threads {
            handles.push(spawn_worker(&inner, &self.name, index, &self.on_start)?);
        }
        Ok(ThreadPool {
            shared: Arc::new(PoolHandle {
                inner,
                handles: Mutex::new(handles),
                name: self.name,
                num_threads: AtomicUsize::new(self.num_threads),
                on_start: self.on_start,
                next_index: AtomicUsize::new(self.num_threads),
            }),
        })
    }
}

fn spawn_worker(
    inner: &Arc<PoolInner>,
    name: &str,
    index: usize,
    init: &Option<ThreadInit>,
) -> Result<JoinHandle<()>, BuildError> {
    let inner = inner.clone();
    let init = init.clone();
    std::thread::Builder::new()
        .name(format!("{name}-{index}"))
        .spawn(move || {
            if let Some(init) = init {
                init(index);
            }
            inner.work();
        })
        .map_err(|e| BuildError::new(format!("cannot start thread: {e}")))
}

/// A pool of threads on which stages run. Cloning gives another handle to the same threads;
/// the threads end when the last handle is dropped (or on [`ThreadPool::shutdown`]).
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<PoolHandle>,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("num_threads", &self.num_threads())
            .finish()
    }
}

struct PoolHandle {
    inner: Arc<PoolInner>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    name: String,
    /// The threads asked for (those retiring excluded).
    num_threads: AtomicUsize,
    on_start: Option<ThreadInit>,
    /// The index the next thread started by a resize gets.
    next_index: AtomicUsize,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.inner.request_shutdown();
        // Joining here could wait on a stage function that never returns; the threads exit
        // on their own once idle, so they are detached instead.
    }
}

struct PoolInner {
    queue: Mutex<PoolQueue>,
    /// Tasks in `queue`, readable without the lock while spinning.
    queued: AtomicUsize,
    available: Condvar,
}

struct PoolQueue {
    tasks: VecDeque<Arc<Task>>,
    idle: usize,
    shutdown: bool,
    /// Threads asked to exit (a resize down): the next ones between two tasks do.
    retire: usize,
}

impl PoolInner {
    fn work(&self) {
        loop {
            let task = {
                let mut q = lock(&self.queue);
                loop {
                    if q.shutdown {
                        // Drop queued lanes here, on a pool thread, not in whoever shut us down.
                        let dropped: Vec<_> = q.tasks.drain(..).collect();
                        drop(q);
                        drop(dropped);
                        drop_deferred();
                        return;
                    }
                    if q.retire > 0 {
                        q.retire -= 1;
                        // A wake-up meant for a task may have reached this thread: pass it on.
                        let pending = !q.tasks.is_empty();
                        drop(q);
                        if pending {
                            self.available.notify_one();
                        }
                        drop_deferred();
                        return;
                    }
                    if let Some(task) = q.tasks.pop_front() {
                        self.queued.fetch_sub(1, Ordering::Relaxed);
                        break task;
                    }
                    // Briefly look for work before sleeping: a wake-up costs far more than
                    // the few microseconds a busy peer takes to hand over the next lane.
                    drop(q);
                    self.spin_for_work();
                    q = lock(&self.queue);
                    if q.shutdown || !q.tasks.is_empty() {
                        continue;
                    }
                    q.idle += 1;
                    q = self.available.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.idle -= 1;
                }
            };
            task.run();
            // Between two tasks this thread holds no lock: a safe point to drop lanes that
            // were cancelled inside a waker.
            drop_deferred();
        }
    }

    fn spin_for_work(&self) {
        for round in 0..crate::queue::SPIN_ROUNDS {
            if self.queued.load(Ordering::Relaxed) > 0 {
                return;
            }
            crate::queue::spin_pause(round);
        }
    }

    fn request_shutdown(&self) {
        let mut q = lock(&self.queue);
        q.shutdown = true;
        drop(q);
        self.available.notify_all();
    }
}

impl Schedule for PoolInner {
    fn schedule(&self, task: Arc<Task>) {
        let mut q = lock(&self.queue);
        if q.shutdown {
            // Refused: if this was the last reference, the task defers its lane's drop
            // (this runs inside a waker, possibly under the waker's caller's lock).
            drop(q);
            drop(task);
            return;
        }
        q.tasks.push_back(task);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.available.notify_one();
        }
    }
}

impl ThreadPool {
    /// A builder for a pool; `ThreadPool::builder().num_threads(1).name("gpu")` is the usual
    /// dedicated single thread.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            num_threads: 1,
            name: "pipeline-pool".to_owned(),
            on_start: None,
        }
    }

    /// Number of threads in the pool (after a resize: the number asked for).
    pub fn num_threads(&self) -> usize {
        self.shared.num_threads.load(Ordering::Relaxed)
    }

    /// Sets the number of threads: new threads start now; surplus ones exit once their
    /// current stage call returns.
    pub(crate) fn resize(&self, n: usize) -> Result<(), BuildError> {
        if n == 0 {
            return Err(BuildError::new(format!(
                "thread pool `{}`: num_threads must be at least 1",
                self.shared.name
            )));
        }
        let shared = &self.shared;
        let mut q = lock(&shared.inner.queue);
        if q.shutdown {
            return Ok(());
        }
        let current = shared.num_threads.load(Ordering::Relaxed);
        if n < current {
            q.retire += current - n;
            shared.num_threads.store(n, Ordering::Relaxed);
            drop(q);
            shared.inner.available.notify_all();
            return Ok(());
        }
        // Threads asked to exit and still there are kept first.
        let kept = q.retire.min(n - current);
        q.retire -= kept;
        drop(q);
        let mut handles = lock(&shared.handles);
        for _ in current + kept..n {
            let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
            handles.push(spawn_worker(
                &shared.inner,
                &shared.name,
                index,
                &shared.on_start,
            )?);
            shared.num_threads.fetch_add(1, Ordering::Relaxed);
        }
        shared.num_threads.fetch_add(kept, Ordering::Relaxed);
        Ok(())
    }

    /// The pool's name prefix.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) fn spawn_lane(&self, lane: LaneFuture) {
        Task::spawn(lane, self.shared.inner.clone());
    }

    /// Asks the threads to end once their current stage call returns, and waits up to
    /// `timeout` for them. Returns `true` if every thread has exited. Pending work is dropped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.shared.inner.request_shutdown();
        let handles: Vec<_> = std::mem::take(&mut *lock(&self.shared.handles));
        join_all_until(handles, Instant::now() + timeout)
    }
}

/// Joins threads until `deadline`; threads still running then are detached.
pub(crate) fn join_all_until(handles: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
    let mut all = true;
    for handle in handles {
        let current = std::thread::current().id();
        if handle.thread().id() == current {
            continue; // a pipeline dropped from its own pool thread cannot join itself
        }
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            all = false;
        }
    }
    all
}
