//! The transfer itself: one device, one dedicated thread, one stream, one staging ring.

use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, DriverError};

use super::batch::{DeviceBatch, HostBatch, Layout, Stager, TransferError};
use super::device::{check_device, guard_panic, CudaDriver, DeviceSelector};
use super::driver::{
    clear_stored_error, keep_current_context, set_pool_release_threshold, stream_synchronize,
    DriverEvent, PinnedBuffer, RestoreContext,
};
use super::ring::{Ring, Staging};
use crate::builder::StageBuilder;
use crate::executor::{Executor, ThreadPool};
use crate::failure::BuildError;
use crate::sync::lock;

/// Staging buffers in the ring unless set otherwise: one being filled, two copies queued.
pub const DEFAULT_STAGING_SLOTS: usize = 3;

/// Threads that share the staging copy of a large array unless set otherwise.
pub const DEFAULT_STAGING_THREADS: usize = 4;

/// Pinned host memory the staging ring may hold unless set otherwise: 4 GiB.
pub const DEFAULT_MAX_PINNED_BYTES: usize = 4 << 30;

/// How to open a [`DeviceTransfer`].
#[derive(Debug, Clone)]
pub struct TransferConfig {
    device: DeviceSelector,
    slots: usize,
    staging_threads: usize,
    max_pinned_bytes: usize,
    pool_release_threshold: Option<u64>,
}

impl TransferConfig {
    fn with(device: DeviceSelector) -> Self {
        Self {
            device,
            slots: DEFAULT_STAGING_SLOTS,
            staging_threads: DEFAULT_STAGING_THREADS,
            max_pinned_bytes: DEFAULT_MAX_PINNED_BYTES,
            pool_release_threshold: Some(u64::MAX),
        }
    }

    /// Copy to device `index`.
    pub fn device(index: usize) -> Self {
        Self::with(DeviceSelector::Index(index))
    }

    /// Copy to the device numbered by `LOCAL_RANK` (device 0 when it is not set), as a
    /// distributed launcher sets it for each process on a node. When the process sees exactly
    /// one device (a launcher that sets `CUDA_VISIBLE_DEVICES` per process, such as SLURM
    /// with `--gpus-per-task=1`), that device is used whatever `LOCAL_RANK` says, and the log
    /// says so.
    pub fn local_rank() -> Self {
        Self::with(DeviceSelector::LocalRank)
    }

    /// Pinned staging buffers in the ring (at least 1; default
    /// [`DEFAULT_STAGING_SLOTS`]). With `n` slots, up to `n` copies are queued while the
    /// host stages the next batch; each slot holds one whole batch.
    pub fn staging_slots(mut self, n: usize) -> Self {
        self.slots = n;
        self
    }

    /// Threads that share the host-side copy of an array of 1 MiB or more into pinned memory
    /// (at least 1; default [`DEFAULT_STAGING_THREADS`]). With 1, the transfer thread copies
    /// alone.
    pub fn staging_threads(mut self, n: usize) -> Self {
        self.staging_threads = n;
        self
    }

    /// The most pinned (page-locked) host memory the staging ring holds, all slots together
    /// (default [`DEFAULT_MAX_PINNED_BYTES`], 4 GiB). A slot that must grow past it first frees
    /// other slots' buffers (after their copies), so fewer copies overlap. A batch larger than
    /// this is not staged: it is copied straight from its own (pageable) memory, which the
    /// driver stages itself: correct, but slower, and the transfer thread waits for it. The
    /// log says so the first time.
    pub fn max_pinned_bytes(mut self, bytes: usize) -> Self {
        self.max_pinned_bytes = bytes;
        self
    }

