//! Driver calls made directly, below cudarc's safe layer.
//!
//! cudarc's safe calls start with `CudaContext::bind_to_thread`, which first returns (and
//! clears) any error that an earlier `Drop` stored in the context, and then does not do the
//! work: a `CudaStream::synchronize` made to recover from a failure would return at once
//! with copies still pending, and an unrelated drop error would fail the next batch with a
//! misleading message. The calls whose skipping would be unsafe (recording and waiting for
//! the ring's fences, synchronising before a slot is reused, ordering a free after another
//! stream) go through cudarc's `result` layer here instead.
//!
//! The same module keeps the calling thread's current context as it found it
//! ([`RestoreContext`], [`keep_current_context`]).

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{result, sys, CudaContext, CudaStream, DriverError};

use super::device::{CudaDriver, DriverProbe};

/// On drop, makes the context that was current on this thread when it was created current
/// again (or none, if none was).
pub(crate) struct RestoreContext {
    saved: sys::CUcontext,
}

impl RestoreContext {
    /// Remembers this thread's current context. The driver must be loaded and initialised.
    pub(crate) fn save() -> Result<Self, DriverError> {
        let saved = result::ctx::get_current()?.unwrap_or(std::ptr::null_mut());
        Ok(Self { saved })
    }

    /// Remembers this thread's current context, then makes `ctx` current (without cudarc's
    /// `bind_to_thread`, so without consuming an error stored in `ctx`).
    pub(crate) fn bind(ctx: &CudaContext) -> Result<Self, DriverError> {
        let restore = Self::save()?;
        if restore.saved != ctx.cu_ctx() {
            // SAFETY: `ctx` is alive (borrowed) and so is its context.
            unsafe { result::ctx::set_current(ctx.cu_ctx()) }?;
        }
        Ok(restore)
    }
}

impl Drop for RestoreContext {
    fn drop(&mut self) {
        if let Ok(current) = result::ctx::get_current() {
            if current.unwrap_or(std::ptr::null_mut()) != self.saved {
                // SAFETY: `saved` was current on this thread when the guard was made (null
                // unbinds); if its owner destroyed it since, the driver returns an error,
                // which leaves nothing current.
                let _ = unsafe { result::ctx::set_current(self.saved) };
            }
        }
    }
}

/// Runs `f`, then makes the calling thread's current CUDA context the one that was current
/// before (or none), whatever `f` bound; also if `f` panics.
///
/// cudarc makes a buffer's, event's or stream's context current on the calling thread when
/// it is used or dropped, and leaves it so. In a process that drives several devices from
/// one thread (PyTorch and cudart follow the thread's current context), drop the buffers you
/// took out of a [`DeviceBatch`](super::DeviceBatch) inside this function:
///
/// ```
/// # fn demo(batch: pipeline_runtime::cuda::DeviceBatch<Vec<u8>>) {
/// use pipeline_runtime::cuda::keep_current_context;
/// let buffers = batch.synchronize();
/// keep_current_context(|| drop(buffers));
/// # }
/// ```
///
/// Without a CUDA driver it only runs `f`.
pub fn keep_current_context<R>(f: impl FnOnce() -> R) -> R {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    let restore = if *PRESENT.get_or_init(|| CudaDriver.library_present()) {
        RestoreContext::save().ok()
    } else {
        None
    };
    let result = f();
    drop(restore);
    result
}

/// Returns and clears an error that an earlier drop stored in `ctx`, logging it: it belongs
/// to that drop, not to the work about to be done.
pub(crate) fn clear_stored_error(ctx: &CudaContext) {
    if let Err(e) = ctx.check_err() {
        tracing::warn!(
            device = ctx.ordinal(),
            "CUDA error stored by an earlier drop of a buffer, event or stream on this device \
             (cudarc cannot return errors from drops): {e}"
        );
    }
}

/// A CUDA event owned here, created and recorded through the driver.
pub(crate) struct DriverEvent {
    event: sys::CUevent,
    ctx: Arc<CudaContext>,
}

// SAFETY: a CUevent handle may be used from any thread; the context is kept alive.
unsafe impl Send for DriverEvent {}
// SAFETY: as above; the driver serialises calls on one event.
unsafe impl Sync for DriverEvent {}

impl DriverEvent {
    /// A new event without timing (cheaper to record and query).
    pub(crate) fn new(ctx: &Arc<CudaContext>) -> Result<Self, DriverError> {
        let _bind = RestoreContext::bind(ctx)?;
        let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?;
        Ok(Self {
            event,
            ctx: ctx.clone(),
        })
    }

    /// Records in the event the work queued on `stream` so far. `stream` must belong to the
    /// event's context.
    pub(crate) fn record(&self, stream: &CudaStream) -> Result<(), DriverError> {
        let _bind = RestoreContext::bind(&self.ctx)?;
        // SAFETY: both handles are alive (owned by `self` and borrowed).
        unsafe { result::event::record(self.event, stream.cu_stream()) }
    }

