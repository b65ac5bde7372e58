//! The parent's side: start the child, then read its output, one record at a time, from
//! the pipe or from shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{RemotePipelineError, SubprocessError};
use super::shm::ShmRing;
use super::wire::{self, Setup};
use crate::failure::BuildError;
use crate::process::channel::{decode, encode, FrameReader, FrameWriter};
use crate::process::child::{ChildKiller, ChildProcess, ProcessError, SpawnOptions};
use crate::process::registry::{self, fn_type_name, Kind};
use crate::Pipeline;

/// Items whose encoding is at least this many bytes go through shared memory by default
/// (measured: below about 4 KiB the pipe is faster, from 8 KiB on shared memory is).
pub const DEFAULT_SHM_THRESHOLD: usize = 8 * 1024;
/// Shared-memory slots by default: how many large items the child may be ahead by.
pub const DEFAULT_BUFFER_SIZE: usize = 8;
/// Size of one shared-memory slot by default: the largest item that goes through it.
pub const DEFAULT_SLOT_SIZE: usize = 4 << 20;
/// Small items are batched into frames of about this size.
const BATCH_BYTES: usize = 32 * 1024;

/// How to run a subprocess; see [`run_pipeline_in_subprocess`].
#[derive(Debug, Clone)]
pub struct SubprocessOptions {
    buffer_size: usize,
    slot_size: usize,
    shm_threshold: Option<usize>,
    timeout: Option<Duration>,
    initializer: Option<(String, Vec<u8>)>,
    spawn: SpawnOptions,
}

impl Default for SubprocessOptions {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            slot_size: DEFAULT_SLOT_SIZE,
            shm_threshold: Some(DEFAULT_SHM_THRESHOLD),
            timeout: None,
            initializer: None,
            spawn: SpawnOptions::new().name("subprocess"),
        }
    }
}

impl SubprocessOptions {
    /// Defaults: [`DEFAULT_BUFFER_SIZE`] slots of [`DEFAULT_SLOT_SIZE`] bytes, items of
    /// [`DEFAULT_SHM_THRESHOLD`] bytes or more through shared memory, no timeout, no
    /// initialiser.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many large items the child may produce ahead of the parent's reading (the number
    /// of shared-memory slots; at least 1). Small items are bounded by the pipe's buffer
    /// (64 KiB on Linux) instead.
    pub fn buffer_size(mut self, n: usize) -> Self {
        self.buffer_size = n.max(1);
        self
    }

    /// The size of one shared-memory slot: an item whose encoding is larger goes through
    /// the pipe instead.
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = bytes.max(1);
        self
    }

    /// Items whose encoding is at least `bytes` long cross through shared memory; smaller
    /// ones are batched into the pipe. `None` sends everything through the pipe.
    pub fn shm_threshold(mut self, bytes: Option<usize>) -> Self {
        self.shm_threshold = bytes;
        self
    }

    /// The longest the child may go without producing an item while the parent waits for
    /// one; past it the child is killed and iteration ends with
    /// [`SubprocessError::Timeout`]. No limit by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A function the child runs before building its pipeline or iterator, with `args`. It
    /// must be registered with [`subprocess_fn!`](crate::subprocess_fn)`(init f)`; if it
    /// fails, the call that starts the subprocess returns [`SubprocessError::Init`].
    ///
    /// # Panics
    /// If `args` cannot be encoded (a `Serialize` impl that fails).
    pub fn initializer<A, E, F>(mut self, f: F, args: A) -> Self
    where
        A: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Result<(), E>,
    {
        let args = encode(&args).expect("the initializer's arguments must be serializable");
        self.initializer = Some((fn_type_name(&f).to_owned(), args));
        self
    }

    /// Caps the child's address space (`RLIMIT_AS`, bytes); the shared-memory slots count
    /// towards it.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.spawn = self.spawn.memory_limit(bytes);
        self
    }

    /// A name for the child's log lines and errors (default `subprocess`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spawn = self.spawn.name(name);
        self
    }
}

