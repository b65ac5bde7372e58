//! What the transfer stage takes ([`HostBatch`]) and what it yields ([`DeviceBatch`]).

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{
    result, CudaEvent, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, DriverError,
};

use super::device::guard_panic;
use super::driver::{
    clear_stored_error, event_synchronize, keep_current_context, stream_synchronize,
    stream_wait_event, stream_wait_for, RestoreContext,
};
use super::ring::RingError;

/// Offsets of the arrays inside a staging buffer are multiples of this: the alignment
/// `cuMemAlloc` gives, which the copy engines read fastest.
pub(crate) const STAGING_ALIGN: usize = 256;

/// A plain numeric type whose values are copied to the device byte for byte.
///
/// Implemented for the integer and floating-point primitives, and with the feature
/// `cuda-f16` for `half::f16` and `half::bf16` (the `half` crate is then re-exported as
/// `pipeline_runtime::cuda::half`). Implement it for your own
/// `#[repr(C)]` type only if it is `Copy`, has no padding bytes and no pointers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be copied to the device byte for byte",
    note = "the transfer stage copies arrays of plain numbers: u8, i8, u16, i16, u32, i32, u64, i64, f32, f64 (and half::f16, half::bf16 with the feature `cuda-f16`)"
)]
pub trait Element: DeviceRepr + Copy + Send + Sync + 'static {}

macro_rules! elements {
    ($($t:ty),*) => { $(impl Element for $t {})* };
}
elements!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);
#[cfg(feature = "cuda-f16")]
elements!(half::f16, half::bf16);

/// A batch on the host that the transfer stage can copy to a device: one or more contiguous
/// arrays of [`Element`]s.
///
/// Implemented for `Vec<T>`, `Box<[T]>` and `Arc<[T]>` (yielding a `CudaSlice<T>`) and for tuples of up
/// to eight host batches (yielding the tuple of their device forms). For a struct, list its
/// arrays in the same order in both methods:
///
/// ```
/// use pipeline_runtime::cuda::{HostBatch, Layout, Stager, TransferError};
/// use pipeline_runtime::cuda::cudarc::driver::CudaSlice;
///
/// struct Images {
///     pixels: Vec<u8>,
///     labels: Vec<i64>,
/// }
///
/// struct DeviceImages {
///     pixels: CudaSlice<u8>,
///     labels: CudaSlice<i64>,
/// }
///
/// impl HostBatch for Images {
///     type Device = DeviceImages;
///
///     fn layout(&self, layout: &mut Layout) {
///         self.pixels.layout(layout);
///         self.labels.layout(layout);
///     }
///
///     fn upload(&self, stager: &mut Stager<'_>) -> Result<DeviceImages, TransferError> {
///         Ok(DeviceImages {
///             pixels: self.pixels.upload(stager)?,
///             labels: self.labels.upload(stager)?,
///         })
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "the transfer stage cannot copy `{Self}` to the device",
    note = "collate each batch into contiguous arrays first: a `Vec<T>` of numbers, a tuple of them, or a struct implementing `HostBatch`"
)]
pub trait HostBatch: Send + 'static {
    /// The batch on the device.
    type Device: Send + 'static;

    /// Declares every array that [`upload`](Self::upload) copies, in the same order, so
    /// that one staging buffer is sized for the whole batch.
    fn layout(&self, layout: &mut Layout);

    /// Stages every array and queues its copy; returns the device buffers.
    fn upload(&self, stager: &mut Stager<'_>) -> Result<Self::Device, TransferError>;
}

/// The staging space a batch needs: its arrays, each at an aligned offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    bytes: usize,
    arrays: usize,
}

impl Layout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an array of `len` elements of `T`.
    pub fn add<T: Element>(&mut self, len: usize) {
        self.bytes = align_up(self.bytes) + len * std::mem::size_of::<T>();
        self.arrays += 1;
    }

    /// Staging bytes for the arrays added so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Arrays added so far.
    pub fn arrays(&self) -> usize {
        self.arrays
    }
}

fn align_up(offset: usize) -> usize {
    offset.div_ceil(STAGING_ALIGN) * STAGING_ALIGN
}

