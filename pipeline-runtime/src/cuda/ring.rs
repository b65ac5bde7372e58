//! A ring of staging buffers reused across batches.
//!
//! A batch is copied into a staging buffer on the host, then an asynchronous copy moves it to
//! the device and a fence (an event private to the ring) is recorded after that copy. The
//! buffer is in flight until the fence completes: writing the next batch into it, or freeing
//! it, before then would corrupt the copy. The ring hands out its slots in turn, waits for a
//! slot's fence before handing it out again, and only ever grows a slot (after its fence
//! completed), so that with `n` slots up to `n` copies are queued while the host fills the
//! next buffer.
//!
//! - **The fence is the ring's own.** It is created and recorded by the ring and never handed
//!   out, so nothing outside (a consumer recording "its" event again on another stream) can
//!   make a slot look free while its copy runs. The consumer gets a separate event.
//! - **A slot without a fence is settled by a full synchronisation.** A slot is marked
//!   `Writing` when handed out; if its fence cannot be recorded (or the upload panicked before
//!   [`Ring::submit`]), copies out of it may be queued with nothing to wait on, so before the
//!   slot is used again the ring waits for the whole stream ([`Staging::synchronize`]). If that
//!   fails too, the slot is **lost**: its buffer is leaked, never written or freed again.
//! - **Bounded.** The slots' buffers (lost ones included) never hold more than `max_bytes`
//!   together: growing a slot past the bound first frees other slots' buffers (after their
//!   copies). A batch larger than the bound does not fit at all ([`Ring::fits`]); the caller
//!   copies it another way.
//!
//! The ring is generic over [`Staging`] (allocate, record and wait for a fence, synchronise)
//! so that this logic is tested on the CPU with a simulated device.

use std::fmt;

/// Granularity of staging buffer sizes: small growth steps would reallocate pinned memory
/// (slow, and it serialises with the device) for batches of slightly varying size.
pub(crate) const GROWTH_GRAIN: usize = 64 * 1024;

/// Where staging buffers come from, and how copies out of them are fenced.
pub(crate) trait Staging {
    /// A host buffer the device can copy from.
    type Buffer;
    /// An event: completes when the copies queued before its last recording have finished.
    type Fence;
    /// A failed allocation, recording, wait or synchronisation.
    type Error;

    /// A buffer of at least `bytes` bytes.
    fn allocate(&self, bytes: usize) -> Result<Self::Buffer, Self::Error>;
    /// The buffer's size in bytes.
    fn capacity(&self, buffer: &Self::Buffer) -> usize;
    /// A new fence, with nothing recorded.
    fn new_fence(&self) -> Result<Self::Fence, Self::Error>;
    /// Records in `fence` every copy queued so far (replacing what it held).
    fn record(&self, fence: &Self::Fence) -> Result<(), Self::Error>;
    /// Blocks until `fence` has completed.
    fn wait(&self, fence: &Self::Fence) -> Result<(), Self::Error>;
    /// Blocks until every copy queued so far has finished, whatever any fence says.
    fn synchronize(&self) -> Result<(), Self::Error>;
}

/// Why the ring could not hand out a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RingError<E> {
    /// The device failed (allocation, wait, synchronisation).
    Device(E),
    /// Every slot was lost to device errors.
    NoSlots,
}

impl<E: fmt::Display> fmt::Display for RingError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Device(e) => write!(f, "{e}"),
            RingError::NoSlots => f.write_str(
                "every pinned staging buffer was lost to device errors (a copy out of it could \
                 not be waited for); no batch can be staged any more",
            ),
        }
    }
}

