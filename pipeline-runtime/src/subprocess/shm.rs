//! A ring of fixed-size shared-memory slots: the child serialises a large item straight into
//! a free slot and sends only the slot's number through the pipe; the parent decodes the item
//! from the slot and releases it.
//!
//! On Linux the ring is a `memfd`: an anonymous file that has no name anywhere, which the
//! child inherits as a descriptor (`SpawnOptions::inherit_fd`) and maps; it goes away with
//! the last process that maps it, however the two processes end, so it is never left
//! behind. Elsewhere (or where `memfd_create` is refused) the parent creates a file in
//! `/dev/shm` and the child maps it by path and unlinks it at once, before it runs any user
//! code (the parent unlinks it too, when the child answered and when the ring is dropped):
//! only a parent killed in the milliseconds between creating the file and the child's
//! start leaves one behind.
//!
//! Each slot has a state word (free or full) in a header page. Slots are used in ring order,
//! which is also the order the parent reads them in. The producer waits on a full slot with a
//! futex (shared between processes), so a slot is never overwritten before it is released.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FREE: u32 = 0;
const FULL: u32 = 1;
/// Slot data starts 64-byte aligned, after a header of one cache line per slot state.
const ALIGN: usize = 64;

/// The description of a ring that the child needs to map it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShmSpec {
    /// The file to open, for a ring in a named file.
    pub(crate) path: Option<PathBuf>,
    /// The descriptor the child inherits, for a `memfd` ring.
    pub(crate) fd: Option<i32>,
    pub(crate) slots: u32,
    pub(crate) slot_size: usize,
}

/// One mapping of a slot ring (the parent's or the child's).
#[derive(Debug)]
pub(crate) struct ShmRing {
    base: NonNull<u8>,
    len: usize,
    slots: u32,
    slot_size: usize,
    /// Set on the creating side until the file is unlinked.
    owned_path: Option<PathBuf>,
    /// The creating side's `memfd`, open until the child has mapped it.
    memfd: Option<File>,
}

// SAFETY: the mapping is plain shared memory; every access to slot states goes through
// atomics, and slot data is only touched by the side that owns the slot in its current state.
unsafe impl Send for ShmRing {}

fn header_len(slots: u32) -> usize {
    // One cache line per slot state, plus one for the count of waiting producers.
    (slots as usize + 1) * ALIGN
}

fn slot_stride(slot_size: usize) -> usize {
    slot_size.div_ceil(ALIGN) * ALIGN
}