    /// The release threshold set on the device's memory pool when the transfer is opened
    /// (`CU_MEMPOOL_ATTR_RELEASE_THRESHOLD`; default `Some(u64::MAX)`): the pool keeps up to
    /// this many bytes of freed device memory for reuse instead of returning it to the driver
    /// at every synchronisation, which would make each batch's allocation map memory again.
    /// The pool is the device's, shared by the whole process (cudart's `cudaMallocAsync` uses
    /// it too). `None` leaves the pool as it is. Devices without memory pools ignore this.
    pub fn pool_release_threshold(mut self, bytes: Option<u64>) -> Self {
        self.pool_release_threshold = bytes;
        self
    }
}

/// Copies host batches to one CUDA device, on a dedicated thread and stream. See the
/// [module docs](super).
///
/// Cloning gives another handle to the same thread, stream and ring.
#[derive(Clone)]
pub struct DeviceTransfer {
    inner: Arc<TransferInner>,
}

struct TransferInner {
    /// Dropped first, with the calling thread's current context kept as it was.
    cuda: ManuallyDrop<CudaParts>,
    ordinal: usize,
    max_pinned_bytes: usize,
    /// Whether a batch too large for the ring has been reported.
    told_oversize: AtomicBool,
    /// The one thread the stage runs on; kept by every handle and every stage function.
    thread: ThreadPool,
    /// Helpers for the staging copies of large arrays.
    copiers: Option<rayon::ThreadPool>,
}

struct CudaParts {
    // Dropped first: waits for the copies in flight before the stream and context go.
    ring: Mutex<Ring<PinnedStaging>>,
    stream: Arc<CudaStream>,
}

impl Drop for TransferInner {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; never used after.
        keep_current_context(|| unsafe { ManuallyDrop::drop(&mut self.cuda) });
    }
}

impl fmt::Debug for DeviceTransfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTransfer")
            .field("device", &self.inner.ordinal)
            .field("thread", &self.inner.thread)
            .finish_non_exhaustive()
    }
}

impl DeviceTransfer {
    /// Opens the device: checks that the CUDA driver is present and the device exists, then
    /// creates the stream and starts the dedicated thread. On a machine without a driver or
    /// without that device this is a [`BuildError`] saying so, never a panic.
    ///
    /// The calling thread's current CUDA context is the same afterwards as before (cudarc
    /// makes the device's context current while it opens it).
    pub fn open(config: TransferConfig) -> Result<Self, BuildError> {
        if config.slots == 0 {
            return Err(BuildError::new(
                "GPU transfer: staging_slots must be at least 1",
            ));
        }
        if config.staging_threads == 0 {
            return Err(BuildError::new(
                "GPU transfer: staging_threads must be at least 1",
            ));
        }
        let ordinal = check_device(&CudaDriver, config.device)?;
        let opened = guard_panic(|| -> Result<_, DriverError> {
            result::init()?;
            // Declared first, so dropped last: after the context and stream on an error.
            let _restore = RestoreContext::save()?;
            let ctx = CudaContext::new(ordinal)?;
            let stream = ctx.new_stream()?;
            if let Some(bytes) = config.pool_release_threshold {
                if ctx.has_async_alloc() {
                    set_pool_release_threshold(&ctx, bytes)?;
                }
            }
            Ok((ctx, stream))
        })
        .map_err(BuildError::new)?;
        let (ctx, stream) = opened
            .map_err(|e| BuildError::new(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let bind = ctx.clone();
        let thread = ThreadPool::builder()
            .num_threads(1)
            .name(format!("cuda-transfer-{ordinal}"))
            // The transfer thread keeps the device's context current, so that the driver
            // calls made on it need not switch.
            .on_thread_start(move |_| {
                // SAFETY: the context is kept alive by `bind`, moved into this closure.
                let _ = unsafe { result::ctx::set_current(bind.cu_ctx()) };
            })
            .build()?;
        let copiers = match config.staging_threads {
            1 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(move |i| format!("cuda-stage{ordinal}.{i}"))
                    .build()
                    .map_err(|e| BuildError::new(format!("cannot start staging threads: {e}")))?,
            ),
        };
        let ring = Ring::new(
            PinnedStaging {
                stream: stream.clone(),
            },
            config.slots,
            config.max_pinned_bytes,
        );
        Ok(Self {
            inner: Arc::new(TransferInner {
                cuda: ManuallyDrop::new(CudaParts {
                    ring: Mutex::new(ring),
                    stream,
                }),
                ordinal,
                max_pinned_bytes: config.max_pinned_bytes,
                told_oversize: AtomicBool::new(false),
                thread,
                copiers,
            }),
        })
    }

    /// The device's ordinal.
    pub fn device(&self) -> usize {
        self.inner.ordinal
    }

    /// The device's (primary) context, to create the consumer's streams on.
    pub fn context(&self) -> &Arc<CudaContext> {
        self.inner.cuda.stream.context()
    }

    /// The stream the copies run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.cuda.stream
    }