/// Copies a batch's arrays into one pinned staging buffer and queues their host-to-device
/// copies on the transfer stream. Handed to [`HostBatch::upload`].
pub struct Stager<'a> {
    /// The slot's pinned buffer; `None` for a batch larger than the ring may hold, whose
    /// arrays are copied from their own memory.
    pub(crate) staging: Option<&'a mut [u8]>,
    pub(crate) cursor: usize,
    pub(crate) stream: &'a Arc<CudaStream>,
    /// Threads that share the staging copies of large arrays; `None` copies on this thread.
    pub(crate) copiers: Option<&'a rayon::ThreadPool>,
}

impl fmt::Debug for Stager<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stager")
            .field("capacity", &self.staging.as_ref().map(|s| s.len()))
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Stager<'_> {
    /// Stages `data` and queues its copy into a new device buffer of the same length.
    ///
    /// An empty `data` gives a buffer of length 0 that owns a one-element allocation (never
    /// a zero-byte one, which the driver rejects or leaves undefined): its pointer is valid
    /// but nothing may be read through it.
    pub fn copy<T: Element>(&mut self, data: &[T]) -> Result<CudaSlice<T>, TransferError> {
        let bytes = std::mem::size_of_val(data);
        // SAFETY: `T: Element` is plain data without padding, so its `bytes` bytes are
        // initialised and may be read as `u8` for as long as `data` is borrowed.
        let source = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), bytes) };
        let start = align_up(self.cursor);
        let staged = match self.staging.as_deref_mut() {
            Some(staging) => {
                let capacity = staging.len();
                let staged = start
                    .checked_add(bytes)
                    .and_then(|end| staging.get_mut(start..end))
                    .ok_or_else(|| {
                        TransferError::new(format!(
                            "the batch copies more than its `HostBatch::layout` declared ({} \
                             staging bytes): `layout` and `upload` must list the same arrays",
                            capacity
                        ))
                    })?;
                copy_bytes(staged, source, self.copiers);
                Some(&*staged)
            }
            None => None,
        };
        let mut device = alloc_device::<T>(self.stream, data.len())?;
        if bytes > 0 {
            let (dst, _record_write) = device.device_ptr_mut(self.stream);
            let _bind = RestoreContext::bind(self.stream.context())?;
            match staged {
                // SAFETY: `staged` is pinned memory owned by the ring, which keeps it
                // unwritten and allocated until the fence recorded after this copy completes;
                // `dst` holds `data.len()` elements of `T`, i.e. `bytes` bytes.
                Some(staged) => unsafe {
                    result::memcpy_htod_async(dst, staged, self.stream.cu_stream())
                },
                // SAFETY: as above for `dst`. `source` is pageable: the driver copies it into
                // its own staging memory before the call returns (CUDA's "API synchronization
                // behavior"), so it need not outlive the call.
                None => unsafe { result::memcpy_htod_async(dst, source, self.stream.cu_stream()) },
            }?;
        }
        self.cursor = start + bytes;
        Ok(device)
    }
}

/// Elements allocated on the device for an array of `len`: never 0. Without memory pools
/// `cuMemAlloc(0)` fails with `CUDA_ERROR_INVALID_VALUE`; with pools what `cuMemAllocAsync(0)`
/// returns is undocumented. An empty array gets one element, exposed with length 0.
pub(crate) fn allocation_len(len: usize) -> usize {
    len.max(1)
}

/// A device buffer of `len` elements, allocated on `stream` (the allocation is at least one
/// element: see [`allocation_len`]).
fn alloc_device<T: Element>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> Result<CudaSlice<T>, TransferError> {
    clear_stored_error(stream.context());
    // SAFETY: the buffer is fully written by the copy queued right after, before any use
    // that is ordered after it (the stream's own work, or a consumer waiting on the batch's
    // event); an empty one is never read.
    let allocated = unsafe { stream.alloc::<T>(allocation_len(len)) }?;
    if len == allocation_len(len) {
        return Ok(allocated);
    }
    // Expose the one-element allocation with length 0. The slice that takes the pointer
    // over frees it when dropped, on `stream`, as any other buffer of the batch.
    let ptr = allocated.leak();
    // `upgrade_device_ptr` unwraps its event creation, which a stored error would fail.
    clear_stored_error(stream.context());
    // SAFETY: `ptr` is a live allocation of one `T`, owned by nothing else since `leak`.
    match guard_panic(|| unsafe { stream.upgrade_device_ptr::<T>(ptr, 0) }) {
        Ok(empty) => Ok(empty),
        Err(panicked) => {
            let _bind = RestoreContext::bind(stream.context())?;
            // SAFETY: nothing else owns or uses `ptr`; freed once, the way it was allocated.
            let _ = unsafe {
                if stream.context().has_async_alloc() {
                    result::free_async(ptr, stream.cu_stream())
                } else {
                    result::free_sync(ptr)
                }
            };
            Err(TransferError::new(panicked))
        }
    }
}

