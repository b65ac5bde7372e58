//! The child's side: entering worker mode from `main`, and running the entry point the
//! parent names (found in the crate's registry of functions a child runs).

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use super::channel::{decode, Channel, FrameReader, FrameWriter};
use super::protocol::{handshake, Start, WORKER_ENV};
use super::registry::{self, Kind};

/// A worker entry point as the registry keeps it: its start arguments and the channel to the
/// parent.
pub(crate) type WorkerFn = fn(args: Vec<u8>, channel: Channel) -> Result<(), String>;

/// A worker's exit code when its entry point returned an error.
pub(crate) const EXIT_ENTRY_FAILED: i32 = 1;
/// A worker's exit code when the protocol broke down (bad start message, I/O error).
pub(crate) const EXIT_PROTOCOL: i32 = 2;
/// A worker's exit code when the requested entry point is not registered.
pub(crate) const EXIT_NO_ENTRY: i32 = 3;
/// A worker's exit code when its entry point panicked.
pub(crate) const EXIT_PANIC: i32 = 101;

/// Set once this process has entered worker mode.
static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// Whether this process was started as a pipeline worker (whether or not it entered worker
/// mode: a child whose `main` forgot [`init`] is one too).
pub(crate) fn is_worker() -> bool {
    IN_WORKER.load(Ordering::Relaxed) || std::env::var_os(WORKER_ENV).is_some()
}

/// Enters worker mode if this process was started as a pipeline worker, and never returns
/// then; does nothing otherwise. Call it first thing in `main`, or put
/// [`#[pipeline_runtime::main]`](crate::main) on `main`, which calls it.
///
/// Worker processes re-run the program's own executable, so a worker starts at `main` like
/// the parent did. Without this call a worker would run the program a second time instead:
/// the parent notices (the child never answers the handshake) and reports it as an error,
/// and the child cannot start workers of its own, so a forgotten call is never a hang nor a
/// fork bomb.
pub fn init() {
    if std::env::var_os(WORKER_ENV).is_some() {
        IN_WORKER.store(true, Ordering::Relaxed);
        // Programs the worker's code starts must not think they are workers too.
        std::env::remove_var(WORKER_ENV);
        run_worker();
    }
}

fn die(code: i32, message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "pipeline worker: {message}");
    std::process::exit(code)
}

/// Worker mode: the protocol on private copies of stdin/stdout, the entry point, exit.
fn run_worker() -> ! {
    // The parent set PR_SET_PDEATHSIG (SIGKILL) between fork and exec, from a thread that
    // lives as long as the parent (`child::spawn_from_keeper`): a worker dies with its
    // parent even in the middle of a call. Its input channel closing says the same, later.
    let (input, output) = take_protocol_fds();
    let mut writer = FrameWriter::new(output);
    let mut reader = FrameReader::new(input);
    if writer.send_raw(&handshake()).is_err() {
        die(
            EXIT_PROTOCOL,
            "cannot write the handshake: the parent is gone",
        );
    }
    let start: Start = match reader.recv() {
        Ok(Some(bytes)) => match decode(&bytes) {
            Ok(start) => start,
            Err(e) => die(EXIT_PROTOCOL, &format!("bad start message: {e}")),
        },
        // The parent went away before saying what to run.
        Ok(None) => std::process::exit(0),
        Err(e) => die(
            EXIT_PROTOCOL,
            &format!("cannot read the start message: {e}"),
        ),
    };
    if let Some(limit) = start.memory_limit {
        let rlimit = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct, affecting this process only.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) } != 0 {
            die(
                EXIT_PROTOCOL,
                &format!(
                    "cannot set the memory limit: {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
    }
    let Some(entry) = registry::lookup::<WorkerFn>(&start.entry, Kind::Worker) else {
        die(
            EXIT_NO_ENTRY,
            &format!(
                "no worker entry point named `{}` is registered",
                start.entry
            ),
        )
    };
    let channel = Channel::new(reader, writer);
    match catch_unwind(AssertUnwindSafe(|| entry(start.args, channel))) {
        Ok(Ok(())) => std::process::exit(0),
        Ok(Err(message)) => die(
            EXIT_ENTRY_FAILED,
            &format!("entry point `{}` failed: {message}", start.entry),
        ),
        // The panic hook has already printed the message.
        Err(_) => std::process::exit(EXIT_PANIC),
    }
}

/// Moves the protocol to private descriptors, so that whatever the worker's code prints
/// goes to stderr instead of corrupting the frames: stdout becomes a copy of stderr, and
/// stdin reads from /dev/null.
fn take_protocol_fds() -> (File, File) {
    // SAFETY: plain descriptor syscalls on this process's own standard descriptors; the
    // duplicates are owned by the returned Files and by nothing else.
    unsafe {
        let input = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        let output = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if input < 0 || output < 0 {
            die(EXIT_PROTOCOL, "cannot duplicate the protocol descriptors");
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        libc::dup2(2, 1);
        (File::from_raw_fd(input), File::from_raw_fd(output))
    }
}