/// Runs in a child process the pipeline that `f(args)` builds, and returns a handle to read
/// its output from here.
///
/// `f` is a named function registered with
/// [`subprocess_fn!`](crate::subprocess_fn)`(pipeline f)`; `args` and the items cross the
/// process boundary with serde. The child is this program's executable run again, so `main`
/// must call [`process::init()`](crate::process::init) first. The call returns once the
/// child has built its pipeline: a failed initialiser or build is an error here.
///
/// ```no_run
/// use pipeline_runtime::subprocess::{run_pipeline_in_subprocess, SubprocessOptions};
/// use pipeline_runtime::error::BuildError;
/// use pipeline_runtime::{Pipeline, PipelineBuilder};
///
/// fn squares(n: u64) -> Result<Pipeline<u64>, BuildError> {
///     PipelineBuilder::new().source(0..n).pipe(|x| x * x).sink().buffer(8).build()
/// }
/// pipeline_runtime::subprocess_fn!(pipeline squares);
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     pipeline_runtime::process::init();
///     let squares = run_pipeline_in_subprocess(squares, 10, SubprocessOptions::new())?;
///     let total: u64 = squares.into_iter().sum::<Result<u64, _>>()?;
///     assert_eq!(total, 285);
///     Ok(())
/// }
/// ```
pub fn run_pipeline_in_subprocess<A, T, F>(
    f: F,
    args: A,
    opts: SubprocessOptions,
) -> Result<Subprocess<T>, SubprocessError>
where
    A: Serialize,
    T: DeserializeOwned,
    F: Fn(A) -> Result<Pipeline<T>, BuildError>,
{
    Subprocess::start(fn_type_name(&f), Kind::Pipeline, &args, opts)
}

/// Runs in a child process the iterator that `f(args)` returns, and returns a handle to
/// read its items from here; like [`run_pipeline_in_subprocess`] otherwise. `f` is
/// registered with [`subprocess_fn!`](crate::subprocess_fn)`(iter f)`.
pub fn iterate_in_subprocess<A, I, F>(
    f: F,
    args: A,
    opts: SubprocessOptions,
) -> Result<Subprocess<I::Item>, SubprocessError>
where
    A: Serialize,
    I: IntoIterator,
    I::Item: DeserializeOwned,
    F: Fn(A) -> I,
{
    Subprocess::start(fn_type_name(&f), Kind::Iter, &args, opts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading output.
    Open,
    /// An epoch just ended; the next iteration goes on with the next one.
    EpochEnded,
    /// Every item was read.
    Finished,
    /// An error was reported; the child is gone.
    Dead,
}

/// A pipeline or iterator running in a child process.
///
/// [`iter`](Self::iter) reads its output up to the end (or to the end of the current epoch
/// of a continuous pipeline). Breaking out of that loop keeps the child: the next `iter()`
/// goes on with the next item, and nothing is lost. [`into_iter`](IntoIterator::into_iter)
/// reads everything, across epochs, and [`into_stream`](Self::into_stream) does the same
/// as a [`Stream`]. Dropping the handle kills the child.
pub struct Subprocess<T> {
    child: ChildProcess,
    reader: FrameReader,
    /// Held only to keep the child's input open: its end tells the child to exit.
    _writer: FrameWriter,
    shm: Option<ShmRing>,
    timeout: Option<Duration>,
    frame: Vec<u8>,
    pos: usize,
    state: State,
    _items: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Subprocess<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subprocess")
            .field("child", &self.child)
            .field("state", &self.state)
            .finish()
    }
}