impl<E> From<E> for RingError<E> {
    fn from(e: E) -> Self {
        RingError::Device(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No copy out of the buffer is pending.
    Free,
    /// Handed out by `acquire`: copies may have been queued, no fence recorded after them yet.
    Writing,
    /// The fence was recorded after the last copy out of the buffer.
    InFlight,
    /// A copy may still read the buffer and cannot be waited for: never used again.
    Lost,
}

struct Slot<S: Staging> {
    buffer: Option<S::Buffer>,
    /// The slot's own fence, created on first use and recorded again for every batch.
    fence: Option<S::Fence>,
    state: State,
}

/// A fixed number of slots, each with a grow-only buffer. See the [module docs](self).
pub(crate) struct Ring<S: Staging> {
    staging: S,
    slots: Vec<Slot<S>>,
    next: usize,
    max_bytes: usize,
    /// Bytes of the buffers of lost slots: leaked, still held, counted against `max_bytes`.
    lost_bytes: usize,
}

/// The slot handed out by [`Ring::acquire`]: free to write, until [`Ring::submit`] marks it
/// in flight again.
#[derive(Debug)]
pub(crate) struct Acquired<'a, B> {
    pub(crate) index: usize,
    pub(crate) buffer: &'a mut B,
}

impl<S: Staging> Ring<S> {
    /// A ring of `slots` (at least 1) empty slots whose buffers hold at most `max_bytes`
    /// together; buffers are allocated on first use.
    pub(crate) fn new(staging: S, slots: usize, max_bytes: usize) -> Self {
        Self {
            staging,
            slots: (0..slots.max(1))
                .map(|_| Slot {
                    buffer: None,
                    fence: None,
                    state: State::Free,
                })
                .collect(),
            next: 0,
            max_bytes,
            lost_bytes: 0,
        }
    }

    /// Whether a batch of `bytes` can be staged at all (it fits under the bound).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        bytes <= self.max_bytes.saturating_sub(self.lost_bytes)
    }