/// Arrays at least this large are staged by several threads.
const PARALLEL_COPY_MIN: usize = 1 << 20;
/// The smallest share of one staging copy handed to a thread.
const PARALLEL_COPY_CHUNK: usize = 256 << 10;

/// `dst.copy_from_slice(src)`, split across `copiers` for a large copy: one thread's memory
/// copy is slower than a PCIe link, and the staging copy would otherwise bound the stage.
pub(crate) fn copy_bytes(dst: &mut [u8], src: &[u8], copiers: Option<&rayon::ThreadPool>) {
    use rayon::prelude::*;
    match copiers {
        Some(pool) if src.len() >= PARALLEL_COPY_MIN && pool.current_num_threads() > 1 => {
            let chunk = src
                .len()
                .div_ceil(pool.current_num_threads())
                .max(PARALLEL_COPY_CHUNK);
            pool.install(|| {
                dst.par_chunks_mut(chunk)
                    .zip(src.par_chunks(chunk))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            });
        }
        _ => dst.copy_from_slice(src),
    }
}

impl<T: Element> HostBatch for Vec<T> {
    type Device = CudaSlice<T>;

    fn layout(&self, layout: &mut Layout) {
        layout.add::<T>(self.len());
    }

    fn upload(&self, stager: &mut Stager<'_>) -> Result<CudaSlice<T>, TransferError> {
        stager.copy(self)
    }
}

impl<T: Element> HostBatch for Box<[T]> {
    type Device = CudaSlice<T>;

    fn layout(&self, layout: &mut Layout) {
        layout.add::<T>(self.len());
    }

    fn upload(&self, stager: &mut Stager<'_>) -> Result<CudaSlice<T>, TransferError> {
        stager.copy(self)
    }
}

impl<T: Element> HostBatch for Arc<[T]> {
    type Device = CudaSlice<T>;

    fn layout(&self, layout: &mut Layout) {
        layout.add::<T>(self.len());
    }

    fn upload(&self, stager: &mut Stager<'_>) -> Result<CudaSlice<T>, TransferError> {
        stager.copy(self)
    }
}

macro_rules! tuple_batches {
    ($( ( $($name:ident . $idx:tt),+ ) )+) => {$(
        impl<$($name: HostBatch),+> HostBatch for ($($name,)+) {
            type Device = ($($name::Device,)+);

            fn layout(&self, layout: &mut Layout) {
                $( self.$idx.layout(layout); )+
            }

            fn upload(&self, stager: &mut Stager<'_>) -> Result<Self::Device, TransferError> {
                Ok(($( self.$idx.upload(stager)?, )+))
            }
        }
    )+};
}

tuple_batches! {
    (A.0)
    (A.0, B.1)
    (A.0, B.1, C.2)
    (A.0, B.1, C.2, D.3)
    (A.0, B.1, C.2, D.3, E.4)
    (A.0, B.1, C.2, D.3, E.4, F.5)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7)
}

/// A batch on the device, with the event that completes when its copies have finished.
///
/// The copies run on the transfer's own stream. Before using the buffers on another stream,
/// make that stream wait for them with [`wait_on`](Self::wait_on) or
/// [`ready_on`](Self::ready_on) (asynchronous: only the stream waits), or block the host with
/// [`synchronize`](Self::synchronize) (the event is made with blocking sync: the thread
/// sleeps, it does not spin).
///
/// # Freeing, and raw pointers
///
/// When the buffers are dropped, their free is queued on the transfer stream, and the next
/// batch's allocation may reuse the memory as soon as the transfer stream reaches the free.
/// Uses through cudarc's own calls are ordered before the free by cudarc's event tracking
/// (on by default). **A use through a raw device pointer is not**: if you hand a pointer
/// (`device_ptr(..)`, a DLPack tensor, ...) to another library, its kernel may still be
/// reading the memory when a new batch is copied into it. Keep the buffers in the batch
/// ([`ready_on`](Self::ready_on) / [`buffers`](Self::buffers)), queue the other library's
/// work on its stream, then call [`release_after`](Self::release_after) with that stream
/// (wrap a foreign stream with `CudaContext::wrap_borrowed_stream`): the free then waits on
/// the device for the work queued on it so far.
///
/// # The calling thread's current context
///
/// This type's methods, and dropping it, leave the calling thread's current CUDA context as
/// they found it. Buffers and events taken out of it are cudarc's: using or dropping them
/// makes the transfer's context current on the calling thread (and leaves it so); drop them
/// inside [`keep_current_context`](super::keep_current_context) if that thread drives another
/// device.
pub struct DeviceBatch<D> {
    /// `None` only once taken by a method that consumes the batch.
    parts: Option<Parts<D>>,
    ordinal: usize,
}

