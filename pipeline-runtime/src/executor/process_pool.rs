//! A pool of worker processes that runs process stages.
//!
//! Each worker is supervised by one thread of this process, which takes a call from the
//! pool's queue, sends it to its worker and waits for the reply. A worker that dies fails
//! the call it was running with an error saying how it ended, and its thread starts a
//! replacement before taking the next call.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;

use super::process_fn::{request_header, REPLY_ERROR, REPLY_OK, REPLY_PANIC, STAGE_WORKER_ENTRY};
use crate::error::BuildError;
use crate::process::{Channel, ChildKiller, ChildProcess, ProcessError, SpawnOptions};

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
        let (jobs, queue) = async_channel::unbounded::<Job>();
        let started = Arc::new(AtomicU64::new(0));
        let mut slots = Vec::with_capacity(self.num_workers);
        // Start every worker first, so that a pool that cannot start fails here, whole.
        let mut workers = Vec::with_capacity(self.num_workers);
        for _ in 0..self.num_workers {
            let worker = Worker::start(&spawn)
                .map_err(|e| BuildError::new(format!("process pool `{}`: {e}", self.name)))?;
            started.fetch_add(1, Ordering::Relaxed);
            workers.push(worker);
        }
        for (index, worker) in workers.into_iter().enumerate() {
            let current = Arc::new(Mutex::new(Some((
                worker.child.pid(),
                worker.child.killer(),
            ))));
            let supervisor = Supervisor {
                spawn: spawn.clone(),
                queue: queue.clone(),
                current: current.clone(),
                started: started.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("{}-supervisor-{index}", self.name))
                .spawn(move || supervisor.run(worker))
                .map_err(|e| BuildError::new(format!("cannot start thread: {e}")))?;
            slots.push(Slot {
                current,
                thread: Some(thread),
            });
        }
        Ok(ProcessPool {
            shared: Arc::new(PoolShared {
                jobs,
                slots: Mutex::new(slots),
                started,
                name: self.name,
                num_workers: self.num_workers,
            }),
        })
    }
}

/// A pool of worker processes for process stages (`pipe(process f, executor = pool)` in
/// the macro, [`process_pipe`](crate::StageBuilder::process_pipe) in the builder).
///
/// The workers start when the pool is built and serve every stage and pipeline the pool
/// is given to. Cloning gives another handle to the same workers; when the last handle is
/// dropped (pipelines hold one while they run), every worker is killed and reaped.
#[derive(Clone)]
pub struct ProcessPool {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.shared.name)
            .field("num_workers", &self.shared.num_workers)
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
        self.shared.num_workers
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
        let slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .filter_map(|s| {
                let current = s.current.lock().unwrap_or_else(|e| e.into_inner());
                current.as_ref().map(|(pid, _)| *pid)
            })
            .collect()
    }

    /// Queues a call of the registered function `name` on an encoded input; the answer
    /// comes when a worker has run it. The answer does not keep the pool alive.
    pub(crate) fn submit(
        &self,
        name: &'static str,
        input: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, CallError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .shared
            .jobs
            .try_send(Job { name, input, reply })
            .is_ok();
        async move {
            if !queued {
                return Err(CallError::PoolClosed);
            }
            answer.await.unwrap_or(Err(CallError::PoolClosed))
        }
    }
}

struct PoolShared {
    jobs: async_channel::Sender<Job>,
    slots: Mutex<Vec<Slot>>,
    started: Arc<AtomicU64>,
    name: String,
    num_workers: usize,
}

struct Slot {
    /// The live worker's pid and killer, to unblock its supervisor at shutdown.
    current: Arc<Mutex<Option<(u32, ChildKiller)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        self.jobs.close();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.iter() {
            let current = slot.current.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, killer)) = current.as_ref() {
                killer.kill();
            }
        }
        // A killed worker fails its reader at once, so the supervisors end promptly; each
        // reaps its worker on the way out.
        for slot in slots.iter_mut() {
            if let Some(thread) = slot.thread.take() {
                if thread.thread().id() != std::thread::current().id() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// One call waiting for a worker.
struct Job {
    name: &'static str,
    input: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
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
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Panic(m) => write!(f, "panicked in a worker process: {m}"),
            CallError::Error(m) | CallError::WorkerDied(m) | CallError::NoWorker(m) => {
                f.write_str(m)
            }
            CallError::PoolClosed => f.write_str("the process pool was shut down"),
        }
    }
}

impl std::error::Error for CallError {}

struct Worker {
    child: ChildProcess,
    channel: Channel,
}

impl Worker {
    fn start(spawn: &SpawnOptions) -> Result<Worker, ProcessError> {
        let (child, channel) = ChildProcess::spawn(STAGE_WORKER_ENTRY, &[], spawn)?;
        Ok(Worker { child, channel })
    }
}

struct Supervisor {
    spawn: SpawnOptions,
    queue: async_channel::Receiver<Job>,
    current: Arc<Mutex<Option<(u32, ChildKiller)>>>,
    started: Arc<AtomicU64>,
}

impl Supervisor {
    fn run(self, first: Worker) {
        let mut worker = Some(first);
        while let Ok(job) = self.queue.recv_blocking() {
            if job.reply.is_canceled() {
                continue; // the stage that asked has stopped
            }
            if worker.is_none() {
                match self.replace() {
                    Ok(w) => worker = Some(w),
                    Err(e) => {
                        let _ = job.reply.send(Err(CallError::NoWorker(format!(
                            "no worker process could be started: {e}"
                        ))));
                        continue;
                    }
                }
            }
            let w = worker.as_mut().expect("started above");
            match exchange(&mut w.channel, &job) {
                Ok(result) => {
                    let _ = job.reply.send(result);
                }
                Err(io) => {
                    let mut dead = worker.take().expect("running");
                    self.set_current(None);
                    // The pipe broke because the worker ended (or is ending): wait for it.
                    dead.child.kill();
                    let report = dead.child.wait().clone();
                    let message = format!(
                        "worker process {} {report} while running this item ({io}); a \
                         replacement worker was started",
                        dead.child.pid()
                    );
                    let _ = job.reply.send(Err(CallError::WorkerDied(message)));
                    drop(dead);
                    // Start the replacement now, not when the next item comes.
                    if !self.queue.is_closed() {
                        worker = self.replace().ok();
                    }
                }
            }
        }
        self.set_current(None);
        drop(worker); // kills and reaps the worker
    }

    fn replace(&self) -> Result<Worker, ProcessError> {
        let worker = Worker::start(&self.spawn)?;
        self.started.fetch_add(1, Ordering::Relaxed);
        self.set_current(Some((worker.child.pid(), worker.child.killer())));
        if self.queue.is_closed() {
            // The pool was dropped while this worker started: do not leave it running.
            worker.child.kill();
        }
        Ok(worker)
    }

    fn set_current(&self, current: Option<(u32, ChildKiller)>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = current;
    }
}

/// Sends one call and reads its reply; an I/O error means the worker is gone.
fn exchange(channel: &mut Channel, job: &Job) -> std::io::Result<Result<Vec<u8>, CallError>> {
    let header = request_header(job.name);
    channel.send_parts(&[&header, &job.input])?;
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