impl<T: DeserializeOwned> Subprocess<T> {
    fn start<A: Serialize>(
        factory: &str,
        kind: Kind,
        args: &A,
        opts: SubprocessOptions,
    ) -> Result<Self, SubprocessError> {
        let spawn_error = |m: String| SubprocessError::Spawn(ProcessError::new(m));
        registry::check(factory, kind).map_err(spawn_error)?;
        if let Some((name, _)) = &opts.initializer {
            registry::check(name, Kind::Init).map_err(spawn_error)?;
        }
        let shm = match opts.shm_threshold {
            Some(_) => Some(
                ShmRing::create(opts.buffer_size as u32, opts.slot_size).map_err(|e| {
                    spawn_error(format!("cannot create the shared-memory buffer: {e}"))
                })?,
            ),
            None => None,
        };
        let setup = Setup {
            factory: factory.to_owned(),
            factory_args: encode(args).map_err(SubprocessError::Io)?,
            initializer: opts.initializer.clone(),
            shm: shm.as_ref().and_then(ShmRing::spec),
            shm_threshold: opts.shm_threshold.unwrap_or(usize::MAX),
            batch_bytes: BATCH_BYTES,
        };
        let setup = encode(&setup).map_err(SubprocessError::Io)?;
        let mut spawn = opts.spawn.clone();
        if let Some(fd) = shm.as_ref().and_then(ShmRing::inherited_fd) {
            spawn = spawn.inherit_fd(fd);
        }
        let (child, channel) =
            ChildProcess::spawn(wire::ENTRY, &setup, &spawn).map_err(SubprocessError::Spawn)?;
        let (reader, writer) = channel.split();
        let mut this = Self {
            child,
            reader,
            _writer: writer,
            shm,
            timeout: opts.timeout,
            frame: Vec::new(),
            pos: 0,
            state: State::Open,
            _items: PhantomData,
        };
        // The inactivity limit is for the output: building the pipeline may take longer.
        this.timeout = None;
        let first = this.read_frame();
        this.timeout = opts.timeout;
        first?;
        // The child has mapped the buffer (or given up): the file is no longer needed.
        if let Some(shm) = &mut this.shm {
            shm.unlink();
        }
        match this.frame.first() {
            Some(&wire::READY) if this.frame.len() == 1 => {
                this.pos = 1;
                Ok(this)
            }
            Some(&wire::INIT_FAILED) => {
                let (step, message): (String, String) = decode(&this.frame[1..])?;
                let step = match step.as_str() {
                    "initializer" => "initializer",
                    "factory" => "factory",
                    _ => "transport",
                };
                Err(SubprocessError::Init { step, message })
            }
            _ => Err(SubprocessError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the subprocess sent an unexpected first message",
            ))),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Reads the output up to its end, or to the end of the current epoch of a continuous
    /// pipeline. Dropping the iterator early keeps the child and the unread items.
    pub fn iter(&mut self) -> Iter<'_, T> {
        if self.state == State::EpochEnded {
            self.state = State::Open;
        }
        Iter {
            sub: self,
            done: false,
        }
    }

    /// The output as an async [`Stream`], across epochs. A thread of its own waits for
    /// the child, so that polling never blocks; dropping the stream kills the child.
    pub fn into_stream(self) -> SubprocessStream<T>
    where
        T: Send + 'static,
    {
        let killer = self.child.killer();
        let (tx, rx) = async_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("subprocess-stream".to_owned())
            .spawn(move || {
                for item in self {
                    if tx.send_blocking(item).is_err() {
                        return;
                    }
                }
            });
        let rx = match thread {
            Ok(_) => rx,
            Err(e) => {
                let (tx, rx) = async_channel::bounded(1);
                let _ = tx.try_send(Err(SubprocessError::Io(e)));
                rx
            }
        };
        SubprocessStream {
            rx: Box::pin(rx),
            killer,
        }
    }

    /// Reads the next frame into `self.frame`, or says why there is none.
    fn read_frame(&mut self) -> Result<(), SubprocessError> {
        if let Some(timeout) = self.timeout {
            if !self.reader.wait_readable(timeout) {
                self.child.kill();
                return Err(SubprocessError::Timeout(timeout));
            }
        }
        match self.reader.recv() {
            Ok(Some(frame)) => {
                self.frame = frame;
                self.pos = 0;
                Ok(())
            }
            // The child closed its output: it ended (or is about to). Say how.
            Ok(None) | Err(_) => {
                let report = self.child.finish(Duration::from_secs(2)).clone();
                Err(SubprocessError::ChildEnded(report))
            }
        }
    }

    /// The next record: `Ok(Some(item))`, `Ok(None)` at an epoch end or the end.
    fn next_record(&mut self) -> Result<Option<T>, SubprocessError> {
        loop {
            match self.state {
                State::Open => {}
                State::EpochEnded | State::Finished => return Ok(None),
                State::Dead => return Err(SubprocessError::Ended),
            }
            if self.pos >= self.frame.len() {
                self.read_frame()?;
                continue;
            }
            let (record, taken) = decode_record::<T>(&self.frame[self.pos..])?;
            self.pos += taken;
            match record {
                Record::Item(item) => return Ok(Some(item)),
                Record::Shm { slot, len } => {
                    let shm = self
                        .shm
                        .as_ref()
                        .ok_or_else(|| bad_data("a slot reference without shared memory".into()))?;
                    let item = decode::<T>(shm.read(slot, len)?);
                    shm.release(slot);
                    return Ok(Some(item?));
                }
                Record::EpochEnd => self.state = State::EpochEnded,
                Record::Finished => self.state = State::Finished,
                Record::Failed(error) => {
                    self.state = State::Dead;
                    return Err(SubprocessError::Pipeline(error));
                }
            }
        }
    }

    fn next_item(&mut self) -> Option<Result<T, SubprocessError>> {
        let was_dead = self.state == State::Dead;
        match self.next_record() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            // An error is reported once; the next iteration says the child is gone.
            Err(SubprocessError::Ended) if !was_dead => None,
            Err(e) => {
                self.state = State::Dead;
                self.child.kill();
                Some(Err(e))
            }
        }
    }
}

