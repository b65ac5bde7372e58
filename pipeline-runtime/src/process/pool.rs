//! A pool of worker processes that runs process stages.
//!
//! The pool owns one worker per *caller thread*: process stages' lanes run on the pool's own
//! threads, and thread `i` talks to worker `i` directly (send the call, block on the reply).
//! A round trip so costs two wake-ups (the worker's and the caller's), with no hand-off to a
//! supervising thread in between. A worker that dies fails the call it was running with an
//! error saying how it ended, and its caller thread starts a replacement at once.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::channel::Channel;
use super::child::{ChildKiller, ChildProcess, ProcessError, SpawnOptions};
use super::stage_worker::{request_header, REPLY_ERROR, REPLY_OK, REPLY_PANIC, STAGE_WORKER_ENTRY};
use crate::executor::task::LaneFuture;
use crate::executor::ThreadPool;
use crate::failure::BuildError;
use crate::sync::lock;

thread_local! {
    /// On a caller thread of a pool: (pool id, index of its worker).
    static CALLER: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(0);

/// Configures a [`ProcessPool`].
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    num_workers: usize,
    name: String,
    memory_limit: Option<u64>,
    handshake_timeout: Duration,
}

impl ProcessPoolBuilder {
    /// Number of worker processes (at least 1). Default 1.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// A name for logs and errors; workers' stderr lines are prefixed with it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Caps each worker's address space (bytes, `RLIMIT_AS`): a call that allocates past it
    /// fails (the worker aborts and is replaced) instead of exhausting the machine.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// How long a new worker may take to start (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Starts the workers and waits until each has answered its handshake.
    ///
    /// Fails if a worker does not start, e.g. because the program's `main` does not call
    /// [`process::init`](crate::process::init) first, or because this process is itself a
    /// worker.
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        if self.num_workers == 0 {
            return Err(BuildError::new(format!(
                "process pool `{}`: num_workers must be at least 1",
                self.name
            )));
        }
        let mut spawn = SpawnOptions::new()
            .name(self.name.clone())
            .handshake_timeout(self.handshake_timeout);
        if let Some(limit) = self.memory_limit {
            spawn = spawn.memory_limit(limit);
        }
        let started = Arc::new(AtomicU64::new(0));
        let mut slots = Vec::with_capacity(self.num_workers);
        for _ in 0..self.num_workers {
            let slot = Arc::new(Slot {
                worker: Mutex::new(None),
                killer: Mutex::new(None),
                closed: AtomicBool::new(false),
                spawn: spawn.clone(),
                started: started.clone(),
            });
            // Start every worker now, so that a pool that cannot start fails here, whole
            // (the slots made so far kill their workers when dropped).
            let worker = slot
                .start()
                .map_err(|e| BuildError::new(format!("process pool `{}`: {e}", self.name)))?;
            *lock(&slot.worker) = Some(worker);
            slots.push(slot);
        }
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let threads = ThreadPool::builder()
            .num_threads(self.num_workers)
            .name(format!("{}-caller", self.name))
            .on_thread_start(move |index| CALLER.with(|c| c.set(Some((id, index)))))
            .build()?;
        Ok(ProcessPool {
            shared: Arc::new(PoolShared {
                id,
                slots,
                threads,
                started,
                name: self.name,
            }),
        })
    }
}

/// A pool of worker processes for process stages (`pipe(process f, executor = pool)` in
/// the macro, [`process_pipe`](crate::StageBuilder::process_pipe) in the builder).
///
/// The workers start when the pool is built and serve every stage and pipeline the pool
/// is given to; each has one thread of this process that calls it, so `num_workers` calls
/// run at once. Cloning gives another handle to the same workers; when the last handle is
/// dropped (a pipeline holds one until it stops), every worker is killed and reaped.
///
/// A pipeline that stops (dropped, [`stop`](crate::Pipeline::stop), a fatal stall) while
/// one of its process calls is stuck kills the worker running it, and the pool starts a
/// replacement: a pool you keep serves the next pipeline with all its workers. Workers
/// die with this process, even in the middle of a call (on Linux, `PR_SET_PDEATHSIG`).
#[derive(Clone)]
pub struct ProcessPool {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.shared.name)
            .field("num_workers", &self.shared.slots.len())
            .finish()
    }
}

