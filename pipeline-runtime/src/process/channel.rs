//! Framed, bidirectional messages between a parent and a worker child, raw or serde-encoded.
//!
//! Values are encoded with `postcard` (compact, and a plain copy for byte buffers).

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::protocol::{read_frame, write_frame};

/// The receiving half of a [`Channel`].
pub(crate) struct FrameReader {
    inner: BufReader<Box<dyn Read + Send>>,
    fd: RawFd,
}

/// The sending half of a [`Channel`].
pub(crate) struct FrameWriter {
    inner: BufWriter<Box<dyn Write + Send>>,
}

/// A framed message channel to the other process: to the child on the parent's side, to the
/// parent inside a worker's entry point. [`split`](Self::split) it to send and receive from
/// different threads.
#[derive(Debug)]
pub(crate) struct Channel {
    reader: FrameReader,
    writer: FrameWriter,
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameReader")
    }
}

impl fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameWriter")
    }
}

impl FrameReader {
    pub(crate) fn new(r: impl Read + AsRawFd + Send + 'static) -> Self {
        let fd = r.as_raw_fd();
        Self {
            inner: BufReader::with_capacity(64 * 1024, Box::new(r)),
            fd,
        }
    }

    /// Whether a message (or the end of the stream) can be read within `timeout`: some of
    /// it is buffered already or arrives in time. `recv` then blocks only until the rest of
    /// that message is in.
    pub(crate) fn wait_readable(&self, timeout: Duration) -> bool {
        !self.inner.buffer().is_empty() || wait_readable(self.fd, timeout)
    }

    /// The next message; `Ok(None)` when the other side closed its end cleanly (it exited or
    /// dropped its writer).
    pub(crate) fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        read_frame(&mut self.inner)
    }
}

impl FrameWriter {
    pub(crate) fn new(w: impl Write + Send + 'static) -> Self {
        Self {
            inner: BufWriter::with_capacity(8 * 1024, Box::new(w)),
        }
    }

    /// Writes bytes with no frame around them (the handshake).
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.inner.flush()
    }

    /// Sends one message made of `parts` back to back (saves a copy when a header and a
    /// payload live apart).
    pub(crate) fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        write_frame(&mut self.inner, parts)
    }

    /// Sends one message.
    pub(crate) fn send(&mut self, message: &[u8]) -> io::Result<()> {
        self.send_parts(&[message])
    }
}

impl Channel {
    pub(crate) fn new(reader: FrameReader, writer: FrameWriter) -> Self {
        Self { reader, writer }
    }

    /// See [`FrameReader::recv`].
    pub(crate) fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.reader.recv()
    }

    /// See [`FrameWriter::send`].
    pub(crate) fn send(&mut self, message: &[u8]) -> io::Result<()> {
        self.writer.send(message)
    }

    /// See [`FrameWriter::send_parts`].
    pub(crate) fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.writer.send_parts(parts)
    }

    /// Both halves, borrowed, to receive on one thread while sending on another for a while.
    pub(crate) fn halves(&mut self) -> (&mut FrameReader, &mut FrameWriter) {
        (&mut self.reader, &mut self.writer)
    }

    /// The two halves, to receive on one thread while sending on another. Dropping the
    /// writer tells the other side that no more messages come.
    pub(crate) fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

/// Encodes a value the way channels do.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot encode value: {e}"),
        )
    })
}

/// Decodes a value encoded by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "cannot decode a `{}` from {} bytes: {e}",
                std::any::type_name::<T>(),
                bytes.len()
            ),
        )
    })
}

/// Whether `fd` becomes readable (or hung up) within `timeout`.
pub(super) fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if rc >= 0 {
            return rc > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}
