//! The parent's side of a worker child: spawning the re-executed binary, checking its
//! handshake, forwarding its stderr, and supervising it until it is reaped.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::channel::{encode, wait_readable, Channel, FrameReader, FrameWriter};
use super::exit::{is_alloc_failure, ExitReport};
use super::protocol::{handshake, Start, HANDSHAKE_LEN, PROTOCOL_VERSION, WORKER_ARG, WORKER_ENV};
use super::registry::{self, Kind};
use super::worker::{is_worker, WorkerFn};
use crate::sync::lock;

/// Starts `command` on one thread kept for the whole life of this process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the process:
/// a pool built on a short-lived thread (a test's, a scoped one) would lose its workers
/// with that thread. Forking every child from a thread that never ends makes the signal
/// mean what it should, that this process died. Only the fork and exec happen there;
/// the caller waits for the handshake itself.
fn spawn_from_keeper(mut command: Command) -> std::io::Result<std::process::Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static KEEPER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pipeline-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(keeper) = keeper else {
        // No thread could be started: fork here (the signal then follows this thread).
        return command.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    if let Err(mpsc::SendError((mut command, _))) = lock(keeper).send((command, reply_tx)) {
        return command.spawn();
    }
    reply_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread ended")))
}

/// Lines of a child's stderr kept for its [`ExitReport`].
const STDERR_TAIL_LINES: usize = 16;
/// Longest stderr line kept (characters); longer ones are cut.
const STDERR_LINE_MAX: usize = 400;

/// How to start a worker child.
#[derive(Debug, Clone)]
pub(crate) struct SpawnOptions {
    name: String,
    handshake_timeout: Duration,
    memory_limit: Option<u64>,
    env: Vec<(OsString, OsString)>,
    /// Descriptors of this process the child keeps open across `exec`, at the same numbers
    /// (a subprocess's shared-memory ring); every other one is close-on-exec.
    inherit_fds: Vec<i32>,
    /// The child's arguments instead of [`WORKER_ARG`] (tests: a libtest child runs one test).
    #[cfg(test)]
    pub(super) args: Option<Vec<OsString>>,
    /// Output the child may write before its handshake (tests: libtest's "running 1 test").
    #[cfg(test)]
    pub(super) preamble: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        Self {
            name: "worker".to_owned(),
            handshake_timeout: Duration::from_secs(10),
            memory_limit: None,
            env: Vec::new(),
            inherit_fds: Vec::new(),
            #[cfg(test)]
            args: None,
            #[cfg(test)]
            preamble: false,
        }
    }
}

impl SpawnOptions {
    /// Defaults: name `worker`, a 10 s handshake timeout, no memory limit.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A name for logs and errors; the child's stderr lines are prefixed with it.
    pub(crate) fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long the child may take to prove it entered worker mode.
    pub(crate) fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Caps the child's address space (`RLIMIT_AS`, bytes); an allocation past it fails in
    /// the child (Rust then aborts it) instead of pressing on the whole machine.
    pub(crate) fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Keeps descriptor `fd` (close-on-exec here) open in the child, at the same number.
    /// The caller keeps it open until the child has started.
    pub(crate) fn inherit_fd(mut self, fd: i32) -> Self {
        self.inherit_fds.push(fd);
        self
    }