    /// The next slot in turn, with a buffer of at least `bytes` (which must [fit](Self::fits)),
    /// once the copy out of it (if any) has completed. Slots are used in submission order, so
    /// the slot waited on is the oldest copy in flight.
    pub(crate) fn acquire(
        &mut self,
        bytes: usize,
    ) -> Result<Acquired<'_, S::Buffer>, RingError<S::Error>> {
        assert!(self.fits(bytes), "acquire({bytes}) over the ring's bound");
        let count = self.slots.len();
        let index = (0..count)
            .map(|k| (self.next + k) % count)
            .find(|&i| self.slots[i].state != State::Lost)
            .ok_or(RingError::NoSlots)?;
        self.next = (index + 1) % count;
        self.settle(index)?;
        let capacity = self.slot_capacity(index);
        if self.slots[index].buffer.is_none() || capacity < bytes {
            // The old buffer's copy has completed (settled above), so it may be freed; free it
            // before allocating so that the two are never held together.
            self.slots[index].buffer = None;
            let budget = self.max_bytes - self.lost_bytes;
            let others = self.capacity() - self.lost_bytes;
            if others > budget - bytes {
                self.make_room(index, budget - bytes)?;
            }
            let others = self.capacity() - self.lost_bytes;
            let size = grown_capacity(capacity, bytes).min(budget - others);
            self.slots[index].buffer = Some(self.staging.allocate(size)?);
        }
        let slot = &mut self.slots[index];
        slot.state = State::Writing;
        let buffer = slot.buffer.as_mut().expect("allocated above");
        Ok(Acquired { index, buffer })
    }

    /// Marks slot `index` in flight after the copies queued so far, by recording its own
    /// fence. Call it once the batch's copies are queued, whether or not all of them were.
    /// On an error the slot is settled at once (a full synchronisation), or lost.
    pub(crate) fn submit(&mut self, index: usize) -> Result<(), S::Error> {
        let slot = &mut self.slots[index];
        debug_assert_eq!(slot.state, State::Writing);
        let fence = match slot.fence.take() {
            Some(fence) => Ok(fence),
            None => self.staging.new_fence(),
        };
        let recorded = fence.and_then(|fence| {
            let result = self.staging.record(&fence);
            slot.fence = Some(fence);
            result
        });
        match recorded {
            Ok(()) => {
                slot.state = State::InFlight;
                Ok(())
            }
            Err(e) => {
                // Copies out of the slot may be queued with no fence after them.
                let _ = self.settle(index);
                Err(e)
            }
        }
    }

    /// Waits for every copy in flight. Returns the first error; slots whose wait failed stay
    /// in flight, and slots that could not be settled otherwise are lost.
    pub(crate) fn drain(&mut self) -> Result<(), RingError<S::Error>> {
        let mut first = Ok(());
        for index in 0..self.slots.len() {
            if let Err(e) = self.settle(index) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Makes slot `index` free: waits for its fence, or synchronises if it has none (and
    /// loses the slot if that fails). A lost slot stays lost.
    fn settle(&mut self, index: usize) -> Result<(), RingError<S::Error>> {
        let slot = &mut self.slots[index];
        match slot.state {
            State::Free | State::Lost => Ok(()),
            State::InFlight => {
                let fence = slot.fence.as_ref().expect("an in-flight slot has a fence");
                self.staging.wait(fence)?;
                slot.state = State::Free;
                Ok(())
            }
            State::Writing => match self.staging.synchronize() {
                Ok(()) => {
                    slot.state = State::Free;
                    Ok(())
                }
                Err(e) => {
                    self.lose(index);
                    Err(RingError::Device(e))
                }
            },
        }
    }

    /// Leaks slot `index`'s buffer: a copy may still read it.
    fn lose(&mut self, index: usize) {
        let capacity = self.slot_capacity(index);
        let slot = &mut self.slots[index];
        slot.state = State::Lost;
        std::mem::forget(slot.buffer.take());
        self.lost_bytes += capacity;
        tracing::error!(
            "a staging buffer of {capacity} bytes is leaked: a copy out of it may still run \
             and could not be waited for (the device failed); the ring goes on with one slot \
             fewer"
        );
    }

    /// Frees other slots' buffers (after their copies) until the others hold at most
    /// `budget` bytes. Slot `except` is left alone.
    fn make_room(&mut self, except: usize, budget: usize) -> Result<(), RingError<S::Error>> {
        let count = self.slots.len();
        for index in (1..count).map(|k| (except + k) % count) {
            if self.capacity() - self.lost_bytes - self.slot_capacity(except) <= budget {
                break;
            }
            if self.slots[index].buffer.is_some() && self.slots[index].state != State::Lost {
                self.settle(index)?;
                if self.slots[index].state == State::Free {
                    self.slots[index].buffer = None;
                }
            }
        }
        Ok(())
    }

    fn slot_capacity(&self, index: usize) -> usize {
        self.slots[index]
            .buffer
            .as_ref()
            .map_or(0, |b| self.staging.capacity(b))
    }

    /// Total bytes of the slots' buffers, lost ones included.
    pub(crate) fn capacity(&self) -> usize {
        self.lost_bytes
            + self
                .slots
                .iter()
                .filter_map(|s| s.buffer.as_ref())
                .map(|b| self.staging.capacity(b))
                .sum::<usize>()
    }

    /// How many slots were lost to device errors.
    #[cfg(test)]
    pub(crate) fn lost_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.state == State::Lost).count()
    }
}

impl<S: Staging> Drop for Ring<S> {
    fn drop(&mut self) {
        // A buffer must outlive the copy out of it. `settle` waits for its fence (or
        // synchronises) and loses (leaks) the slot if that fails; a slot whose wait failed
        // is leaked here too, rather than free memory a copy may still read.
        for index in 0..self.slots.len() {
            if self.settle(index).is_err() && self.slots[index].state != State::Lost {
                self.lose(index);
            }
        }
    }
}

