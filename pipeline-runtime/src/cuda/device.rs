//! Which device a transfer stage uses, and whether it can be used at all.
//!
//! Every check that can fail on a machine without a GPU happens here, before the first
//! driver call that cudarc would turn into a panic, and each failure becomes a
//! [`BuildError`] that says what is missing. The checks go through [`DriverProbe`] so that
//! the error mapping is tested without a driver.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::BuildError;
use crate::sync::panic_message;

/// The environment variable a distributed launcher (`torchrun`, `accelerate`, ...) sets to
/// the process's index on its node.
pub const LOCAL_RANK_VAR: &str = "LOCAL_RANK";

/// Which CUDA device a transfer stage copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSelector {
    /// Device `n` (the CUDA ordinal, as `CUDA_VISIBLE_DEVICES` renumbers it).
    Index(usize),
    /// The device numbered by the `LOCAL_RANK` environment variable, read when the transfer
    /// is opened; device 0 when it is not set.
    LocalRank,
}

impl DeviceSelector {
    /// The device ordinal, reading `LOCAL_RANK` if asked to.
    pub fn resolve(self) -> Result<usize, BuildError> {
        match self {
            DeviceSelector::Index(n) => Ok(n),
            DeviceSelector::LocalRank => {
                parse_local_rank(std::env::var_os(LOCAL_RANK_VAR).as_deref())
            }
        }
    }

    /// Where the index came from, for error messages.
    fn describe(self, ordinal: usize) -> String {
        match self {
            DeviceSelector::Index(_) => format!("device index {ordinal}"),
            DeviceSelector::LocalRank => {
                format!("device index {ordinal} (from {LOCAL_RANK_VAR})")
            }
        }
    }
}

/// `LOCAL_RANK` as a device ordinal: unset means 0; anything but a non-negative integer is
/// an error that quotes the value.
pub(crate) fn parse_local_rank(value: Option<&std::ffi::OsStr>) -> Result<usize, BuildError> {
    let Some(raw) = value else {
        return Ok(0);
    };
    let text = raw.to_str().ok_or_else(|| {
        BuildError::new(format!(
            "{LOCAL_RANK_VAR}={raw:?} is not valid UTF-8; expected a device index such as 0"
        ))
    })?;
    text.trim().parse::<usize>().map_err(|_| {
        BuildError::new(format!(
            "{LOCAL_RANK_VAR}={text:?} is not a device index: expected a non-negative integer \
             such as 0 (set by the launcher, one per process on a node)"
        ))
    })
}

/// What the device checks ask of the CUDA driver.
pub(crate) trait DriverProbe {
    /// Whether the driver library (`libcuda.so`, `nvcuda.dll`) can be loaded.
    fn library_present(&self) -> bool;
    /// How many devices the driver reports, or the driver's error in words.
    fn device_count(&self) -> Result<usize, String>;
}

/// Checks that `selector` names a usable device and returns its ordinal.
pub(crate) fn check_device(
    probe: &impl DriverProbe,
    selector: DeviceSelector,
) -> Result<usize, BuildError> {
    let ordinal = selector.resolve()?;
    if !probe.library_present() {
        return Err(BuildError::new(
            "the GPU transfer stage needs the CUDA driver, but its library (libcuda.so / \
             nvcuda.dll) was not found: this machine has no NVIDIA driver installed, or the \
             library is not on the loader's path (LD_LIBRARY_PATH)",
        ));
    }
    let count = probe.device_count().map_err(|e| {
        BuildError::new(format!(
            "the CUDA driver is installed but cannot list devices: {e} (is a GPU visible to \
             this process? check CUDA_VISIBLE_DEVICES and the container's device access)"
        ))
    })?;
    if count == 0 {
        return Err(BuildError::new(
            "the CUDA driver is installed but reports no devices (check CUDA_VISIBLE_DEVICES)",
        ));
    }
    if ordinal >= count {
        return Err(BuildError::new(format!(
            "{} is out of range: the CUDA driver reports {count} device{} (0..={})",
            selector.describe(ordinal),
            if count == 1 { "" } else { "s" },
            count - 1
        )));
    }
    Ok(ordinal)
}

/// The real driver, through cudarc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CudaDriver;

impl DriverProbe for CudaDriver {
    fn library_present(&self) -> bool {
        // SAFETY: only tries to open the library by its usual names; no symbol is called.
        catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
    }

    fn device_count(&self) -> Result<usize, String> {
        let count =
            guard_panic(cudarc::driver::CudaContext::device_count)?.map_err(|e| e.to_string())?;
        Ok(usize::try_from(count).unwrap_or(0))
    }
}

/// Runs a driver call, turning a panic (cudarc panics when a symbol cannot be loaded) into
/// an error message. The presence check comes first; this is the last line of defence.
pub(crate) fn guard_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        format!(
            "the CUDA driver could not be used: {}",
            panic_message(&*payload)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    struct FakeDriver {
        present: bool,
        count: Result<usize, String>,
    }

    impl DriverProbe for FakeDriver {
        fn library_present(&self) -> bool {
            self.present
        }
        fn device_count(&self) -> Result<usize, String> {
            self.count.clone()
        }
    }

    fn driver(count: usize) -> FakeDriver {
        FakeDriver {
            present: true,
            count: Ok(count),
        }
    }

    #[test]
    fn local_rank_parses_integers_and_defaults_to_zero() {
        assert_eq!(parse_local_rank(None).unwrap(), 0);
        assert_eq!(parse_local_rank(Some(OsStr::new("3"))).unwrap(), 3);
        assert_eq!(parse_local_rank(Some(OsStr::new(" 1\n"))).unwrap(), 1);
    }

    #[test]
    fn local_rank_garbage_is_an_error_quoting_the_value() {
        for bad in ["", "gpu0", "-1", "1.5", "99999999999999999999999"] {
            let err = parse_local_rank(Some(OsStr::new(bad))).unwrap_err();
            assert!(err.message().contains("LOCAL_RANK"), "{err}");
            assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn missing_driver_library_is_reported_before_any_device_query() {
        let probe = FakeDriver {
            present: false,
            count: Err("must not be asked".into()),
        };
        let err = check_device(&probe, DeviceSelector::Index(0)).unwrap_err();
        assert!(err.message().contains("CUDA driver"), "{err}");
        assert!(err.message().contains("not found"), "{err}");
    }

    #[test]
    fn driver_error_and_no_devices_are_reported() {
        let probe = FakeDriver {
            present: true,
            count: Err("CUDA_ERROR_NO_DEVICE".into()),
        };
        let err = check_device(&probe, DeviceSelector::Index(0)).unwrap_err();
        assert!(err.message().contains("CUDA_ERROR_NO_DEVICE"), "{err}");

        let err = check_device(&driver(0), DeviceSelector::Index(0)).unwrap_err();
        assert!(err.message().contains("no devices"), "{err}");
    }

    #[test]
    fn out_of_range_index_names_the_index_and_the_count() {
        let err = check_device(&driver(2), DeviceSelector::Index(2)).unwrap_err();
        assert!(err.message().contains("device index 2"), "{err}");
        assert!(err.message().contains("2 devices (0..=1)"), "{err}");
        assert_eq!(
            check_device(&driver(2), DeviceSelector::Index(1)).unwrap(),
            1
        );
    }

    #[test]
    fn panics_in_driver_calls_become_errors() {
        let err = guard_panic(|| -> usize { panic!("no symbol cuInit") }).unwrap_err();
        assert!(err.contains("no symbol cuInit"), "{err}");
        assert_eq!(guard_panic(|| 7).unwrap(), 7);
    }
}
