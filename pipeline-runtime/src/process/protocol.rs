//! The wire protocol between a parent and a worker child: how the child is told it is a
//! worker, the handshake that proves it entered worker mode, and length-prefixed frames.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Set in a worker child's environment (to [`PROTOCOL_VERSION`]); its presence is what makes
/// [`init`](super::init) enter worker mode, and what stops a worker from starting workers.
pub(crate) const WORKER_ENV: &str = "PIPELINE_RUNTIME_WORKER";

/// The only argument a worker child is started with. A program whose `main` forgot to call
/// [`init`](super::init) and parses its arguments (e.g. a libtest harness) rejects it and
/// exits at once, instead of running as if it were the parent.
pub(crate) const WORKER_ARG: &str = "--pipeline-runtime-worker";

/// Bumped whenever frames or the handshake change.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// What a child writes first on its protocol output: the magic bytes, then the protocol
/// version (little endian). Anything else there means the child did not enter worker mode.
pub(crate) const HANDSHAKE_MAGIC: &[u8; 12] = b"\0PLRT-WORKER";
pub(crate) const HANDSHAKE_LEN: usize = HANDSHAKE_MAGIC.len() + 4;

/// Largest frame accepted (1 GiB): a corrupt length fails cleanly instead of allocating it.
pub(crate) const MAX_FRAME: usize = 1 << 30;

pub(crate) fn handshake() -> [u8; HANDSHAKE_LEN] {
    let mut out = [0u8; HANDSHAKE_LEN];
    out[..HANDSHAKE_MAGIC.len()].copy_from_slice(HANDSHAKE_MAGIC);
    out[HANDSHAKE_MAGIC.len()..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out
}

/// Writes one frame: a `u32` little-endian length, then the parts back to back.
pub(crate) fn write_frame(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"),
        ));
    }
    w.write_all(&(len as u32).to_le_bytes())?;
    for part in parts {
        w.write_all(part)?;
    }
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before its first byte.
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} exceeds the limit of {MAX_FRAME} bytes"),
        ));
    }
    // The length is the peer's word: allocate as the bytes arrive (a first step of at most
    // `FIRST_ALLOCATION`, then doubling), so that a corrupt length over a short stream fails
    // at its end without allocating what it claims.
    let mut buf = Vec::with_capacity(len.min(FIRST_ALLOCATION));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ends after {} of a frame's {len} bytes",
                buf.len()
            ),
        ));
    }
    Ok(Some(buf))
}

/// What [`read_frame`] allocates before a frame's bytes have arrived.
const FIRST_ALLOCATION: usize = 1 << 20;

/// What the parent sends right after the handshake: which entry point to run, with what.
#[derive(Serialize, Deserialize)]
pub(crate) struct Start {
    pub(crate) entry: String,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) args: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &[b"ab", b"", b"cde"]).unwrap();
        write_frame(&mut wire, &[]).unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"abcde");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &[b"abcdef"]).unwrap();
        let mut r = &wire[..6];
        assert!(read_frame(&mut r).is_err());
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        let mut r = &huge[..];
        let err = read_frame(&mut r).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    /// Regression (found by `fuzz_frames`): a length of up to 1 GiB over a stream of a few
    /// bytes allocated the whole claimed gigabyte before reading.
    #[test]
    fn a_claimed_length_over_a_short_stream_is_not_allocated() {
        let mut wire = (MAX_FRAME as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[7u8; 2048]);
        let err = crate::fuzz::bounded("read_frame", 4 << 20, || {
            read_frame(&mut &wire[..]).unwrap_err()
        });
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    /// Reads frames until the end or an error: never a panic, never more than `wire`
    /// promises (each frame read is as long as its prefix said, and within the stream).
    fn read_all(wire: &[u8]) {
        let mut r = wire;
        crate::fuzz::bounded("read_frame", 2 * wire.len() as u64 + (4 << 20), || {
            let mut total = 0;
            loop {
                match read_frame(&mut r) {
                    Ok(Some(frame)) => {
                        total += 4 + frame.len();
                        assert!(total <= wire.len());
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                        ));
                        break;
                    }
                }
            }
        });
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::fuzz::config(512))]

            /// Arbitrary bytes as a stream of frames.
            #[test]
            fn fuzz_frames_arbitrary(wire in proptest::collection::vec(any::<u8>(), 0..4096)) {
                read_all(&wire);
            }

            /// Valid frames with a corrupted length prefix (any `u32`, or one near a real
            /// length), cut short or not.
            #[test]
            fn fuzz_frames_corrupt_lengths(
                frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..6),
                which in any::<prop::sample::Index>(),
                len in prop_oneof![any::<u32>(), 0u32..2048, Just(MAX_FRAME as u32), Just(u32::MAX)],
                cut in any::<prop::sample::Index>(),
            ) {
                let mut wire = Vec::new();
                let mut starts = Vec::new();
                for f in &frames {
                    starts.push(wire.len());
                    write_frame(&mut wire, &[f]).unwrap();
                }
                let at = starts[which.index(starts.len())];
                wire[at..at + 4].copy_from_slice(&len.to_le_bytes());
                read_all(&wire);
                let cut = cut.index(wire.len() + 1);
                read_all(&wire[..cut]);
            }
        }
    }
}
