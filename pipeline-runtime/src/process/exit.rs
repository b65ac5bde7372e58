//! How a worker child ended: its exit status and what its stderr said about it.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// How a child ended: its exit status and the last lines it wrote to stderr.
#[derive(Debug, Clone)]
pub struct ExitReport {
    pub(super) status: ExitStatus,
    pub(super) stderr_tail: Vec<String>,
    pub(super) key_line: Option<String>,
}

impl ExitReport {
    /// The exit status.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// The exit code, if the child exited rather than being killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that ended the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// The last lines the child wrote to stderr (its panic message, Rust's "memory
    /// allocation of N bytes failed").
    pub fn stderr_tail(&self) -> &[String] {
        &self.stderr_tail
    }

    /// The most telling stderr line: an allocation failure, else the last panic message,
    /// else the last line that is not part of a backtrace.
    pub fn key_stderr_line(&self) -> Option<&str> {
        self.key_line.as_deref().or_else(|| {
            self.stderr_tail
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !is_backtrace_noise(l))
        })
    }

    /// Whether the child ran out of memory: an allocation failed (Rust's allocation error
    /// handler aborts the process after saying so on stderr).
    pub fn out_of_memory(&self) -> bool {
        self.key_line.as_deref().is_some_and(is_alloc_failure)
    }
}

/// Rust's message before it aborts on a failed allocation.
pub(super) fn is_alloc_failure(line: &str) -> bool {
    line.contains("memory allocation of") && line.contains("failed")
}

fn is_backtrace_noise(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("note: ")
        || line.starts_with("stack backtrace:")
        || line.starts_with("at ")
        || line
            .split_once(": ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        || line.ends_with("__rust_try")
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status.code(), self.status.signal()) {
            _ if self.out_of_memory() => write!(
                f,
                "ran out of memory (an allocation failed and the process aborted)"
            )?,
            (Some(0), _) => f.write_str("exited normally (code 0)")?,
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(libc::SIGSEGV)) => {
                f.write_str("crashed with a segmentation fault (signal 11, SIGSEGV)")?
            }
            (None, Some(libc::SIGABRT)) => f.write_str("aborted (signal 6, SIGABRT)")?,
            (None, Some(libc::SIGKILL)) => f.write_str(
                "was killed by signal 9 (SIGKILL; the kernel's out-of-memory killer also \
                 sends it)",
            )?,
            (None, Some(sig)) => write!(f, "was killed by signal {sig} ({})", signal_name(sig))?,
            (None, None) => write!(f, "ended with status {}", self.status)?,
        }
        if let Some(line) = self.key_stderr_line() {
            write!(f, "; its stderr said: {line}")?;
        }
        Ok(())
    }
}
