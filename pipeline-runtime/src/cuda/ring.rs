//! A ring of staging buffers reused across batches.
//!
//! A batch is copied into a staging buffer on the host, then an asynchronous copy moves it to
//! the device and a fence (a CUDA event) is recorded after that copy. The buffer is in
//! flight until the fence completes: writing the next batch into it, or freeing it, before
//! then would corrupt the copy. The ring hands out its slots in turn, waits for a slot's fence
//! before handing it out again, and only ever grows a slot (after its fence completed), so
//! that with `n` slots up to `n` copies are queued while the host fills the next buffer.
//!
//! The ring is generic over [`Staging`] (allocate, wait for a fence) so that this logic is
//! tested on the CPU with a simulated device.

/// Granularity of staging buffer sizes: small growth steps would reallocate pinned memory
/// (slow, and it serialises with the device) for batches of slightly varying size.
pub(crate) const GROWTH_GRAIN: usize = 64 * 1024;

/// Where staging buffers come from and how a fence is waited on.
pub(crate) trait Staging {
    /// A host buffer the device can copy from.
    type Buffer;
    /// Completes when the copies recorded before it have finished.
    type Fence;
    /// A failed allocation or wait.
    type Error;

    /// A buffer of at least `bytes` bytes.
    fn allocate(&self, bytes: usize) -> Result<Self::Buffer, Self::Error>;
    /// The buffer's size in bytes.
    fn capacity(&self, buffer: &Self::Buffer) -> usize;
    /// Blocks until `fence` has completed.
    fn wait(&self, fence: &Self::Fence) -> Result<(), Self::Error>;
}

struct Slot<S: Staging> {
    buffer: Option<S::Buffer>,
    /// Recorded after the last copy out of `buffer`; `None` once it is known to be complete.
    in_flight: Option<S::Fence>,
}

/// A fixed number of slots, each with a grow-only buffer. See the [module docs](self).
pub(crate) struct Ring<S: Staging> {
    staging: S,
    slots: Vec<Slot<S>>,
    next: usize,
}

/// The slot handed out by [`Ring::acquire`]: free to write, until [`Ring::submit`] marks it
/// in flight again.
#[derive(Debug)]
pub(crate) struct Acquired<'a, B> {
    pub(crate) index: usize,
    pub(crate) buffer: &'a mut B,
}

impl<S: Staging> Ring<S> {
    /// A ring of `slots` (at least 1) empty slots; buffers are allocated on first use.
    pub(crate) fn new(staging: S, slots: usize) -> Self {
        Self {
            staging,
            slots: (0..slots.max(1))
                .map(|_| Slot {
                    buffer: None,
                    in_flight: None,
                })
                .collect(),
            next: 0,
        }
    }

    /// The next slot in turn, with a buffer of at least `bytes`, once the copy out of it (if
    /// any) has completed. Slots are used in submission order, so the slot waited on is the
    /// oldest copy in flight.
    pub(crate) fn acquire(&mut self, bytes: usize) -> Result<Acquired<'_, S::Buffer>, S::Error> {
        let index = self.next;
        self.next = (index + 1) % self.slots.len();
        let slot = &mut self.slots[index];
        if let Some(fence) = &slot.in_flight {
            self.staging.wait(fence)?;
            slot.in_flight = None;
        }
        let capacity = slot.buffer.as_ref().map_or(0, |b| self.staging.capacity(b));
        if slot.buffer.is_none() || capacity < bytes {
            // The old buffer's copy has completed (waited above), so it may be freed; free it
            // before allocating so that the two are never held together.
            slot.buffer = None;
            slot.buffer = Some(self.staging.allocate(grown_capacity(capacity, bytes))?);
        }
        let buffer = slot.buffer.as_mut().expect("allocated above");
        Ok(Acquired { index, buffer })
    }

    /// Marks slot `index` in flight until `fence` completes.
    pub(crate) fn submit(&mut self, index: usize, fence: S::Fence) {
        self.slots[index].in_flight = Some(fence);
    }

    /// Waits for every copy in flight. Returns the first error; the slots whose wait failed
    /// stay in flight.
    pub(crate) fn drain(&mut self) -> Result<(), S::Error> {
        let mut first = Ok(());
        for slot in &mut self.slots {
            if let Some(fence) = &slot.in_flight {
                match self.staging.wait(fence) {
                    Ok(()) => slot.in_flight = None,
                    Err(e) if first.is_ok() => first = Err(e),
                    Err(_) => {}
                }
            }
        }
        first
    }

    /// Total bytes of the slots' buffers.
    pub(crate) fn capacity(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.buffer.as_ref())
            .map(|b| self.staging.capacity(b))
            .sum()
    }
}