impl ProcessPool {
    /// A builder; `ProcessPool::builder().num_workers(4).build()?` is the usual pool.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            num_workers: 1,
            name: "pipeline-worker".to_owned(),
            memory_limit: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Number of worker processes.
    pub fn num_workers(&self) -> usize {
        self.shared.slots.len()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many worker processes this pool has started so far: `num_workers` at first, one
    /// more for each replacement of a worker that died.
    pub fn workers_started(&self) -> u64 {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// The process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .slots
            .iter()
            .filter_map(|s| lock(&s.killer).as_ref().map(|(pid, _)| *pid))
            .collect()
    }

    /// Runs a lane of a process stage on one of the pool's caller threads (never on the
    /// pipeline's default pool), as `Executor::Threads` runs a lane on a pool of one's own.
    pub(crate) fn spawn_lane(&self, _default_pool: &ThreadPool, lane: LaneFuture) {
        // The lane keeps a handle: the caller threads must not shut down while it runs.
        let handle = self.shared.threads.clone();
        self.shared.threads.spawn_lane(Box::pin(async move {
            let _handle = handle;
            lane.await
        }));
    }

    /// The worker slot of the calling thread, if it is one of this pool's caller threads.
    /// The slot does not keep the pool alive, so dropping the pool during a call still
    /// kills the worker (which ends the call).
    pub(crate) fn caller_slot(&self) -> Result<Arc<Slot>, CallError> {
        match CALLER.with(Cell::get) {
            Some((id, index)) if id == self.shared.id => Ok(self.shared.slots[index].clone()),
            _ => Err(CallError::Error(
                "a process stage ran outside its pool's caller threads".to_owned(),
            )),
        }
    }
}

impl ProcessPool {
    /// The worker slots, for a process region, which runs one nested pipeline per worker.
    pub(crate) fn slots(&self) -> &[Arc<Slot>] {
        &self.shared.slots
    }
}

struct PoolShared {
    id: usize,
    slots: Vec<Arc<Slot>>,
    threads: ThreadPool,
    started: Arc<AtomicU64>,
    name: String,
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // Kill first, so that callers blocked on a worker return at once; then reap.
        for slot in &self.slots {
            slot.close();
        }
        for slot in &self.slots {
            drop(lock(&slot.worker).take());
        }
    }
}

/// One worker and what replacing it needs.
pub(crate) struct Slot {
    worker: Mutex<Option<Worker>>,
    /// The live worker's pid and killer, readable while a caller blocks on the worker.
    killer: Mutex<Option<(u32, ChildKiller)>>,
    closed: AtomicBool,
    spawn: SpawnOptions,
    started: Arc<AtomicU64>,
}

impl Slot {
    /// Sends one call to this slot's worker and waits for the reply, listed in `calls` while
    /// the worker runs it (so that the stage's stop can kill it). A worker that dies during
    /// the call is replaced at once, not when the next item comes.
    pub(crate) fn call(
        self: &Arc<Self>,
        name: &str,
        input: &[u8],
        calls: &StageCalls,
    ) -> Result<Vec<u8>, CallError> {
        let talk = |channel: &mut Channel| {
            // Listed only once this call holds the worker, so that a stop never kills a
            // worker that is running someone else's call.
            if !calls.enter(self) {
                return Ok(Err(CallError::Stopped));
            }
            let reply = exchange(channel, name, input);
            calls.leave(self);
            reply
        };
        match self.run_exclusive(talk) {
            Ok(reply) => reply,
            Err(CallError::WorkerDied(how)) => {
                self.restart();
                Err(CallError::WorkerDied(format!(
                    "{how} while running this item; a replacement worker was started"
                )))
            }
            Err(other) => Err(other),
        }
    }

    /// Runs `talk` on this slot's worker channel, holding the worker for as long as it runs
    /// (a process region's nested pipeline). An I/O error means the worker is gone: it is
    /// reaped and the slot left empty (see [`restart`](Self::restart)), and the error says
    /// how it ended.
    pub(crate) fn run_exclusive<R>(
        &self,
        talk: impl FnOnce(&mut Channel) -> std::io::Result<R>,
    ) -> Result<R, CallError> {
        let mut worker = lock(&self.worker);
        if self.closed.load(Ordering::Acquire) {
            return Err(CallError::PoolClosed);
        }
        if worker.is_none() {
            let fresh = self.start().map_err(|e| {
                CallError::NoWorker(format!("no worker process could be started: {e}"))
            })?;
            *worker = Some(fresh);
        }
        let live = worker.as_mut().expect("started above");
        match talk(&mut live.channel) {
            Ok(result) => Ok(result),
            Err(io) => {
                let mut dead = worker.take().expect("running");
                *lock(&self.killer) = None;
                dead.child.kill();
                let report = dead.child.wait().clone();
                let pid = dead.child.pid();
                drop(dead);
                if self.closed.load(Ordering::Acquire) {
                    return Err(CallError::PoolClosed);
                }
                Err(CallError::WorkerDied(format!(
                    "worker process {pid} {report} ({io})"
                )))
            }
        }
    }