/// One record of a frame from the child.
#[derive(Debug)]
enum Record<T> {
    Item(T),
    /// An item in a shared-memory slot (checked against the ring when it is read).
    Shm {
        slot: u32,
        len: usize,
    },
    EpochEnd,
    Finished,
    Failed(RemotePipelineError),
}

/// Decodes the record at the front of `frame` (not empty): the record and how many bytes it
/// took. The frame comes from the child, so any bytes are an error or a record, never a panic.
fn decode_record<T: DeserializeOwned>(frame: &[u8]) -> Result<(Record<T>, usize), SubprocessError> {
    let Some((&tag, body)) = frame.split_first() else {
        return Err(bad_data("an empty record".to_owned()));
    };
    match tag {
        wire::ITEM => {
            let (item, rest) = postcard::take_from_bytes::<T>(body)
                .map_err(|e| bad_data(format!("cannot decode an item: {e}")))?;
            Ok((Record::Item(item), frame.len() - rest.len()))
        }
        wire::SHM_ITEM => match body {
            [s0, s1, s2, s3, l0, l1, l2, l3, ..] => Ok((
                Record::Shm {
                    slot: u32::from_le_bytes([*s0, *s1, *s2, *s3]),
                    len: u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize,
                },
                9,
            )),
            _ => Err(bad_data("truncated slot reference".to_owned())),
        },
        wire::EPOCH_END => Ok((Record::EpochEnd, 1)),
        wire::FINISHED => Ok((Record::Finished, 1)),
        wire::FAILED => Ok((Record::Failed(decode(body)?), frame.len())),
        other => Err(bad_data(format!("unknown record tag {other}"))),
    }
}

fn bad_data(message: String) -> SubprocessError {
    SubprocessError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message,
    ))
}

impl From<std::io::Error> for SubprocessError {
    fn from(e: std::io::Error) -> Self {
        SubprocessError::Io(e)
    }
}

/// One pass over a [`Subprocess`]'s output; see [`Subprocess::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    sub: &'a mut Subprocess<T>,
    done: bool,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T, SubprocessError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.sub.next_item();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

/// Every item of a [`Subprocess`], across epochs; see [`IntoIterator`] for `Subprocess`.
#[derive(Debug)]
pub struct IntoIter<T> {
    sub: Subprocess<T>,
    done: bool,
}

