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
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

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
}
