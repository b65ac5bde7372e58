//! The transfer itself: one device, one dedicated thread, one stream, one staging ring.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError, PinnedHostSlice};

use super::batch::{DeviceBatch, HostBatch, Layout, Stager, TransferError};
use super::device::{check_device, guard_panic, CudaDriver, DeviceSelector};
use super::ring::{Ring, Staging};
use crate::builder::StageBuilder;
use crate::error::BuildError;
use crate::executor::{Executor, ThreadPool};
use crate::sync::lock;

/// Staging buffers in the ring unless set otherwise: one being filled, two copies queued.
pub const DEFAULT_STAGING_SLOTS: usize = 3;

/// Threads that share the staging copy of a large array unless set otherwise.
pub const DEFAULT_STAGING_THREADS: usize = 4;

/// How to open a [`DeviceTransfer`].
#[derive(Debug, Clone)]
pub struct TransferConfig {
    device: DeviceSelector,
    slots: usize,
    staging_threads: usize,
}

impl TransferConfig {
    /// Copy to device `index`.
    pub fn device(index: usize) -> Self {
        Self {
            device: DeviceSelector::Index(index),
            slots: DEFAULT_STAGING_SLOTS,
            staging_threads: DEFAULT_STAGING_THREADS,
        }
    }

    /// Copy to the device numbered by `LOCAL_RANK` (device 0 when it is not set), as a
    /// distributed launcher sets it for each process on a node.
    pub fn local_rank() -> Self {
        Self {
            device: DeviceSelector::LocalRank,
            slots: DEFAULT_STAGING_SLOTS,
            staging_threads: DEFAULT_STAGING_THREADS,
        }
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
    // Dropped first: waits for the copies in flight before the stream and context go.
    ring: Mutex<Ring<PinnedStaging>>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    /// The one thread the stage runs on; kept by every handle and every stage function.
    thread: ThreadPool,
    /// Helpers for the staging copies of large arrays.
    copiers: Option<rayon::ThreadPool>,
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
            let ctx = CudaContext::new(ordinal)?;
            let stream = ctx.new_stream()?;
            Ok((ctx, stream))
        })
        .map_err(BuildError::new)?;
        let (ctx, stream) = opened
            .map_err(|e| BuildError::new(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let bind = ctx.clone();
        let thread = ThreadPool::builder()
            .num_threads(1)
            .name(format!("cuda-transfer-{ordinal}"))
            // Every cudarc call binds the context again; this only saves the first one.
            .on_thread_start(move |_| {
                let _ = bind.bind_to_thread();
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
        let ring = Ring::new(PinnedStaging { ctx }, config.slots);
        Ok(Self {
            inner: Arc::new(TransferInner {
                ring: Mutex::new(ring),
                stream,
                ordinal,
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
        self.inner.stream.context()
    }

    /// The stream the copies run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// The dedicated thread, as a stage executor (`executor = transfer.executor()`).
    pub fn executor(&self) -> Executor {
        Executor::Threads(self.inner.thread.clone())
    }

    /// Pinned staging memory held by the ring, in bytes (it only grows).
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
        match guard_panic(|| inner.transfer(batch)) {
            Ok(result) => result,
            Err(panicked) => {
                // Some copies may be queued from a slot that has no event yet: wait for them
                // before the slot can be handed out again.
                let _ = inner.stream.synchronize();
                Err(TransferError::new(panicked))
            }
        }
    }

    /// Waits until every copy queued so far has finished.
    pub fn synchronize(&self) -> Result<(), TransferError> {
        self.inner.lock_ring().drain().map_err(TransferError::from)
    }
}

impl TransferInner {
    fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring<PinnedStaging>> {
        lock(&self.ring)
    }

    fn transfer<B: HostBatch>(&self, batch: &B) -> Result<DeviceBatch<B::Device>, TransferError> {
        let mut layout = Layout::new();
        batch.layout(&mut layout);
        let mut ring = self.lock_ring();
        let slot = ring.acquire(layout.bytes())?;
        let index = slot.index;
        let mut stager = Stager {
            staging: slot.buffer.as_mut_slice()?,
            cursor: 0,
            stream: &self.stream,
            copiers: self.copiers.as_ref(),
        };
        let uploaded = batch.upload(&mut stager);
        // The slot is in flight from the first queued copy, whether or not the rest were
        // queued: record its event in every case.
        match self.stream.record_event(None) {
            Ok(event) => {
                let ready = Arc::new(event);
                ring.submit(index, ready.clone());
                Ok(DeviceBatch {
                    value: uploaded?,
                    ready,
                    ordinal: self.ordinal,
                })
            }
            Err(e) => {
                let _ = self.stream.synchronize();
                Err(e.into())
            }
        }
    }
}

/// Staging buffers in pinned (page-locked) host memory, the only memory a host-to-device
/// copy reads asynchronously; fences are CUDA events on the transfer stream.
struct PinnedStaging {
    ctx: Arc<CudaContext>,
}

impl Staging for PinnedStaging {
    type Buffer = PinnedHostSlice<u8>;
    type Fence = Arc<CudaEvent>;
    type Error = DriverError;

    fn allocate(&self, bytes: usize) -> Result<PinnedHostSlice<u8>, DriverError> {
        // SAFETY: the memory is uninitialised; only the byte ranges a batch writes are ever
        // copied to the device.
        unsafe { self.ctx.alloc_pinned::<u8>(bytes) }
    }

    fn capacity(&self, buffer: &PinnedHostSlice<u8>) -> usize {
        buffer.len()
    }

    fn wait(&self, fence: &Arc<CudaEvent>) -> Result<(), DriverError> {
        // Poll rather than `cuEventSynchronize`, which spins a core at 100% for as long as
        // the copy takes unless the event was made with blocking sync.
        let mut round = 0u32;
        while !fence.try_is_complete()? {
            if round < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            round += 1;
        }
        Ok(())
    }
}

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
