//! Which device a transfer stage uses, and whether it can be used at all.
//!
//! Every check that can fail on a machine without a GPU happens here, before the first
//! driver call that cudarc would turn into a panic, and each failure becomes a
//! [`BuildError`] that says what is missing. The checks go through [`DriverProbe`] so that
//! the error mapping is tested without a driver.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::failure::BuildError;
use crate::sync::panic_message;

/// The environment variable a distributed launcher (`torchrun`, `accelerate`, ...) sets to
/// the process's index on its node.
pub const LOCAL_RANK_VAR: &str = "LOCAL_RANK";

/// The variable that restricts (and renumbers) the devices a process sees; only read for
/// messages.
const VISIBLE_DEVICES_VAR: &str = "CUDA_VISIBLE_DEVICES";

/// Which CUDA device a transfer stage copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSelector {
    /// Device `n` (the CUDA ordinal, as `CUDA_VISIBLE_DEVICES` renumbers it).
    Index(usize),
    /// The device numbered by the launcher's local rank (`LOCAL_RANK`, `SLURM_LOCALID` or
    /// `OMPI_COMM_WORLD_LOCAL_RANK`, read as [`crate::distributed::Rank`] reads them) when the
    /// transfer is opened; device 0 outside a multi-process job. When the process sees exactly one device
    /// (`CUDA_VISIBLE_DEVICES` set per process by the launcher), that device, whatever
    /// `LOCAL_RANK` says.
    LocalRank,
}

impl DeviceSelector {
    /// The device ordinal asked for, reading `LOCAL_RANK` if asked to (before the
    /// one-visible-device rule, which needs the driver).
    pub fn resolve(self) -> Result<usize, BuildError> {
        match self {
            DeviceSelector::Index(n) => Ok(n),
            DeviceSelector::LocalRank => Ok(local_rank()?.unwrap_or(0)),
        }
    }

    /// Where the index came from, for error messages.
    fn describe(self, ordinal: usize) -> String {
        match self {
            DeviceSelector::Index(_) => format!("device index {ordinal}"),
            DeviceSelector::LocalRank => {
                format!(
                    "device index {ordinal} (from {LOCAL_RANK_VAR} / SLURM_LOCALID / \
                     OMPI_COMM_WORLD_LOCAL_RANK)"
                )
            }
        }
    }
}

/// The process's local rank (its index among the processes of its node), from the
/// launcher's environment as [`Rank::from_env`](crate::distributed::Rank::from_env) reads it
/// (torchrun's `LOCAL_RANK`, SLURM's `SLURM_LOCALID`, Open MPI's
/// `OMPI_COMM_WORLD_LOCAL_RANK`); `None` outside a multi-process job. Malformed or
/// inconsistent values are an error quoting the variable. Needs no CUDA.
pub(crate) fn local_rank() -> Result<Option<usize>, BuildError> {
    let rank = crate::distributed::Rank::from_env()
        .map_err(|e| BuildError::new(format!("cannot tell which GPU to use: {e}")))?;
    Ok((!rank.is_single()).then_some(rank.local_rank as usize))
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
    check_ordinal(probe, selector, selector.resolve()?)
}

/// [`check_device`] with the ordinal already read from the selector.
fn check_ordinal(
    probe: &impl DriverProbe,
    selector: DeviceSelector,
    ordinal: usize,
) -> Result<usize, BuildError> {
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
    if ordinal >= count && count == 1 && selector == DeviceSelector::LocalRank {
        // The launcher gave each process its own GPU (`CUDA_VISIBLE_DEVICES` per process,
        // SLURM's `--gpus-per-task=1`): the one device this process sees is its device.
        tracing::info!(
            "{LOCAL_RANK_VAR}={ordinal} but this process sees exactly one CUDA device \
             (CUDA_VISIBLE_DEVICES={}): using that device, device 0",
            std::env::var(VISIBLE_DEVICES_VAR).unwrap_or_else(|_| "<unset>".to_owned())
        );
        return Ok(0);
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
    fn a_local_rank_with_one_visible_device_uses_that_device() {
        // SLURM with --gpus-per-task=1: LOCAL_RANK=3, one device visible.
        let selector = DeviceSelector::LocalRank;
        assert_eq!(check_ordinal(&driver(1), selector, 3).unwrap(), 0);
        assert_eq!(check_ordinal(&driver(1), selector, 0).unwrap(), 0);
        // With several devices visible, an out-of-range LOCAL_RANK stays an error naming it.
        let err = check_ordinal(&driver(2), selector, 3).unwrap_err();
        assert!(err.message().contains("from LOCAL_RANK"), "{err}");
        assert!(err.message().contains("2 devices"), "{err}");
        // An explicit index is never remapped.
        let err = check_ordinal(&driver(1), DeviceSelector::Index(3), 3).unwrap_err();
        assert!(err.message().contains("device index 3"), "{err}");
    }

    #[test]
    fn panics_in_driver_calls_become_errors() {
        let err = guard_panic(|| -> usize { panic!("no symbol cuInit") }).unwrap_err();
        assert!(err.contains("no symbol cuInit"), "{err}");
        assert_eq!(guard_panic(|| 7).unwrap(), 7);
    }
}