impl ShmRing {
    /// Creates a ring of `slots` slots of `slot_size` bytes: a `memfd` on Linux, else a new
    /// file under `/dev/shm` (the system's temporary directory where there is none).
    pub(crate) fn create(slots: u32, slot_size: usize) -> io::Result<Self> {
        if slots == 0 || slot_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared-memory ring needs at least one slot of at least one byte",
            ));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: memfd_create with a NUL-terminated name.
            let fd =
                unsafe { libc::memfd_create(c"pipeline-runtime-ring".as_ptr(), libc::MFD_CLOEXEC) };
            if fd >= 0 {
                use std::os::fd::FromRawFd;
                // SAFETY: a fresh descriptor, owned by the File and by nothing else.
                let file = unsafe { File::from_raw_fd(fd) };
                let len = Self::len_of(slots, slot_size);
                file.set_len(len as u64)?;
                let mut ring = Self::map(&file, len, slots, slot_size)?;
                ring.memfd = Some(file);
                return Ok(ring);
            }
        }
        Self::create_file(slots, slot_size)
    }

    fn len_of(slots: u32, slot_size: usize) -> usize {
        header_len(slots) + slots as usize * slot_stride(slot_size)
    }

    /// [`create`](Self::create) in a named file.
    fn create_file(slots: u32, slot_size: usize) -> io::Result<Self> {
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let len = Self::len_of(slots, slot_size);
        let mut attempt = 0;
        let (file, path) = loop {
            let nonce = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "pipeline-runtime-{}-{nonce}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
                    ^ (attempt * 7919)
            ));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let ring = file
            .set_len(len as u64)
            .and_then(|()| Self::map(&file, len, slots, slot_size));
        match ring {
            Ok(mut ring) => {
                ring.owned_path = Some(path);
                Ok(ring)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Maps an existing ring (the child's side). A named file is unlinked at once, so that
    /// it is gone before the child runs any user code; an inherited `memfd` descriptor is
    /// left open (the child closes it with [`ShmSpec::close_inherited`]).
    pub(crate) fn open(spec: &ShmSpec) -> io::Result<Self> {
        let file = match (&spec.fd, &spec.path) {
            (Some(fd), _) => {
                use std::os::fd::BorrowedFd;
                // SAFETY: the descriptor was inherited for this ring and is open; it is only
                // borrowed here, to make an owned copy.
                unsafe { BorrowedFd::borrow_raw(*fd) }
                    .try_clone_to_owned()
                    .map(File::from)?
            }
            (None, Some(path)) => {
                let file = OpenOptions::new().read(true).write(true).open(path)?;
                let _ = std::fs::remove_file(path);
                file
            }
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a shared-memory ring with neither a file nor a descriptor",
                ))
            }
        };
        let len = Self::len_of(spec.slots, spec.slot_size);
        if file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the shared-memory file is too short",
            ));
        }
        Self::map(&file, len, spec.slots, spec.slot_size)
    }

    fn map(file: &File, len: usize, slots: u32, slot_size: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).expect("mmap never returns null on success"),
            len,
            slots,
            slot_size,
            owned_path: None,
            memfd: None,
        })
    }

    /// What the other side needs to map this ring (`None` once [`unlink`](Self::unlink)ed).
    pub(crate) fn spec(&self) -> Option<ShmSpec> {
        if self.owned_path.is_none() && self.memfd.is_none() {
            return None;
        }
        Some(ShmSpec {
            path: self.owned_path.clone(),
            fd: self.memfd.as_ref().map(AsRawFd::as_raw_fd),
            slots: self.slots,
            slot_size: self.slot_size,
        })
    }

    /// The `memfd` the child must inherit, if the ring is one.
    pub(crate) fn inherited_fd(&self) -> Option<i32> {
        self.memfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Removes the backing file, or closes this side's `memfd`; the mappings stay valid.
    /// Called once the child has mapped it.
    pub(crate) fn unlink(&mut self) {
        self.memfd = None;
        if let Some(path) = self.owned_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn state(&self, slot: u32) -> &AtomicU32 {
        assert!(slot < self.slots, "slot {slot} out of range");
        // SAFETY: inside the header, aligned to 64 bytes, and only ever accessed atomically.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(slot as usize * ALIGN)
                .cast::<AtomicU32>()
        }
    }

    fn waiters(&self) -> &AtomicU32 {
        // SAFETY: the header's last cache line, only ever accessed atomically.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.slots as usize * ALIGN)
                .cast::<AtomicU32>()
        }
    }

    fn data(&self, slot: u32) -> *mut u8 {
        let offset = header_len(self.slots) + slot as usize * slot_stride(self.slot_size);
        debug_assert!(offset + self.slot_size <= self.len);
        // SAFETY: within the mapping (checked above for every slot < slots).
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// The slot that the `seq`-th large item uses.
    pub(crate) fn slot_of(&self, seq: u64) -> u32 {
        (seq % u64::from(self.slots)) as u32
    }

    /// Whether `slot` is free for the producer now.
    pub(crate) fn is_free(&self, slot: u32) -> bool {
        self.state(slot).load(Ordering::Acquire) == FREE
    }

    /// Waits until `slot` is free, at most `timeout`; returns whether it is. The producer's
    /// side.
    pub(crate) fn wait_free(&self, slot: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let state = self.state(slot);
        loop {
            if state.load(Ordering::Acquire) == FREE {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.waiters().fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing the wait: a release in between either sees the
            // announcement (and wakes us) or happened before this load.
            if state.load(Ordering::SeqCst) == FULL {
                futex_wait(state, FULL, left);
            }
            self.waiters().fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The writable bytes of a free slot. The producer's side.
    ///
    /// # Safety
    /// `slot` must be free (see [`wait_free`](Self::wait_free)) and not be borrowed elsewhere.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slot_mut(&self, slot: u32) -> &mut [u8] {
        debug_assert!(self.is_free(slot));
        // SAFETY: the slot is free, so the consumer does not read it (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.data(slot), self.slot_size) }
    }

    /// Hands a written slot to the consumer.
    pub(crate) fn publish(&self, slot: u32) {
        self.state(slot).store(FULL, Ordering::Release);
    }

    /// The first `len` bytes of a published slot. The consumer's side.
    pub(crate) fn read(&self, slot: u32, len: usize) -> io::Result<&[u8]> {
        if slot >= self.slots || len > self.slot_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad slot reference ({slot}, {len} bytes)"),
            ));
        }
        if self.state(slot).load(Ordering::Acquire) != FULL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("slot {slot} was referenced but not published"),
            ));
        }
        // SAFETY: a published slot is not written until the consumer releases it.
        Ok(unsafe { std::slice::from_raw_parts(self.data(slot), len) })
    }

    /// Gives a slot back to the producer once its item has been decoded.
    pub(crate) fn release(&self, slot: u32) {
        self.state(slot).store(FREE, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            futex_wake(self.state(slot));
        }
    }
}