    /// An extra environment variable for the child.
    #[cfg(test)]
    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Why a child could not be started or talked to.
#[derive(Debug)]
pub struct ProcessError {
    message: String,
    exit: Option<ExitReport>,
}

impl ProcessError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: None,
        }
    }

    fn with_exit(message: impl Into<String>, exit: ExitReport) -> Self {
        Self {
            message: message.into(),
            exit: Some(exit),
        }
    }

    /// How the child ended, when it ended before or while this error happened.
    pub fn exit_report(&self) -> Option<&ExitReport> {
        self.exit.as_ref()
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(exit) = &self.exit {
            write!(f, " (the child {exit})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProcessError {}

/// The pid and whether it has been reaped, under one lock, so that a kill never reaches a
/// reused pid: a child that has exited stays a zombie (its pid reserved) until reaped.
#[derive(Debug)]
struct ChildState {
    pid: i32,
    reaped: Mutex<bool>,
}

impl ChildState {
    fn kill(&self) {
        let reaped = lock(&self.reaped);
        if !*reaped {
            // SAFETY: plain syscall on a pid that is ours and not yet reaped (see above).
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// Kills a child from another thread (e.g. to unblock a thread reading from it).
#[derive(Debug, Clone)]
pub(crate) struct ChildKiller {
    state: Arc<ChildState>,
}

impl ChildKiller {
    /// Sends `SIGKILL` to the child unless it has already been reaped.
    pub(crate) fn kill(&self) {
        self.state.kill();
    }
}

/// A running worker child. Dropping it kills the child (`SIGKILL`) and reaps it, so a
/// child never outlives its handle.
pub(crate) struct ChildProcess {
    child: std::process::Child,
    state: Arc<ChildState>,
    name: String,
    stderr_log: Arc<Mutex<StderrLog>>,
    stderr_thread: Option<JoinHandle<()>>,
    exit: Option<ExitReport>,
}

impl fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildProcess")
            .field("name", &self.name)
            .field("pid", &self.state.pid)
            .field("exit", &self.exit)
            .finish()
    }
}

impl ChildProcess {
    /// Re-executes the current binary as a worker that runs the entry point registered as
    /// `entry` (with `register!(worker ...)`, see [`registry`](super::registry)) with `args`.
    ///
    /// Returns once the child has answered the handshake, with the channel to it. Fails with
    /// a clear error if this process is itself a worker (workers never start workers), if
    /// no entry point of that name is registered, or if the child does not enter worker
    /// mode (its `main` does not call [`init`](super::init) first).
    pub(crate) fn spawn(
        entry: &str,
        args: &[u8],
        opts: &SpawnOptions,
    ) -> Result<(ChildProcess, Channel), ProcessError> {
        if is_worker() {
            return Err(ProcessError::new(format!(
                "cannot start worker `{}`: this process is itself a pipeline worker ({WORKER_ENV} \
                 is set), and workers never start workers. If this process runs your `main` \
                 instead of a worker, `main` must call `pipeline_runtime::process::init()` \
                 before anything else",
                opts.name
            )));
        }
        if registry::lookup::<WorkerFn>(entry, Kind::Worker).is_none() {
            return Err(ProcessError::new(format!(
                "cannot start worker `{}`: no worker entry point named `{entry}` is registered \
                 in this binary",
                opts.name
            )));
        }
        let exe = std::env::current_exe().map_err(|e| {
            ProcessError::new(format!("cannot find the current executable to re-run: {e}"))
        })?;
        let mut command = Command::new(&exe);
        #[cfg(test)]
        match &opts.args {
            Some(args) => command.args(args),
            None => command.arg(WORKER_ARG),
        };
        #[cfg(not(test))]
        command.arg(WORKER_ARG);
        command
            .env(WORKER_ENV, PROTOCOL_VERSION.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            command.env(k, v);
        }
        let parent = std::process::id() as libc::pid_t;
        let inherit = opts.inherit_fds.clone();
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // calls (prctl, getppid, fcntl), allocating nothing.
        unsafe {
            command.pre_exec(move || {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                {
                    // The child dies with this process, even while stuck in a call that
                    // never reads its input again (see `spawn_from_keeper` for the thread).
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent died before the prctl: no signal will come, so go now.
                    if libc::getppid() != parent {
                        // (An OS error: nothing may allocate between fork and exec.)
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                let _ = parent;
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = spawn_from_keeper(command).map_err(|e| {
            ProcessError::new(format!(
                "cannot start worker `{}` from {}: {e}",
                opts.name,
                exe.display()
            ))
        })?;
        let pid = child.id() as i32;
        let stderr_log = Arc::new(Mutex::new(StderrLog::default()));
        let stderr_thread = child.stderr.take().and_then(|stderr| {
            let tail = stderr_log.clone();
            let prefix = format!("[{} {pid}] ", opts.name);
            std::thread::Builder::new()
                .name(format!("{}-stderr", opts.name))
                .spawn(move || forward_stderr(stderr, &prefix, &tail))
                .ok()
        });
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        widen_pipe(stdin.as_raw_fd());
        widen_pipe(stdout.as_raw_fd());
        let mut process = ChildProcess {
            child,
            state: Arc::new(ChildState {
                pid,
                reaped: Mutex::new(false),
            }),
            name: opts.name.clone(),
            stderr_log,
            stderr_thread,
            exit: None,
        };
        let mut stdout = stdout;
        #[cfg(test)]
        let preamble = opts.preamble;
        #[cfg(not(test))]
        let preamble = false;
        if let Err(problem) = read_handshake(&mut stdout, opts.handshake_timeout, preamble) {
            process.kill();
            let exit = process.wait();
            return Err(ProcessError::with_exit(
                format!(
                    "worker `{}` (pid {pid}) did not enter worker mode: {problem}. The worker \
                     re-runs this program's `main`; `main` must call \
                     `pipeline_runtime::process::init()` before anything else",
                    opts.name
                ),
                exit.clone(),
            ));
        }
        let mut writer = FrameWriter::new(stdin);
        let start = Start {
            entry: entry.to_owned(),
            memory_limit: opts.memory_limit,
            args: args.to_vec(),
        };
        if let Err(e) = encode(&start).and_then(|bytes| writer.send(&bytes)) {
            let exit = process.wait();
            return Err(ProcessError::with_exit(
                format!("cannot start worker `{}` (pid {pid}): {e}", opts.name),
                exit.clone(),
            ));
        }
        Ok((process, Channel::new(FrameReader::new(stdout), writer)))
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.state.pid as u32
    }

    /// A handle that can kill the child from another thread.
    pub(crate) fn killer(&self) -> ChildKiller {
        ChildKiller {
            state: self.state.clone(),
        }
    }

    /// Sends `SIGKILL` (unless the child has already been reaped).
    pub(crate) fn kill(&self) {
        self.state.kill();
    }

    /// Waits for the child to end and reports how it did.
    pub(crate) fn wait(&mut self) -> &ExitReport {
        if self.exit.is_none() {
            self.wait_exited(true);
            self.reap();
        }
        self.exit.as_ref().expect("reaped")
    }

    /// The exit report if the child has ended, without blocking.
    pub(crate) fn try_wait(&mut self) -> Option<&ExitReport> {
        if self.exit.is_none() {
            if !self.wait_exited(false) {
                return None;
            }
            self.reap();
        }
        self.exit.as_ref()
    }

    /// Waits up to `timeout` for the child to end on its own (e.g. after the channel's
    /// writer was dropped), then kills it; returns how it ended.
    pub(crate) fn finish(&mut self, timeout: Duration) -> &ExitReport {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        while self.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        if self.exit.is_none() {
            self.kill();
        }
        self.wait()
    }

    /// Blocks (or not) until the child has exited, without reaping it.
    fn wait_exited(&self, block: bool) -> bool {
        let mut flags = libc::WEXITED | libc::WNOWAIT;
        if !block {
            flags |= libc::WNOHANG;
        }
        loop {
            // SAFETY: `info` is a plain C struct that waitid fills in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own child's pid, writing into `info`.
            let rc = unsafe { libc::waitid(libc::P_PID, self.state.pid as _, &mut info, flags) };
            if rc == 0 {
                // SAFETY: reading the pid field of a siginfo filled in by waitid.
                return block || unsafe { info.si_pid() } != 0;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                // ECHILD: already reaped (cannot happen while we hold the child); treat as ended.
                return true;
            }
        }
    }

    fn reap(&mut self) {
        let status = {
            let mut reaped = lock(&self.state.reaped);
            *reaped = true;
            self.child.wait()
        };
        let status = status.unwrap_or_else(|_| ExitStatus::from_raw(0));
        if let Some(thread) = self.stderr_thread.take() {
            // The pipe closes when the child exits, unless a grandchild inherited it.
            let deadline = Instant::now() + Duration::from_millis(500);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        let log = lock(&self.stderr_log);
        self.exit = Some(ExitReport {
            status,
            stderr_tail: log.tail.iter().cloned().collect(),
            key_line: log.key.clone(),
        });
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
            self.wait();
        }
    }
}

/// Reads the handshake within `timeout`; says what went wrong otherwise. With `preamble`,
/// whatever comes before the handshake is skipped (only tests allow that).
fn read_handshake(
    stdout: &mut impl Read_,
    timeout: Duration,
    preamble: bool,
) -> Result<(), String> {
    let expected = handshake();
    let mut got = Vec::with_capacity(HANDSHAKE_LEN);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; HANDSHAKE_LEN];
    while got.len() < HANDSHAKE_LEN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_readable(stdout.as_raw_fd(), left) {
            return Err(format!(
                "it did not answer the handshake within {timeout:?}"
            ));
        }
        match stdout.read(&mut buf[..HANDSHAKE_LEN - got.len()]) {
            Ok(0) => {
                return Err(if got.is_empty() {
                    "it exited without answering the handshake".to_owned()
                } else {
                    format!(
                        "it wrote {:?} on stdout and exited instead of answering the handshake",
                        String::from_utf8_lossy(&got)
                    )
                })
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading its handshake failed: {e}")),
        }
        if preamble {
            // Keep only the longest tail that can still begin the handshake.
            let start = (0..=got.len())
                .find(|&i| expected.starts_with(&got[i..]))
                .unwrap_or(got.len());
            got.drain(..start);
        }
        if !expected.starts_with(&got) {
            return Err(format!(
                "it wrote {:?} on stdout instead of the handshake",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    Ok(())
}

/// A readable stream with a file descriptor (for `poll`).
trait Read_: Read + AsRawFd {}
impl<T: Read + AsRawFd> Read_ for T {}

/// Asks for a 1 MiB pipe buffer (the default is 64 KiB), so that a large message crosses in
/// one write instead of many hand-offs; best effort (the system may cap it lower).
fn widen_pipe(fd: i32) {
    // SAFETY: fcntl on a pipe descriptor we own; failure leaves the pipe as it was.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// What is kept of a child's stderr: the last lines, and the most telling one.
#[derive(Default)]
struct StderrLog {
    tail: VecDeque<String>,
    /// An allocation failure (kept once seen), else the latest panic message.
    key: Option<String>,
    /// The previous line announced a panic; the message follows it.
    panic_header: bool,
}

impl StderrLog {
    fn push(&mut self, line: String) {
        let oom_seen = self.key.as_deref().is_some_and(is_alloc_failure);
        if is_alloc_failure(&line) {
            self.key = Some(line.clone());
        } else if self.panic_header && !oom_seen {
            self.key = Some(format!("panicked: {line}"));
        }
        self.panic_header = line.contains(" panicked at ");
        if self.tail.len() == STDERR_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// Copies the child's stderr to ours, line by line with a prefix, keeping what tells how
/// it ended.
fn forward_stderr(stderr: impl Read, prefix: &str, log: &Mutex<StderrLog>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        {
            let mut out = std::io::stderr().lock();
            let _ = writeln!(out, "{prefix}{text}");
        }
        let mut kept: String = text.chars().take(STDERR_LINE_MAX).collect();
        if kept.len() < text.len() {
            kept.push('…');
        }
        lock(log).push(kept);
    }
}
