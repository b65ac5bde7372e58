//! The child's output: a [`Source`] of items with their type erased, and the [`Emitter`]
//! that writes them to the parent. Large items are serialised straight into shared-memory
//! slots; small ones are batched into frames. A writer thread does the pipe writes, so that
//! batching adapts by itself: items accumulate while a write is under way and go out as soon
//! as it is done.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::error::RemotePipelineError;
use super::shm::ShmRing;
use super::wire;
use crate::process::channel::FrameWriter;
use crate::process::protocol::MAX_FRAME;

/// What a source did in one step.
#[doc(hidden)]
#[derive(Debug)]
pub enum Step {
    /// It emitted one item.
    Item,
    /// An epoch of a continuous pipeline ended.
    EpochEnd,
    /// The output is complete.
    Finished,
    /// The pipeline failed.
    Failed(RemotePipelineError),
}

/// The output of a subprocess, with its item type erased.
#[doc(hidden)]
pub trait Source {
    /// Produces the next item into `out`, or says why there is none.
    fn step(&mut self, out: &mut Emitter) -> io::Result<Step>;
}

/// Writes records: large items into shared memory, everything else into the current batch,
/// which goes to the writer thread when it is full or the writer is idle.
#[doc(hidden)]
pub struct Emitter {
    pub(super) batch: Vec<u8>,
    pub(super) batch_bytes: usize,
    pub(super) shm: Option<ShmRing>,
    pub(super) shm_threshold: usize,
    pub(super) next_slot: u64,
    pub(super) frames: SyncSender<Vec<u8>>,
    pub(super) spare: Receiver<Vec<u8>>,
    pub(super) writer_idle: Arc<AtomicBool>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the parent stopped reading")
}

impl Emitter {
    /// Appends one item.
    pub(crate) fn item<T: Serialize + ?Sized>(&mut self, item: &T) -> io::Result<()> {
        if let Some(shm) = &self.shm {
            let size =
                postcard::serialize_with_flavor(item, postcard::ser_flavors::Size::default())
                    .map_err(io::Error::other)?;
            if size >= self.shm_threshold && size <= shm.slot_size() {
                return self.shm_item(item);
            }
        }
        self.batch.push(wire::ITEM);
        postcard::to_io(item, &mut self.batch).map_err(io::Error::other)?;
        if self.batch.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an item of about {} bytes is too large to send (the limit is {MAX_FRAME})",
                    self.batch.len()
                ),
            ));
        }
        self.maybe_flush()
    }

    fn shm_item<T: Serialize + ?Sized>(&mut self, item: &T) -> io::Result<()> {
        let slot = {
            let shm = self.shm.as_ref().expect("checked by the caller");
            shm.slot_of(self.next_slot)
        };
        if !self.shm.as_ref().expect("checked").is_free(slot) {
            // The parent frees slots as it reads their references: send ours first.
            self.flush()?;
            let shm = self.shm.as_ref().expect("checked");
            while !shm.wait_free(slot, Duration::from_millis(100)) {}
        }
        let shm = self.shm.as_ref().expect("checked");
        // SAFETY: the slot is free (waited for above) and only this emitter writes slots.
        let buf = unsafe { shm.slot_mut(slot) };
        let len = postcard::to_slice(item, buf)
            .map_err(io::Error::other)?
            .len();
        shm.publish(slot);
        self.next_slot += 1;
        self.batch.push(wire::SHM_ITEM);
        self.batch.extend_from_slice(&slot.to_le_bytes());
        self.batch.extend_from_slice(&(len as u32).to_le_bytes());
        self.maybe_flush()
    }

    pub(super) fn record(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.batch.push(tag);
        self.batch.extend_from_slice(payload);
        self.flush()
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.batch.len() >= self.batch_bytes || self.writer_idle.load(Ordering::Acquire) {
            self.flush()
        } else {
            Ok(())
        }
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_bytes + 64));
        let frame = std::mem::replace(&mut self.batch, next);
        self.writer_idle.store(false, Ordering::Release);
        self.frames.send(frame).map_err(|_| broken_pipe())
    }
}

/// Sends frames to the parent; hands emptied buffers back for reuse.
pub(super) fn writer_loop(
    mut writer: FrameWriter,
    frames: Receiver<Vec<u8>>,
    spare: SyncSender<Vec<u8>>,
    idle: Arc<AtomicBool>,
) {
    loop {
        let frame = match frames.try_recv() {
            Ok(frame) => frame,
            Err(_) => {
                idle.store(true, Ordering::Release);
                match frames.recv() {
                    Ok(frame) => frame,
                    Err(_) => return,
                }
            }
        };
        if writer.send(&frame).is_err() {
            // The parent is gone or dropped its handle: nobody reads our output any more.
            std::process::exit(0);
        }
        let mut frame = frame;
        frame.clear();
        let _ = spare.try_send(frame);
    }
}