    /// The dedicated thread, as a stage executor (`executor = transfer.executor()`).
    pub fn executor(&self) -> Executor {
        Executor::Threads(self.inner.thread.clone())
    }

    /// Pinned staging memory held by the ring, in bytes: it only grows, up to
    /// [`TransferConfig::max_pinned_bytes`].
    pub fn staging_bytes(&self) -> usize {
        self.inner.lock_ring().capacity()
    }

    /// The stage function: each host batch in, a [`DeviceBatch`] out. Run it on
    /// [`executor`](Self::executor) as a fallible stage (`pipe(try ...)` in the macro,
    /// [`StageBuilder::try_pipe`] in the builder); [`StageBuilder::to_device`] does both.
    pub fn stage<B: HostBatch>(
        &self,
    ) -> impl Fn(B) -> Result<DeviceBatch<B::Device>, TransferError> + Send + Sync + 'static {
        let transfer = self.clone();
        move |batch: B| transfer.transfer(&batch)
    }

    /// Copies one batch: stages it in the next free pinned buffer and queues the copies on
    /// the transfer stream. Returns once the copies are queued, not finished.
    pub fn transfer<B: HostBatch>(
        &self,
        batch: &B,
    ) -> Result<DeviceBatch<B::Device>, TransferError> {
        let inner = &*self.inner;
        keep_current_context(|| match guard_panic(|| inner.transfer(batch)) {
            Ok(result) => result,
            Err(panicked) => {
                // Copies may be queued from the slot handed out, with no fence after them:
                // the ring settles it (a full synchronisation through the driver, or the
                // slot is lost) before anything else.
                let _ = inner.lock_ring().drain();
                Err(TransferError::new(panicked))
            }
        })
    }

    /// Waits until every copy queued so far has finished.
    pub fn synchronize(&self) -> Result<(), TransferError> {
        keep_current_context(|| self.inner.lock_ring().drain().map_err(TransferError::from))
    }
}

impl TransferInner {
    fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring<PinnedStaging>> {
        lock(&self.cuda.ring)
    }

    fn transfer<B: HostBatch>(&self, batch: &B) -> Result<DeviceBatch<B::Device>, TransferError> {
        let stream = &self.cuda.stream;
        clear_stored_error(stream.context());
        let mut layout = Layout::new();
        batch.layout(&mut layout);
        let bytes = layout.bytes();
        let mut ring = self.lock_ring();
        let value = if ring.fits(bytes) {
            let slot = ring.acquire(bytes)?;
            let index = slot.index;
            let mut stager = Stager {
                staging: Some(slot.buffer.as_mut_slice()),
                cursor: 0,
                stream,
                copiers: self.copiers.as_ref(),
            };
            let uploaded = batch.upload(&mut stager);
            // The slot is in flight from the first queued copy, whether or not the rest were
            // queued: record its fence in every case.
            let submitted = ring.submit(index);
            drop(ring);
            let value = uploaded?;
            submitted?;
            value
        } else {
            drop(ring);
            self.tell_oversize(bytes);
            let mut stager = Stager {
                staging: None,
                cursor: 0,
                stream,
                copiers: None,
            };
            batch.upload(&mut stager)?
        };
        let ready = consumer_event(stream)?;
        Ok(DeviceBatch::new(value, ready, stream.clone(), self.ordinal))
    }

