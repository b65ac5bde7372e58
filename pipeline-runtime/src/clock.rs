//! A cheap clock for per-item timing.
//!
//! `Instant::now()` costs tens of nanoseconds on a virtual machine, and timing every task
//! takes two readings. On x86-64 the time-stamp counter is read instead (a few nanoseconds)
//! and converted to nanoseconds with a ratio measured once per process against `Instant`.
//! Elsewhere ticks are nanoseconds since a process-wide origin.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of the clock, in ticks (see [`ns_per_tick`]).
#[inline]
pub(crate) fn now() -> u64 {
    imp::ticks()
}

/// Nanoseconds per tick, measured on first use (a ~2 ms calibration, once per process).
pub(crate) fn ns_per_tick() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(imp::calibrate)
}

/// Ticks as a duration.
pub(crate) fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos((ticks as f64 * ns_per_tick()) as u64)
}

/// Ticks as (fractional) nanoseconds.
pub(crate) fn ticks_to_ns(ticks: f64) -> f64 {
    ticks * ns_per_tick()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;

    #[inline]
    pub(super) fn ticks() -> u64 {
        // SAFETY: `rdtsc` has no preconditions; every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    pub(super) fn calibrate() -> f64 {
        let (t0, c0) = (Instant::now(), ticks());
        std::thread::sleep(Duration::from_millis(2));
        let (t1, c1) = (Instant::now(), ticks());
        let ns = (t1 - t0).as_nanos() as f64;
        match c1.checked_sub(c0) {
            Some(d) if d > 0 => ns / d as f64,
            _ => 1.0,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::*;

    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    #[inline]
    pub(super) fn ticks() -> u64 {
        origin().elapsed().as_nanos() as u64
    }

    pub(super) fn calibrate() -> f64 {
        1.0
    }
}