    /// Starts a worker in an empty slot now (a replacement), rather than at its next use.
    pub(crate) fn restart(&self) {
        let mut worker = lock(&self.worker);
        if worker.is_none() && !self.closed.load(Ordering::Acquire) {
            *worker = self.start().ok();
        }
    }

    /// Kills the live worker (it is reaped and replaced by whoever holds it).
    pub(crate) fn kill_worker(&self) {
        if let Some((_, killer)) = lock(&self.killer).as_ref() {
            killer.kill();
        }
    }

    fn start(&self) -> Result<Worker, ProcessError> {
        let (child, channel) = ChildProcess::spawn(STAGE_WORKER_ENTRY, &[], &self.spawn)?;
        self.started.fetch_add(1, Ordering::Relaxed);
        *lock(&self.killer) = Some((child.pid(), child.killer()));
        if self.closed.load(Ordering::Acquire) {
            child.kill(); // the pool closed while this worker started
        }
        Ok(Worker { child, channel })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some((_, killer)) = lock(&self.killer).as_ref() {
            killer.kill();
        }
    }
}

struct Worker {
    child: ChildProcess,
    channel: Channel,
}

/// The calls a process stage of one pipeline has running in the pool's workers, so that
/// the pipeline's stop can kill the workers running them: a call stuck in a worker would
/// otherwise keep its worker (and its caller thread) from a pool the user goes on using.
/// The killed worker's caller thread starts a replacement at once.
#[derive(Default)]
pub(crate) struct StageCalls {
    /// Whether the stage has stopped, and the slots whose worker runs one of its calls.
    state: Mutex<(bool, Vec<Arc<Slot>>)>,
}

impl StageCalls {
    /// Lists a call starting on `slot`; false if the stage has stopped (do not start it).
    fn enter(&self, slot: &Arc<Slot>) -> bool {
        let mut state = lock(&self.state);
        if state.0 {
            return false;
        }
        state.1.push(slot.clone());
        true
    }

    /// Unlists a call that ended on `slot`.
    fn leave(&self, slot: &Arc<Slot>) {
        let mut state = lock(&self.state);
        if let Some(at) = state.1.iter().position(|s| Arc::ptr_eq(s, slot)) {
            state.1.swap_remove(at);
        }
    }

    /// Stops the stage: no call starts any more, and the workers running its calls are
    /// killed. They are killed while the list is locked, so each is still running this
    /// stage's call (a call leaves the list before its worker is free for another).
    pub(crate) fn stop(&self) {
        let mut state = lock(&self.state);
        state.0 = true;
        for slot in state.1.drain(..) {
            slot.kill_worker();
        }
    }
}

/// Why a call in a worker did not produce an output.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The function panicked; the worker lives on.
    Panic(String),
    /// Decoding the input, encoding the output, or finding the function failed.
    Error(String),
    /// The worker died while running the call.
    WorkerDied(String),
    /// No worker could be started for the call.
    NoWorker(String),
    /// The pool was shut down.
    PoolClosed,
    /// The stage that made the call has stopped.
    Stopped,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Panic(m) => write!(f, "panicked in a worker process: {m}"),
            CallError::Error(m) | CallError::WorkerDied(m) | CallError::NoWorker(m) => {
                f.write_str(m)
            }
            CallError::PoolClosed => f.write_str("the process pool was shut down"),
            CallError::Stopped => f.write_str("the pipeline stopped"),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one call and reads its reply; an I/O error means the worker is gone.
fn exchange(
    channel: &mut Channel,
    name: &str,
    input: &[u8],
) -> std::io::Result<Result<Vec<u8>, CallError>> {
    let header = request_header(name);
    channel.send_parts(&[&header, input])?;
    let mut reply = channel
        .recv()?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let Some(status) = reply.pop() else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let text = || String::from_utf8_lossy(&reply).into_owned();
    Ok(match status {
        REPLY_OK => Ok(reply),
        REPLY_ERROR => Err(CallError::Error(text())),
        REPLY_PANIC => Err(CallError::Panic(text())),
        _ => return Err(std::io::ErrorKind::InvalidData.into()),
    })
}