    /// Whether the work recorded has completed (`true` if nothing was recorded).
    pub(crate) fn is_complete(&self) -> Result<bool, DriverError> {
        // SAFETY: the event is alive.
        match unsafe { result::event::query(self.event) } {
            Ok(()) => Ok(true),
            Err(DriverError(sys::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for DriverEvent {
    fn drop(&mut self) {
        if let Ok(_bind) = RestoreContext::bind(&self.ctx) {
            // SAFETY: created by `new`, destroyed once. Destroying an event still pending is
            // allowed: the driver releases it when the work completes.
            let _ = unsafe { result::event::destroy(self.event) };
        }
    }
}

/// Makes `waiter` wait (on the device) for the work queued on `stream` so far.
pub(crate) fn stream_wait_for(waiter: &CudaStream, stream: &CudaStream) -> Result<(), DriverError> {
    let event = DriverEvent::new(stream.context())?;
    event.record(stream)?;
    let _bind = RestoreContext::bind(waiter.context())?;
    // SAFETY: both handles are alive. The event may be destroyed right after: the wait is
    // already queued and keeps what it needs.
    unsafe {
        result::stream::wait_event(
            waiter.cu_stream(),
            event.event,
            sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
        )
    }
}

/// Makes `stream` wait (on the device) for a cudarc event, without cudarc's stored-error
/// check.
pub(crate) fn stream_wait_event(
    stream: &CudaStream,
    event: &cudarc::driver::CudaEvent,
) -> Result<(), DriverError> {
    let _bind = RestoreContext::bind(stream.context())?;
    // SAFETY: both handles are alive (borrowed).
    unsafe {
        result::stream::wait_event(
            stream.cu_stream(),
            event.cu_event(),
            sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
        )
    }
}

/// Blocks until a cudarc event has completed, without cudarc's stored-error check.
pub(crate) fn event_synchronize(event: &cudarc::driver::CudaEvent) -> Result<(), DriverError> {
    let _bind = RestoreContext::bind(event.context())?;
    // SAFETY: the event is alive (borrowed).
    unsafe { result::event::synchronize(event.cu_event()) }
}

/// Blocks until everything queued on `stream` has finished (`cuStreamSynchronize`), even if
/// an earlier drop stored an error in its context.
pub(crate) fn stream_synchronize(stream: &CudaStream) -> Result<(), DriverError> {
    let _bind = RestoreContext::bind(stream.context())?;
    // SAFETY: the stream is alive (borrowed).
    unsafe { result::stream::synchronize(stream.cu_stream()) }
}

/// Sets the release threshold of the device's current memory pool (the one
/// `cuMemAllocAsync` uses): memory the pool holds up to this many bytes is kept when a
/// stream, event or context is synchronised, instead of being returned to the driver.
pub(crate) fn set_pool_release_threshold(ctx: &CudaContext, bytes: u64) -> Result<(), DriverError> {
    let _bind = RestoreContext::bind(ctx)?;
    let mut value: u64 = bytes;
    // SAFETY: the device is the context's; the attribute's value is a cuuint64_t, and
    // `value` outlives the call.
    unsafe {
        let pool = result::device::get_mem_pool(ctx.cu_device())?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut value as *mut u64).cast::<c_void>(),
        )
    }
}

/// Page-locked host memory owned here (`cuMemHostAlloc`, write-combined: the host only
/// writes it, the device reads it).
pub(crate) struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the buffer is plain memory owned by this value; `&mut self` guards writes.
unsafe impl Send for PinnedBuffer {}
// SAFETY: `&self` gives no access to the memory.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// `len` (at least 1) bytes, zeroed once here so that the buffer is never read
    /// uninitialised (a one-off cost per allocation; the ring allocates rarely).
    pub(crate) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, DriverError> {
        assert!(len > 0 && len < isize::MAX as usize);
        let _bind = RestoreContext::bind(ctx)?;
        // SAFETY: a plain allocation; the memory is only ever written before it is read.
        let ptr = unsafe { result::malloc_host(len, sys::CU_MEMHOSTALLOC_WRITECOMBINED) }?;
        assert!(!ptr.is_null());
        // SAFETY: `len` bytes just allocated.
        unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), 0, len) };
        Ok(Self {
            ptr: ptr.cast::<u8>(),
            len,
            ctx: ctx.clone(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The whole buffer, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` initialised bytes allocated by `new`, borrowed mutably through
        // `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if let Ok(_bind) = RestoreContext::bind(&self.ctx) {
            // SAFETY: allocated by `new`, freed once; the ring frees a buffer only after the
            // copies out of it completed.
            let _ = unsafe { result::free_host(self.ptr.cast::<c_void>()) };
        }
    }
}
