//! The child's side: run the initialiser and the factory, then stream the output to the
//! parent. Large items are serialised straight into shared-memory slots; small ones are
//! batched into frames. A writer thread does the pipe writes, so that batching adapts by
//! itself: items accumulate while a write is under way and go out as soon as it is done.

use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::error::RemotePipelineError;
use super::shm::ShmRing;
use super::wire::{self, Setup};
use crate::pipeline::GetError;
use crate::process::{decode, encode, Channel, FrameWriter, MAX_FRAME};
use crate::queue::Msg;
use crate::Pipeline;

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

pub(crate) struct PipelineSource<T> {
    pipeline: Pipeline<T>,
}

impl<T: Send + 'static> PipelineSource<T> {
    pub(crate) fn new(pipeline: Pipeline<T>) -> Self {
        Self { pipeline }
    }
}

impl<T: Serialize + Send + 'static> Source for PipelineSource<T> {
    fn step(&mut self, out: &mut Emitter) -> io::Result<Step> {
        match self.pipeline.next_msg(None) {
            Ok(Some(Msg::Item(item))) => out.item(&item).map(|()| Step::Item),
            Ok(Some(Msg::EpochEnd)) => Ok(Step::EpochEnd),
            Ok(None) | Err(GetError::Finished | GetError::Timeout) => Ok(Step::Finished),
            Err(GetError::Failed(e)) => Ok(Step::Failed(RemotePipelineError::from(&e))),
        }
    }
}

pub(crate) struct IterSource<I> {
    iter: I,
}

impl<I> IterSource<I> {
    pub(crate) fn new(iter: I) -> Self {
        Self { iter }
    }
}

impl<I: Iterator> Source for IterSource<I>
where
    I::Item: Serialize,
{
    fn step(&mut self, out: &mut Emitter) -> io::Result<Step> {
        match self.iter.next() {
            Some(item) => out.item(&item).map(|()| Step::Item),
            None => Ok(Step::Finished),
        }
    }
}

/// Writes records: large items into shared memory, everything else into the current batch,
/// which goes to the writer thread when it is full or the writer is idle.
#[doc(hidden)]
pub struct Emitter {
    batch: Vec<u8>,
    batch_bytes: usize,
    shm: Option<ShmRing>,
    shm_threshold: usize,
    next_slot: u64,
    frames: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    writer_idle: Arc<AtomicBool>,
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
    fn item<T: Serialize + ?Sized>(&mut self, item: &T) -> io::Result<()> {
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

    fn record(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
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

    fn flush(&mut self) -> io::Result<()> {
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
fn writer_loop(
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

fn send_init_failed(channel: &mut Channel, step: &str, message: &str) -> Result<(), String> {
    let payload = encode(&(step, message)).map_err(|e| e.to_string())?;
    channel
        .send_parts(&[&[wire::INIT_FAILED], &payload])
        .map_err(|e| e.to_string())
}

/// The worker entry point of every subprocess pipeline or iterator.
fn run(args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    let setup: Setup = decode(&args).map_err(|e| e.to_string())?;
    if let Some((name, args)) = &setup.initializer {
        if let Err(message) = super::registry::init(name, args) {
            return send_init_failed(&mut channel, "initializer", &message);
        }
    }
    let shm = match &setup.shm {
        Some(spec) => match ShmRing::open(spec) {
            Ok(ring) => Some(ring),
            Err(e) => {
                let message = format!("cannot map the shared memory: {e}");
                return send_init_failed(&mut channel, "transport", &message);
            }
        },
        None => None,
    };
    let mut source = match super::registry::start(&setup.factory, &setup.factory_args) {
        Ok(source) => source,
        Err(message) => return send_init_failed(&mut channel, "factory", &message),
    };
    channel.send(&[wire::READY]).map_err(|e| e.to_string())?;

    let (mut reader, writer) = channel.split();
    // The parent never sends anything after the setup: the end of its stream means it
    // dropped its handle or exited, and the output has no reader any more.
    spawn_named("subprocess-watchdog", move || {
        while let Ok(Some(_)) = reader.recv() {}
        std::process::exit(0);
    })?;
    let (frames_tx, frames_rx) = sync_channel(4);
    let (spare_tx, spare_rx) = sync_channel(4);
    let writer_idle = Arc::new(AtomicBool::new(true));
    let idle = writer_idle.clone();
    let writer_thread = spawn_named("subprocess-writer", move || {
        writer_loop(writer, frames_rx, spare_tx, idle)
    })?;
    let mut out = Emitter {
        batch: Vec::with_capacity(setup.batch_bytes + 64),
        batch_bytes: setup.batch_bytes,
        shm,
        shm_threshold: setup.shm_threshold,
        next_slot: 0,
        frames: frames_tx,
        spare: spare_rx,
        writer_idle,
    };
    let result = catch_unwind(AssertUnwindSafe(|| produce(&mut *source, &mut out)));
    // Whatever was produced reaches the parent, even before a panic is reported.
    let _ = out.flush();
    let Emitter { frames, .. } = out;
    drop(frames);
    let _ = writer_thread.join();
    match result {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => resume_unwind(panic),
    }
}

fn produce(source: &mut dyn Source, out: &mut Emitter) -> io::Result<()> {
    loop {
        match source.step(out)? {
            Step::Item => {}
            Step::EpochEnd => out.record(wire::EPOCH_END, &[])?,
            Step::Finished => return out.record(wire::FINISHED, &[]),
            Step::Failed(e) => return out.record(wire::FAILED, &encode(&e)?),
        }
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
}

crate::register_worker_entry!(wire::ENTRY, run);