struct Parts<D> {
    value: D,
    /// The consumer's event, separate from the ring's own fence.
    ready: Arc<CudaEvent>,
    /// The transfer stream, where the buffers are freed.
    stream: Arc<CudaStream>,
}

impl<D> fmt::Debug for DeviceBatch<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBatch")
            .field("device", &self.ordinal)
            .finish_non_exhaustive()
    }
}

impl<D> Drop for DeviceBatch<D> {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            keep_current_context(|| drop(parts));
        }
    }
}

impl<D> DeviceBatch<D> {
    pub(crate) fn new(
        value: D,
        ready: Arc<CudaEvent>,
        stream: Arc<CudaStream>,
        ordinal: usize,
    ) -> Self {
        Self {
            parts: Some(Parts {
                value,
                ready,
                stream,
            }),
            ordinal,
        }
    }

    fn parts(&self) -> &Parts<D> {
        self.parts.as_ref().expect("a live batch has its parts")
    }

    fn take(mut self) -> Parts<D> {
        self.parts.take().expect("a live batch has its parts")
    }

    /// Makes `stream` wait (on the device, without blocking the host) until the copies
    /// have finished, then hands out the buffers: work queued on `stream` from now on sees
    /// the data.
    pub fn wait_on(self, stream: &CudaStream) -> Result<D, TransferError> {
        keep_current_context(|| {
            stream_wait_event(stream, &self.parts().ready)?;
            Ok(self.take().value)
        })
    }

    /// Like [`wait_on`](Self::wait_on), but lends the buffers and keeps them in the batch, so
    /// that [`release_after`](Self::release_after) can order their free after work that uses
    /// them through raw pointers.
    pub fn ready_on(&self, stream: &CudaStream) -> Result<&D, TransferError> {
        keep_current_context(|| stream_wait_event(stream, &self.parts().ready))?;
        Ok(&self.parts().value)
    }

    /// Blocks the calling thread until the copies have finished, then hands out the buffers.
    pub fn synchronize(self) -> Result<D, TransferError> {
        keep_current_context(|| {
            event_synchronize(&self.parts().ready)?;
            Ok(self.take().value)
        })
    }

    /// The buffers, without waiting: their contents are valid only once
    /// [`ready_event`](Self::ready_event) has completed (use [`ready_on`](Self::ready_on)).
    pub fn buffers(&self) -> &D {
        &self.parts().value
    }

    /// The buffers, mutably, without waiting (as [`buffers`](Self::buffers)).
    pub fn buffers_mut(&mut self) -> &mut D {
        &mut self
            .parts
            .as_mut()
            .expect("a live batch has its parts")
            .value
    }

    /// Frees the buffers once the work queued on `stream` so far has finished: the free,
    /// queued on the transfer stream, waits on the device for that work (the host does not
    /// wait, except on a device without memory pools, where cudarc frees synchronously).
    ///
    /// Call it after queuing, on `stream`, the last work that reads the buffers through raw
    /// device pointers (see [the type's docs](Self#freeing-and-raw-pointers)). If the order
    /// cannot be set up (a driver error), `stream` is synchronised instead, and if that fails
    /// too the buffers are leaked rather than freed under running work; the error is
    /// returned.
    pub fn release_after(self, stream: &CudaStream) -> Result<(), TransferError> {
        keep_current_context(|| {
            let parts = self.take();
            let ordered = stream_wait_for(&parts.stream, stream).and_then(|()| {
                if parts.stream.context().has_async_alloc() {
                    Ok(())
                } else {
                    // Without pools cudarc frees with `cuMemFree` after a `synchronize` that an
                    // error stored by an earlier drop would skip: synchronise here, directly.
                    stream_synchronize(&parts.stream)
                }
            });
            match ordered {
                Ok(()) => {
                    drop(parts);
                    Ok(())
                }
                Err(e) => {
                    if stream_synchronize(stream).is_ok() {
                        drop(parts);
                    } else {
                        std::mem::forget(parts.value);
                    }
                    Err(e.into())
                }
            }
        })
    }

