//! CPU time of the whole process (user + system, all threads, from `getrusage`), reported as
//! `cpu_s_per_item` next to items/s: a loader should leave the cores to the trainer.
//!
//! A workload with untimed setup (W2's and W3's sleep calibration, W6's warm-up reads) calls
//! [`start`] where its timed part begins; the others are measured over the whole workload.

use std::sync::Mutex;
use std::time::{Duration, Instant};

static MARK: Mutex<Option<Duration>> = Mutex::new(None);

/// User + system CPU time the process has used so far (`None` where `getrusage` is missing).
pub(crate) fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a valid out-pointer for one `rusage`.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: getrusage succeeded, so it filled the struct.
        let usage = unsafe { usage.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Some(tv(usage.ru_utime) + tv(usage.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

/// Starts a workload's timed part: the CPU clock counts from here (not from the setup before).
pub(crate) fn start() -> Instant {
    *MARK.lock().unwrap_or_else(|e| e.into_inner()) = process_cpu();
    Instant::now()
}

/// CPU seconds used since [`start`] (or since `fallback`, the CPU time when the workload
/// began, if it never called it).
pub(crate) fn used_since(fallback: Option<Duration>) -> Option<f64> {
    let mark = MARK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .or(fallback)?;
    Some(process_cpu()?.saturating_sub(mark).as_secs_f64())
}

/// The process's peak resident set so far, in bytes (`ru_maxrss`; `None` off Unix).
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a valid out-pointer for one `rusage`.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: getrusage succeeded, so it filled the struct.
        let usage = unsafe { usage.assume_init() };
        // Kilobytes on Linux.
        Some(usage.ru_maxrss as u64 * 1024)
    }
    #[cfg(not(unix))]
    None
}