impl<T: DeserializeOwned> Iterator for IntoIter<T> {
    type Item = Result<T, SubprocessError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            match self.sub.next_item() {
                Some(Ok(item)) => return Some(Ok(item)),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None if self.sub.state == State::EpochEnded => self.sub.state = State::Open,
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl<T: DeserializeOwned> IntoIterator for Subprocess<T> {
    type Item = Result<T, SubprocessError>;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter {
            sub: self,
            done: false,
        }
    }
}

impl<'a, T: DeserializeOwned> IntoIterator for &'a mut Subprocess<T> {
    type Item = Result<T, SubprocessError>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// A [`Subprocess`]'s output as a [`Stream`]; see [`Subprocess::into_stream`].
#[derive(Debug)]
pub struct SubprocessStream<T> {
    rx: Pin<Box<async_channel::Receiver<Result<T, SubprocessError>>>>,
    /// Unblocks the reading thread (it may be waiting for an idle child) when dropped.
    killer: ChildKiller,
}

impl<T> Drop for SubprocessStream<T> {
    fn drop(&mut self) {
        self.killer.kill();
    }
}

impl<T> Stream for SubprocessStream<T> {
    type Item = Result<T, SubprocessError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::{bounded, config};

    type Item = (u64, String, Vec<u8>, Option<Vec<(i32, f32)>>);

    /// Decodes records from `frame` until it is used up or an error: each record takes at
    /// least one byte and no more than is left, and decoding allocates a small multiple of
    /// the frame whatever lengths its items claim.
    fn decode_all<T: DeserializeOwned>(frame: &[u8]) {
        bounded("decode_record", 16 * frame.len() as u64 + (1 << 20), || {
            let mut pos = 0;
            while pos < frame.len() {
                match decode_record::<T>(&frame[pos..]) {
                    Ok((_, taken)) => {
                        assert!(taken >= 1 && pos + taken <= frame.len());
                        pos += taken;
                    }
                    Err(_) => break,
                }
            }
        });
    }

    fn item() -> impl Strategy<Value = Item> {
        (
            any::<u64>(),
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::option::of(proptest::collection::vec(any::<(i32, f32)>(), 0..5)),
        )
    }

    /// A valid frame of records: items, slot references, epoch ends, the end.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                item().prop_map(|i| {
                    let mut r = vec![wire::ITEM];
                    r.extend(encode(&i).unwrap());
                    r
                }),
                any::<(u32, u32)>().prop_map(|(s, l)| {
                    let mut r = vec![wire::SHM_ITEM];
                    r.extend(s.to_le_bytes());
                    r.extend(l.to_le_bytes());
                    r
                }),
                Just(vec![wire::EPOCH_END]),
                Just(vec![wire::FINISHED]),
            ],
            1..8,
        )
        .prop_map(|records| records.concat())
    }

    proptest! {
        #![proptest_config(config(512))]

        #[test]
        fn fuzz_records_arbitrary(frame in proptest::collection::vec(any::<u8>(), 0..2048)) {
            decode_all::<Item>(&frame);
            decode_all::<Vec<String>>(&frame);
            decode_all::<RemotePipelineError>(&frame);
        }

        /// Valid frames with bytes flipped, or a length inside an item rewritten (postcard's
        /// lengths are varints: a flipped byte there claims up to 2^64 elements).
        #[test]
        fn fuzz_records_mutated(
            mut frame in frame(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            varint in any::<u64>(),
            at in any::<prop::sample::Index>(),
        ) {
            decode_all::<Item>(&frame);
            for (i, b) in flips {
                let i = i.index(frame.len());
                frame[i] ^= b | 1;
            }
            decode_all::<Item>(&frame);
            let at = at.index(frame.len() + 1);
            let mut v = postcard::to_allocvec(&varint).unwrap();
            frame.splice(at..at, v.drain(..));
            decode_all::<Item>(&frame);
        }
    }

    /// An item claiming 2^63 bytes of data in a frame of a few bytes.
    #[test]
    fn a_claimed_length_far_over_the_frame_is_not_allocated() {
        let mut frame = vec![wire::ITEM];
        frame.extend(postcard::to_allocvec(&(1u64 << 63)).unwrap());
        frame.extend([1u8; 64]);
        let r = bounded("decode_record", 1 << 20, || {
            decode_record::<Vec<u8>>(&frame)
        });
        assert!(r.is_err());
        let r = bounded("decode_record", 1 << 20, || {
            decode_record::<Vec<String>>(&frame)
        });
        assert!(r.is_err());
    }
}