impl<S: Staging> Drop for Ring<S> {
    fn drop(&mut self) {
        // A buffer must outlive the copy out of it. If a wait fails (the device is lost),
        // leak that buffer rather than free memory a copy may still read.
        for slot in &mut self.slots {
            if let Some(fence) = slot.in_flight.take() {
                if self.staging.wait(&fence).is_err() {
                    std::mem::forget(slot.buffer.take());
                }
            }
        }
    }
}

/// The size a slot grows to: at least `needed`, rounded up to [`GROWTH_GRAIN`], and at least
/// half again the current size so that a slowly growing batch does not reallocate each time.
pub(crate) fn grown_capacity(current: usize, needed: usize) -> usize {
    let rounded = needed.div_ceil(GROWTH_GRAIN).max(1) * GROWTH_GRAIN;
    rounded.max(current.saturating_add(current / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Condvar, Mutex};

    /// A simulated device: fences complete when the test (or a device thread) says so, and
    /// every write into or free of a staging buffer checks that no copy out of it is pending.
    #[derive(Clone, Default)]
    struct SimDevice {
        state: Arc<(Mutex<SimState>, Condvar)>,
    }

    #[derive(Default)]
    struct SimState {
        complete: Vec<bool>,
        /// For each buffer id: the fence of the last copy out of it.
        last_copy: Vec<Option<usize>>,
        allocations: usize,
        frees: usize,
        waits: Vec<usize>,
        violations: Vec<String>,
        /// Fences the device thread will complete, in order.
        queue: VecDeque<usize>,
        /// When set, `wait` completes the fence itself (single-threaded tests).
        complete_on_wait: bool,
    }

    struct SimBuffer {
        id: usize,
        capacity: usize,
        device: SimDevice,
    }

    impl Drop for SimBuffer {
        fn drop(&mut self) {
            let mut s = self.device.state.0.lock().unwrap();
            s.frees += 1;
            if let Some(f) = s.last_copy[self.id] {
                if !s.complete[f] {
                    s.violations
                        .push(format!("buffer {} freed while copy {f} in flight", self.id));
                }
            }
        }
    }

    impl SimDevice {
        fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
            self.state.0.lock().unwrap()
        }

        /// The host writes a batch into `buffer`.
        fn write(&self, buffer: &SimBuffer) {
            let mut s = self.lock();
            if let Some(f) = s.last_copy[buffer.id] {
                if !s.complete[f] {
                    s.violations.push(format!(
                        "buffer {} written while copy {f} in flight",
                        buffer.id
                    ));
                }
            }
        }

        /// Queues a copy out of `buffer`; returns its fence.
        fn copy_from(&self, buffer: &SimBuffer) -> usize {
            let mut s = self.lock();
            let fence = s.complete.len();
            s.complete.push(false);
            s.last_copy[buffer.id] = Some(fence);
            s.queue.push_back(fence);
            fence
        }

        fn complete(&self, fence: usize) {
            self.lock().complete[fence] = true;
            self.state.1.notify_all();
        }

        fn in_flight(&self) -> usize {
            self.lock().complete.iter().filter(|c| !**c).count()
        }
    }

    impl Staging for SimDevice {
        type Buffer = SimBuffer;
        type Fence = usize;
        type Error = String;

        fn allocate(&self, bytes: usize) -> Result<SimBuffer, String> {
            let mut s = self.lock();
            s.allocations += 1;
            let id = s.last_copy.len();
            s.last_copy.push(None);
            Ok(SimBuffer {
                id,
                capacity: bytes,
                device: self.clone(),
            })
        }

        fn capacity(&self, buffer: &SimBuffer) -> usize {
            buffer.capacity
        }

        fn wait(&self, fence: &usize) -> Result<(), String> {
            let (lock, cond) = &*self.state;
            let mut s = lock.lock().unwrap();
            s.waits.push(*fence);
            if s.complete_on_wait {
                s.complete[*fence] = true;
            }
            while !s.complete[*fence] {
                s = cond.wait(s).unwrap();
            }
            Ok(())
        }
    }

    fn sim(complete_on_wait: bool) -> SimDevice {
        let device = SimDevice::default();
        device.lock().complete_on_wait = complete_on_wait;
        device
    }

    /// One batch through the ring, as the transfer stage does it.
    fn transfer(ring: &mut Ring<SimDevice>, device: &SimDevice, bytes: usize) -> usize {
        let slot = ring.acquire(bytes).unwrap();
        assert!(slot.buffer.capacity >= bytes);
        device.write(slot.buffer);
        let fence = device.copy_from(slot.buffer);
        let index = slot.index;
        ring.submit(index, fence);
        fence
    }

    #[test]
    fn the_checker_sees_a_write_into_a_buffer_in_flight() {
        // The simulated device must be able to fail the tests below.
        let device = sim(false);
        let buffer = device.allocate(8).unwrap();
        device.copy_from(&buffer);
        device.write(&buffer);
        assert_eq!(device.lock().violations.len(), 1);
        device.complete(0);
    }

    #[test]
    fn a_slot_is_reused_only_after_its_copy_completed() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 3);
        let fences: Vec<usize> = (0..3).map(|_| transfer(&mut ring, &device, 100)).collect();
        assert_eq!(
            device.lock().waits,
            Vec::<usize>::new(),
            "free slots need no wait"
        );
        assert_eq!(device.in_flight(), 3);

        // The fourth batch goes to slot 0, after the first copy (and only it) completed.
        transfer(&mut ring, &device, 100);
        assert_eq!(device.lock().waits, vec![fences[0]]);
        assert!(!device.lock().complete[fences[1]]);
        assert!(!device.lock().complete[fences[2]]);
        assert_eq!(device.lock().violations, Vec::<String>::new());
    }

    #[test]
    fn slots_grow_only_and_free_the_old_buffer_after_its_copy() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1);
        transfer(&mut ring, &device, 100_000);
        let first = ring.capacity();
        assert!(first >= 100_000);
        transfer(&mut ring, &device, 10); // smaller: reuses the buffer
        assert_eq!(ring.capacity(), first);
        assert_eq!(device.lock().allocations, 1);

        transfer(&mut ring, &device, first + 1); // larger: a new buffer
        assert!(ring.capacity() > first);
        let s = device.lock();
        assert_eq!((s.allocations, s.frees), (2, 1));
        assert_eq!(s.violations, Vec::<String>::new());
    }

    #[test]
    fn growth_rounds_up_and_grows_by_half_at_least() {
        assert_eq!(grown_capacity(0, 0), GROWTH_GRAIN);
        assert_eq!(grown_capacity(0, 1), GROWTH_GRAIN);
        assert_eq!(grown_capacity(0, GROWTH_GRAIN + 1), 2 * GROWTH_GRAIN);
        assert_eq!(
            grown_capacity(4 * GROWTH_GRAIN, 4 * GROWTH_GRAIN + 1),
            6 * GROWTH_GRAIN
        );
        assert_eq!(
            grown_capacity(GROWTH_GRAIN, 10 * GROWTH_GRAIN),
            10 * GROWTH_GRAIN
        );
    }

    #[test]
    fn dropping_the_ring_waits_for_every_copy_in_flight() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 4);
        let fences: Vec<usize> = (0..3).map(|_| transfer(&mut ring, &device, 64)).collect();
        drop(ring);
        let s = device.lock();
        assert_eq!(s.waits, fences);
        assert_eq!(s.frees, 3);
        assert_eq!(s.violations, Vec::<String>::new());
    }

    #[test]
    fn drain_waits_for_every_copy_and_leaves_buffers_for_reuse() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 2);
        transfer(&mut ring, &device, 64);
        transfer(&mut ring, &device, 64);
        ring.drain().unwrap();
        assert_eq!(device.in_flight(), 0);
        transfer(&mut ring, &device, 64);
        assert_eq!(
            device.lock().waits.len(),
            2,
            "a drained slot needs no second wait"
        );
        assert_eq!(device.lock().allocations, 2);
    }

    /// A device thread completes copies in order, at its own pace, while the host pushes
    /// batches of varying sizes: no buffer is ever written or freed while a copy out of it
    /// is pending, and at most `slots` copies are in flight.
    #[test]
    fn concurrent_device_never_sees_a_buffer_reused_in_flight() {
        const SLOTS: usize = 3;
        let device = sim(false);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = {
            let device = device.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut max_in_flight = 0;
                let mut step = 0u64;
                loop {
                    let next = {
                        let mut s = device.lock();
                        max_in_flight = max_in_flight.max(s.queue.len());
                        s.queue.pop_front()
                    };
                    match next {
                        Some(fence) => {
                            // Vary the device's pace so the host sometimes runs ahead.
                            step = step.wrapping_mul(6364136223846793005).wrapping_add(1);
                            for _ in 0..(step >> 60) {
                                std::thread::yield_now();
                            }
                            device.complete(fence);
                        }
                        None if done.load(std::sync::atomic::Ordering::Acquire) => break,
                        None => std::thread::yield_now(),
                    }
                }
                max_in_flight
            })
        };
        let mut ring = Ring::new(device.clone(), SLOTS);
        let mut size = 1usize;
        for i in 0..2_000 {
            size = (size * 7 + i) % 300_000 + 1;
            transfer(&mut ring, &device, size);
        }
        drop(ring);
        done.store(true, std::sync::atomic::Ordering::Release);
        let max_in_flight = worker.join().unwrap();
        let s = device.lock();
        assert_eq!(s.violations, Vec::<String>::new());
        assert!(max_in_flight <= SLOTS, "{max_in_flight} copies in flight");
        assert!(s.allocations <= SLOTS * 12, "{} allocations", s.allocations);
    }
}