/// The size a slot grows to: at least `needed`, rounded up to [`GROWTH_GRAIN`], and at least
/// half again the current size so that a slowly growing batch does not reallocate each time.
/// The ring caps it at what its bound leaves.
pub(crate) fn grown_capacity(current: usize, needed: usize) -> usize {
    let rounded = needed.div_ceil(GROWTH_GRAIN).max(1) * GROWTH_GRAIN;
    rounded.max(current.saturating_add(current / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Condvar, Mutex};

    const UNBOUNDED: usize = usize::MAX;

    /// A simulated device with one stream: copies complete in order, when the test (or a
    /// device thread) says so, and every write into or free of a staging buffer checks that
    /// no copy out of it is pending.
    #[derive(Clone, Default)]
    struct SimDevice {
        state: Arc<(Mutex<SimState>, Condvar)>,
    }

    #[derive(Default)]
    struct SimState {
        /// One entry per queued copy.
        complete: Vec<bool>,
        /// For each buffer id: the last copy out of it.
        last_copy: Vec<Option<usize>>,
        allocations: usize,
        frees: usize,
        /// Bytes of the buffers allocated and not freed, and the most ever held.
        live_bytes: usize,
        peak_bytes: usize,
        /// The copies each fence wait was for.
        waits: Vec<usize>,
        synchronizations: usize,
        violations: Vec<String>,
        /// Copies the device thread will complete, in order.
        queue: VecDeque<usize>,
        /// When set, `wait` and `synchronize` complete the copies themselves
        /// (single-threaded tests).
        complete_on_wait: bool,
        /// Failures to inject.
        fail_record: bool,
        fail_synchronize: bool,
        fail_wait: bool,
    }

    struct SimBuffer {
        id: usize,
        capacity: usize,
        device: SimDevice,
    }

    /// An event: the copy it was last recorded after (`None`: nothing recorded, complete).
    #[derive(Clone, Default)]
    struct SimFence(Arc<Mutex<Option<usize>>>);

    impl SimFence {
        fn copy(&self) -> Option<usize> {
            *self.0.lock().unwrap()
        }
    }

    impl Drop for SimBuffer {
        fn drop(&mut self) {
            let mut s = self.device.state.0.lock().unwrap();
            s.frees += 1;
            s.live_bytes -= self.capacity;
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

        /// Queues a copy out of `buffer` on the stream; returns its id.
        fn copy_from(&self, buffer: &SimBuffer) -> usize {
            let copy = self.queue_work();
            self.lock().last_copy[buffer.id] = Some(copy);
            copy
        }

        /// Queues work that reads no staging buffer (another stream's, say).
        fn queue_work(&self) -> usize {
            let mut s = self.lock();
            let copy = s.complete.len();
            s.complete.push(false);
            s.queue.push_back(copy);
            copy
        }

        /// The device finishes every copy up to `copy` (streams run in order).
        fn complete_through(&self, copy: usize) {
            let mut s = self.lock();
            for c in 0..=copy {
                s.complete[c] = true;
            }
            s.queue.retain(|&c| c > copy);
            drop(s);
            self.state.1.notify_all();
        }

        fn in_flight(&self) -> usize {
            self.lock().complete.iter().filter(|c| !**c).count()
        }

        fn violations(&self) -> Vec<String> {
            self.lock().violations.clone()
        }
    }

    impl Staging for SimDevice {
        type Buffer = SimBuffer;
        type Fence = SimFence;
        type Error = String;

        fn allocate(&self, bytes: usize) -> Result<SimBuffer, String> {
            let mut s = self.lock();
            s.allocations += 1;
            s.live_bytes += bytes;
            s.peak_bytes = s.peak_bytes.max(s.live_bytes);
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

        fn new_fence(&self) -> Result<SimFence, String> {
            Ok(SimFence::default())
        }

        fn record(&self, fence: &SimFence) -> Result<(), String> {
            let s = self.lock();
            if s.fail_record {
                return Err("record failed".into());
            }
            *fence.0.lock().unwrap() = s.complete.len().checked_sub(1);
            Ok(())
        }

        fn wait(&self, fence: &SimFence) -> Result<(), String> {
            let Some(copy) = fence.copy() else {
                return Ok(());
            };
            let (lock, cond) = &*self.state;
            let mut s = lock.lock().unwrap();
            s.waits.push(copy);
            if s.fail_wait {
                return Err("wait failed".into());
            }
            if s.complete_on_wait {
                drop(s);
                self.complete_through(copy);
                s = lock.lock().unwrap();
            }
            while !s.complete[copy] {
                s = cond.wait(s).unwrap();
            }
            Ok(())
        }

        fn synchronize(&self) -> Result<(), String> {
            let (lock, cond) = &*self.state;
            let mut s = lock.lock().unwrap();
            s.synchronizations += 1;
            if s.fail_synchronize {
                return Err("synchronize failed".into());
            }
            let Some(last) = s.complete.len().checked_sub(1) else {
                return Ok(());
            };
            if s.complete_on_wait {
                drop(s);
                self.complete_through(last);
                s = lock.lock().unwrap();
            }
            while !s.complete.iter().all(|c| *c) {
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

    /// One batch through the ring, as the transfer stage does it; returns the copy's id.
    fn transfer(ring: &mut Ring<SimDevice>, device: &SimDevice, bytes: usize) -> usize {
        let slot = ring.acquire(bytes).unwrap();
        assert!(slot.buffer.capacity >= bytes);
        device.write(slot.buffer);
        let copy = device.copy_from(slot.buffer);
        let index = slot.index;
        ring.submit(index).unwrap();
        copy
    }

    #[test]
    fn the_checker_sees_a_write_into_a_buffer_in_flight() {
        // The simulated device must be able to fail the tests below.
        let device = sim(false);
        let buffer = device.allocate(8).unwrap();
        device.copy_from(&buffer);
        device.write(&buffer);
        assert_eq!(device.violations().len(), 1);
        device.complete_through(0);
    }

    #[test]
    fn a_slot_is_reused_only_after_its_copy_completed() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 3, UNBOUNDED);
        let copies: Vec<usize> = (0..3).map(|_| transfer(&mut ring, &device, 100)).collect();
        assert_eq!(
            device.lock().waits,
            Vec::<usize>::new(),
            "free slots need no wait"
        );
        assert_eq!(device.in_flight(), 3);

        // The fourth batch goes to slot 0, after the first copy (and only it) completed.
        transfer(&mut ring, &device, 100);
        assert_eq!(device.lock().waits, vec![copies[0]]);
        assert!(!device.lock().complete[copies[1]]);
        assert!(!device.lock().complete[copies[2]]);
        assert_eq!(device.violations(), Vec::<String>::new());
    }

    #[test]
    fn a_consumer_recording_its_own_event_again_does_not_free_a_slot() {
        // The consumer's event is a separate one, recorded after the same copy; a consumer
        // that records it again after unrelated work that is already done (on another
        // stream) must not make the ring think the copy has finished.
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, UNBOUNDED);
        let copy = transfer(&mut ring, &device, 100);
        let consumer = device.new_fence().unwrap();
        device.record(&consumer).unwrap();
        assert_eq!(consumer.copy(), Some(copy));
        // The consumer records it again after work on another stream that is already done.
        let unrelated = device.queue_work();
        device.lock().complete[unrelated] = true;
        *consumer.0.lock().unwrap() = Some(unrelated);
        assert!(!device.lock().complete[copy], "the copy still runs");

        // Slot 0 again: the ring waits for the copy, not for the consumer's event.
        transfer(&mut ring, &device, 100);
        assert_eq!(device.lock().waits, vec![copy]);
        assert_eq!(device.violations(), Vec::<String>::new());
    }

    #[test]
    fn each_slot_creates_its_fence_once_and_records_it_again() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 2, UNBOUNDED);
        for _ in 0..6 {
            transfer(&mut ring, &device, 10);
        }
        let fences: Vec<Option<usize>> = ring
            .slots
            .iter()
            .map(|s| s.fence.as_ref().and_then(SimFence::copy))
            .collect();
        // The last two copies (4 and 5), one per slot: each slot's one fence, re-recorded.
        assert_eq!(fences, vec![Some(4), Some(5)]);
    }

    #[test]
    fn a_failed_record_synchronises_before_the_slot_is_used_again() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, UNBOUNDED);
        let slot = ring.acquire(100).unwrap();
        device.write(slot.buffer);
        let copy = device.copy_from(slot.buffer);
        device.lock().fail_record = true;
        assert!(ring.submit(0).is_err());
        // Settled by synchronising the stream at once: the copy is done, the slot is free.
        assert_eq!(device.lock().synchronizations, 1);
        assert!(device.lock().complete[copy]);
        device.lock().fail_record = false;
        transfer(&mut ring, &device, 100);
        assert_eq!(ring.lost_slots(), 0);
        assert_eq!(device.violations(), Vec::<String>::new());
    }

    #[test]
    fn an_upload_that_never_submitted_is_settled_on_the_next_acquire() {
        // As after a panic inside `upload`: the slot was handed out, a copy queued, and
        // `submit` never called.
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, UNBOUNDED);
        let slot = ring.acquire(100).unwrap();
        let copy = device.copy_from(slot.buffer);
        transfer(&mut ring, &device, 100);
        assert_eq!(device.lock().synchronizations, 1);
        assert!(device.lock().complete[copy]);
        assert_eq!(device.violations(), Vec::<String>::new());
    }

    #[test]
    fn a_slot_that_cannot_be_synchronised_is_leaked_and_never_reused() {
        let device = sim(false); // copies stay pending unless completed by the test
        let mut ring = Ring::new(device.clone(), 2, UNBOUNDED);
        let slot = ring.acquire(100).unwrap();
        let pending = device.copy_from(slot.buffer);
        let lost_buffer = slot.buffer.id;
        {
            let mut s = device.lock();
            s.fail_record = true;
            s.fail_synchronize = true;
        }
        assert!(ring.submit(0).is_err());
        assert_eq!(ring.lost_slots(), 1);
        {
            let mut s = device.lock();
            s.fail_record = false;
            s.fail_synchronize = false;
            s.complete_on_wait = true;
        }
        // Every later batch uses slot 1 only; slot 0's buffer is neither written nor freed.
        for _ in 0..5 {
            let slot = ring.acquire(100).unwrap();
            assert_eq!(slot.index, 1);
            assert_ne!(slot.buffer.id, lost_buffer);
            device.write(slot.buffer);
            device.copy_from(slot.buffer);
            ring.submit(1).unwrap();
        }
        drop(ring);
        assert_eq!(device.violations(), Vec::<String>::new());
        let s = device.lock();
        assert!(
            s.complete[pending],
            "completed by the later waits, in stream order"
        );
        assert_eq!(s.frees, s.allocations - 1, "the lost buffer is leaked");
    }

    #[test]
    fn a_ring_whose_slots_are_all_lost_says_so() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, UNBOUNDED);
        let slot = ring.acquire(10).unwrap();
        device.copy_from(slot.buffer);
        {
            let mut s = device.lock();
            s.fail_record = true;
            s.fail_synchronize = true;
        }
        assert!(ring.submit(0).is_err());
        let Err(err) = ring.acquire(10) else {
            panic!("a ring with no slot left handed one out")
        };
        assert_eq!(err, RingError::NoSlots);
        assert!(err.to_string().contains("lost"), "{err}");
    }

    #[test]
    fn slots_grow_only_and_free_the_old_buffer_after_its_copy() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, UNBOUNDED);
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
    fn the_ring_never_holds_more_than_its_bound() {
        let bound = 10 * GROWTH_GRAIN;
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 3, bound);
        assert!(ring.fits(bound));
        assert!(!ring.fits(bound + 1), "a batch over the bound does not fit");
        // Three slots of 4 grains would be 12: the third slot frees another first.
        for bytes in [4, 4, 4, 4, 9, 1, 10, 2, 3].map(|g| g * GROWTH_GRAIN) {
            transfer(&mut ring, &device, bytes);
            assert!(ring.capacity() <= bound, "{} > {bound}", ring.capacity());
        }
        let s = device.lock();
        assert!(s.peak_bytes <= bound, "peak {} > {bound}", s.peak_bytes);
        assert_eq!(s.violations, Vec::<String>::new());
    }

    #[test]
    fn growth_under_a_bound_is_capped_but_never_below_the_batch() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 1, 5 * GROWTH_GRAIN);
        transfer(&mut ring, &device, 4 * GROWTH_GRAIN);
        // Growth by half would be 6 grains: capped at the bound, 5.
        transfer(&mut ring, &device, 4 * GROWTH_GRAIN + 1);
        assert_eq!(ring.capacity(), 5 * GROWTH_GRAIN);
    }

    #[test]
    fn lost_slots_count_against_the_bound() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 2, 4 * GROWTH_GRAIN);
        let slot = ring.acquire(GROWTH_GRAIN).unwrap();
        device.copy_from(slot.buffer);
        {
            let mut s = device.lock();
            s.fail_record = true;
            s.fail_synchronize = true;
        }
        assert!(ring.submit(0).is_err());
        {
            let mut s = device.lock();
            s.fail_record = false;
            s.fail_synchronize = false;
        }
        assert!(ring.fits(3 * GROWTH_GRAIN));
        assert!(!ring.fits(3 * GROWTH_GRAIN + 1));
        transfer(&mut ring, &device, 3 * GROWTH_GRAIN);
        assert_eq!(ring.capacity(), 4 * GROWTH_GRAIN);
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
        let mut ring = Ring::new(device.clone(), 4, UNBOUNDED);
        let copies: Vec<usize> = (0..3).map(|_| transfer(&mut ring, &device, 64)).collect();
        drop(ring);
        let s = device.lock();
        assert_eq!(s.waits, copies);
        assert_eq!(s.frees, 3);
        assert_eq!(s.violations, Vec::<String>::new());
    }

    #[test]
    fn dropping_the_ring_leaks_a_buffer_whose_copy_cannot_be_waited_for() {
        let device = sim(false);
        let mut ring = Ring::new(device.clone(), 2, UNBOUNDED);
        let slot = ring.acquire(64).unwrap();
        let copy = device.copy_from(slot.buffer);
        ring.submit(0).unwrap();
        device.lock().fail_wait = true;
        drop(ring);
        assert!(!device.lock().complete[copy]);
        assert_eq!(device.lock().frees, 0);
        assert_eq!(device.violations(), Vec::<String>::new());
    }

    #[test]
    fn drain_waits_for_every_copy_and_leaves_buffers_for_reuse() {
        let device = sim(true);
        let mut ring = Ring::new(device.clone(), 2, UNBOUNDED);
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
    /// batches of varying sizes under a bound: no buffer is ever written or freed while a
    /// copy out of it is pending, at most `slots` copies are in flight, and the buffers never
    /// hold more than the bound.
    #[test]
    fn concurrent_device_never_sees_a_buffer_reused_in_flight() {
        const SLOTS: usize = 3;
        const BOUND: usize = 12 * GROWTH_GRAIN;
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
                        let s = device.lock();
                        max_in_flight = max_in_flight.max(s.queue.len());
                        s.queue.front().copied()
                    };
                    match next {
                        Some(copy) => {
                            // Vary the device's pace so the host sometimes runs ahead.
                            step = step.wrapping_mul(6364136223846793005).wrapping_add(1);
                            for _ in 0..(step >> 60) {
                                std::thread::yield_now();
                            }
                            device.complete_through(copy);
                        }
                        None if done.load(std::sync::atomic::Ordering::Acquire) => break,
                        None => std::thread::yield_now(),
                    }
                }
                max_in_flight
            })
        };
        let mut ring = Ring::new(device.clone(), SLOTS, BOUND);
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
        assert!(s.peak_bytes <= BOUND, "peak {} > {BOUND}", s.peak_bytes);
    }
}