impl ShmSpec {
    /// Closes the descriptor the child inherited, once it has mapped the ring, so that
    /// programs the child starts do not inherit it too.
    pub(crate) fn close_inherited(&self) {
        if let Some(fd) = self.fd {
            // SAFETY: the inherited descriptor is owned by nothing else in the child.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for ShmRing {
    fn drop(&mut self) {
        self.unlink();
        // SAFETY: unmapping our own mapping; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout` (a shared, not private, futex).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a valid aligned u32 in a shared mapping, with a valid timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid aligned u32 in a shared mapping.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(slots: u32, size: usize) -> (ShmRing, ShmRing) {
        let parent = ShmRing::create(slots, size).unwrap();
        let child = ShmRing::open(&parent.spec().unwrap()).unwrap();
        (parent, child)
    }

    fn write(ring: &ShmRing, slot: u32, bytes: &[u8]) {
        assert!(ring.wait_free(slot, Duration::ZERO));
        // SAFETY: the slot is free and borrowed nowhere else.
        unsafe { ring.slot_mut(slot)[..bytes.len()].copy_from_slice(bytes) };
        ring.publish(slot);
    }

    #[test]
    fn an_item_written_by_one_mapping_is_read_by_the_other() {
        let (parent, child) = pair(4, 100);
        write(&child, 2, b"hello");
        assert_eq!(parent.read(2, 5).unwrap(), b"hello");
        parent.release(2);
        assert!(child.is_free(2));
    }

    #[test]
    fn slots_are_used_in_ring_order_and_wrap() {
        let (parent, child) = pair(3, 16);
        let used: Vec<u32> = (0..7).map(|seq| child.slot_of(seq)).collect();
        assert_eq!(used, [0, 1, 2, 0, 1, 2, 0]);
        for seq in 0..7u64 {
            let slot = child.slot_of(seq);
            write(&child, slot, &seq.to_le_bytes());
            let got = parent.read(slot, 8).unwrap();
            assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), seq);
            parent.release(slot);
        }
    }

    #[test]
    fn a_slot_is_not_reused_before_it_is_released() {
        let (parent, child) = pair(2, 16);
        write(&child, 0, b"first");
        write(&child, 1, b"second");
        // The ring is full: the producer may not take slot 0 again yet.
        assert!(!child.wait_free(child.slot_of(2), Duration::from_millis(20)));
        assert!(parent.read(1, 6).is_ok());
        parent.release(1);
        assert!(
            !child.wait_free(0, Duration::ZERO),
            "slot 0 is still in use"
        );
        assert_eq!(parent.read(0, 5).unwrap(), b"first");
        parent.release(0);
        assert!(child.wait_free(0, Duration::ZERO));
    }

    #[test]
    fn a_waiting_producer_wakes_when_the_slot_is_released() {
        let (parent, child) = pair(1, 8);
        write(&child, 0, b"x");
        let waiter = std::thread::spawn(move || child.wait_free(0, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        parent.release(0);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn reading_an_unpublished_or_out_of_range_slot_is_an_error() {
        let (parent, _child) = pair(2, 8);
        assert!(parent.read(0, 1).is_err());
        assert!(parent.read(5, 1).is_err());
        assert!(parent.read(0, 9).is_err());
    }

    #[test]
    fn the_file_is_removed_on_unlink_on_drop_and_when_the_other_side_maps_it() {
        let mut ring = ShmRing::create_file(1, 8).unwrap();
        let path = ring.spec().unwrap().path.unwrap();
        assert!(path.exists());
        ring.unlink();
        assert!(!path.exists());
        let ring = ShmRing::create_file(1, 8).unwrap();
        let path = ring.spec().unwrap().path.unwrap();
        drop(ring);
        assert!(!path.exists());
        let ring = ShmRing::create_file(1, 8).unwrap();
        let spec = ring.spec().unwrap();
        let _child = ShmRing::open(&spec).unwrap();
        assert!(!spec.path.unwrap().exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_the_ring_is_a_memfd_with_no_name() {
        let ring = ShmRing::create(1, 8).unwrap();
        let spec = ring.spec().unwrap();
        assert!(spec.path.is_none() && spec.fd.is_some());
        let (parent, child) = pair(2, 8);
        write(&child, 1, b"x");
        assert_eq!(parent.read(1, 1).unwrap(), b"x");
    }
}