    fn tell_oversize(&self, bytes: usize) {
        if !self.told_oversize.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                device = self.ordinal,
                "a batch of {bytes} bytes is larger than the pinned staging ring may hold \
                 (max_pinned_bytes = {}): batches this large are copied from their own \
                 pageable memory, more slowly (said once)",
                self.max_pinned_bytes
            );
        }
    }
}

/// The consumer's event for one batch: recorded after its copies, separate from the ring's
/// fence, and made with `CU_EVENT_BLOCKING_SYNC` so that waiting for it on the host sleeps
/// instead of spinning a core.
fn consumer_event(stream: &CudaStream) -> Result<Arc<CudaEvent>, DriverError> {
    let ctx = stream.context();
    clear_stored_error(ctx);
    let event = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))?;
    let _bind = RestoreContext::bind(ctx)?;
    // SAFETY: both handles are alive; same context.
    unsafe { result::event::record(event.cu_event(), stream.cu_stream()) }?;
    Ok(Arc::new(event))
}

/// Staging buffers in pinned (page-locked) host memory, the only memory a host-to-device
/// copy reads asynchronously; fences are events private to the ring, recorded on the
/// transfer stream. Every call goes to the driver directly (see `driver.rs`).
struct PinnedStaging {
    stream: Arc<CudaStream>,
}

impl Staging for PinnedStaging {
    type Buffer = PinnedBuffer;
    type Fence = DriverEvent;
    type Error = DriverError;

    fn allocate(&self, bytes: usize) -> Result<PinnedBuffer, DriverError> {
        PinnedBuffer::new(self.stream.context(), bytes)
    }

    fn capacity(&self, buffer: &PinnedBuffer) -> usize {
        buffer.len()
    }

    fn new_fence(&self) -> Result<DriverEvent, DriverError> {
        DriverEvent::new(self.stream.context())
    }

    fn record(&self, fence: &DriverEvent) -> Result<(), DriverError> {
        fence.record(&self.stream)
    }

    fn wait(&self, fence: &DriverEvent) -> Result<(), DriverError> {
        // Poll rather than `cuEventSynchronize`, which spins a core at 100% for as long as
        // the copy takes unless the event was made with blocking sync.
        let mut round = 0u32;
        while !fence.is_complete()? {
            if round < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            round += 1;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), DriverError> {
        stream_synchronize(&self.stream)
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
impl<T: HostBatch> StageBuilder<T> {
    /// Copies each batch to a CUDA device: opens the device described by `config` (a
    /// dedicated thread, stream and pinned staging ring) and adds a stage that yields
    /// [`DeviceBatch`]es. A device that cannot be opened (no driver, no such device, a bad
    /// `LOCAL_RANK`) makes [`build`](crate::SinkBuilder::build) fail with that error.
    pub fn to_device(self, config: TransferConfig) -> StageBuilder<DeviceBatch<T::Device>> {
        match DeviceTransfer::open(config) {
            Ok(transfer) => self.to_device_with(&transfer),
            Err(error) => {
                let never_run = |_: T| -> Result<DeviceBatch<T::Device>, TransferError> {
                    Err(TransferError::new("the CUDA device could not be opened"))
                };
                let mut next = self.try_pipe(never_run).name("to_device");
                next.push_error(error);
                next
            }
        }
    }

    /// Copies each batch with an opened [`DeviceTransfer`] (which may serve several
    /// pipelines). The stage runs on the transfer's dedicated thread, whatever executor is
    /// set after it; its default name is `to_device(cuda:N)`.
    pub fn to_device_with(self, transfer: &DeviceTransfer) -> StageBuilder<DeviceBatch<T::Device>> {
        self.pinned_pipe(
            transfer.stage::<T>(),
            format!("to_device(cuda:{})", transfer.device()),
            transfer.executor(),
        )
    }
}