    /// The event recorded after this batch's copies, for a consumer that orders its work
    /// by other means (e.g. another library's stream). It is the consumer's own: recording
    /// it again does not affect the transfer, whose ring waits on a private event.
    pub fn ready_event(&self) -> &Arc<CudaEvent> {
        &self.parts().ready
    }

    /// The device's ordinal.
    pub fn device(&self) -> usize {
        self.ordinal
    }

    /// The buffers and the consumer's event, without waiting: the buffers' contents are
    /// valid only once the event has completed. The buffers are then cudarc's alone: see
    /// [the type's docs](Self#freeing-and-raw-pointers) before passing raw pointers on.
    pub fn into_parts(self) -> (D, Arc<CudaEvent>) {
        let parts = self.take();
        (parts.value, parts.ready)
    }
}

/// A batch could not be copied to the device (a driver error); the item fails.
#[derive(Debug)]
pub struct TransferError {
    message: String,
    source: Option<DriverError>,
}

impl TransferError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }
}

impl From<DriverError> for TransferError {
    fn from(e: DriverError) -> Self {
        Self {
            message: format!("CUDA driver error: {e}"),
            source: Some(e),
        }
    }
}

impl From<RingError<DriverError>> for TransferError {
    fn from(e: RingError<DriverError>) -> Self {
        match e {
            RingError::Device(e) => e.into(),
            e @ RingError::NoSlots => Self::new(e.to_string()),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "cuda-f16")]
    #[test]
    fn half_precision_arrays_take_two_bytes_per_element() {
        let halves = (vec![half::f16::from_f32(1.5); 3], vec![half::bf16::ZERO; 2]);
        let mut layout = Layout::new();
        halves.layout(&mut layout);
        assert_eq!(layout.bytes(), 256 + 4);
    }

    #[test]
    fn an_empty_array_never_asks_the_allocator_for_zero_elements() {
        assert_eq!(allocation_len(0), 1);
        assert_eq!(allocation_len(1), 1);
        assert_eq!(allocation_len(1000), 1000);
    }

    #[test]
    fn layout_aligns_every_array() {
        let mut layout = Layout::new();
        layout.add::<u8>(3);
        assert_eq!(layout.bytes(), 3);
        layout.add::<f32>(10); // starts at 256
        assert_eq!(layout.bytes(), 256 + 40);
        layout.add::<i64>(0); // starts at 512, empty
        assert_eq!(layout.bytes(), 512);
        assert_eq!(layout.arrays(), 3);
    }

    #[test]
    fn staging_copies_are_exact_whether_split_or_not() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for len in [
            0,
            1,
            1000,
            PARALLEL_COPY_MIN - 1,
            PARALLEL_COPY_MIN,
            3 * PARALLEL_COPY_MIN + 7,
        ] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            for copiers in [None, Some(&pool)] {
                let mut dst = vec![0xAAu8; len];
                copy_bytes(&mut dst, &src, copiers);
                assert!(dst == src, "len {len}, split: {}", copiers.is_some());
            }
        }
    }

    #[test]
    fn tuples_and_vectors_declare_their_arrays_in_order() {
        let batch = (
            vec![0u8; 300],
            (vec![0f32; 2], vec![0i32; 1]),
            vec![0u16; 0],
        );
        let mut layout = Layout::new();
        batch.layout(&mut layout);
        // 300 bytes, then 8 at 512, then 4 at 768, then an empty array at 1024.
        assert_eq!(layout.arrays(), 4);
        assert_eq!(layout.bytes(), 1024);
        let boxed: Box<[f64]> = vec![1.0; 4].into_boxed_slice();
        let mut layout = Layout::new();
        boxed.layout(&mut layout);
        assert_eq!(layout.bytes(), 32);
    }
}
