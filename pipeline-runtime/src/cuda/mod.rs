//! Moving batches to a CUDA device (feature `cuda`).
//!
//! A [`DeviceTransfer`] owns, for one device, a dedicated thread, a CUDA stream and a small
//! ring of pinned host buffers. Its stage takes a [`HostBatch`] (a `Vec<T>` of numbers, or a
//! tuple or struct of them), copies the batch into the next pinned buffer, queues the
//! host-to-device copies on its stream, records an event after them and yields a
//! [`DeviceBatch`] at once: the copy runs while the next batch is staged, and while the
//! consumer computes on its own stream. A pinned buffer is written again only after the ring's
//! own (private) event recorded after the copy out of it has completed; buffers only grow, and
//! all together hold at most [`TransferConfig::max_pinned_bytes`]. The consumer gets a
//! separate event per batch. Before handing device memory to code outside cudarc (a raw
//! pointer), read [`DeviceBatch`]'s rule on freeing; [`DeviceTransfer::open`], the batch's
//! methods and its drop leave the calling thread's current CUDA context as they found it.
//!
//! ```
//! use pipeline_runtime::cuda::{DeviceTransfer, TransferConfig};
//! use pipeline_runtime::PipelineBuilder;
//!
//! // A `BuildError` here if there is no driver, no such device or a malformed LOCAL_RANK.
//! let Ok(transfer) = DeviceTransfer::open(TransferConfig::local_rank()) else {
//!     return Ok(());
//! };
//! let stream = transfer.context().new_stream()?; // the consumer's stream
//! let pipeline = PipelineBuilder::new()
//!     .source(0..1000u32)
//!     .pipe(|i| i as f32)
//!     .aggregate(256)
//!     .to_device_with(&transfer)
//!     .sink().buffer(2)
//!     .build()?;
//! for batch in pipeline {
//!     let on_device = batch?.wait_on(&stream)?; // `stream` waits for the copy, the host does not
//!     assert!(on_device.len() <= 256);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Without a CUDA driver, without the device, or with a malformed `LOCAL_RANK`,
//! [`DeviceTransfer::open`] (and so `build()`) returns a [`BuildError`](crate::error::BuildError)
//! that says which; the driver library is looked for before any driver call.
//!
//! The guide's chapter "GPU transfer" explains the ring, the events and how to use the
//! buffers safely.

mod batch;
mod device;
mod driver;
mod ring;
mod transfer;

pub use batch::{DeviceBatch, Element, HostBatch, Layout, Stager, TransferError};
pub use device::{DeviceSelector, LOCAL_RANK_VAR};
pub use driver::keep_current_context;
pub use transfer::{
    DeviceTransfer, TransferConfig, DEFAULT_MAX_PINNED_BYTES, DEFAULT_STAGING_SLOTS,
    DEFAULT_STAGING_THREADS,
};

/// The `cudarc` crate this module is built on. A [`DeviceBatch`] holds cudarc's buffers
/// (`CudaSlice`) and waits on its streams (`CudaStream`), types your training step names;
/// this is the version they must match.
pub use cudarc;
/// The `half` crate, for batches of `f16` and `bf16` (feature `cuda-f16`): the element
/// types are `half::f16` and `half::bf16`, and this is the version they must match.
#[cfg(feature = "cuda-f16")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda-f16")))]
pub use half;

/// Whether a CUDA device can be used here: the driver library loads and reports at least one
/// device. Never panics.
pub fn is_available() -> bool {
    use device::DriverProbe;
    let driver = device::CudaDriver;
    driver.library_present() && driver.device_count().is_ok_and(|n| n > 0)
}
