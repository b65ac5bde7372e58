//! An incremental tar reader: fed the bytes of an archive chunk by chunk as they arrive,
//! it hands out each regular file whole (its name, its data, the byte offset of its header)
//! as soon as the file's last byte is in. It holds one file plus one chunk at a time, never
//! the archive.
//!
//! It reads the 512-byte ustar headers (with the `prefix` field for long paths), GNU long
//! names (`L` entries), and the `path` of POSIX extended headers (`x` entries); it checks
//! every header's checksum, skips directories, links and devices, and wants the two zero
//! blocks that end an archive, so that a shard cut short exactly between two files is
//! still reported as cut short.

use bytes::{Buf, Bytes, BytesMut};

const BLOCK: usize = 512;

/// One regular file of the archive.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// The file's path inside the archive.
    pub(crate) name: String,
    pub(crate) data: Bytes,
    /// Where its header starts in the archive.
    pub(crate) offset: u64,
}

/// Why the archive cannot be read past `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarError {
    pub(crate) offset: u64,
    pub(crate) message: String,
    /// The name of the file being read when the archive broke off, if its header was whole:
    /// everything before that file is known to be complete.
    pub(crate) entry: Option<String>,
}

/// The reader's state between chunks.
#[derive(Debug, Default)]
pub(crate) struct TarReader {
    buf: BytesMut,
    /// Archive offset of `buf[0]`.
    offset: u64,
    /// The name set by a GNU `L` or a pax `x` entry, for the entry that follows.
    next_name: Option<String>,
    /// The end-of-archive blocks were read.
    ended: bool,
    failed: Option<TarError>,
}

enum Header {
    /// A file (or a metadata entry) of `size` data bytes.
    Entry { name: String, size: u64, kind: u8 },
    /// A zero block: the end of the archive.
    Zero,
}

impl TarReader {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds the next bytes of the archive.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if !self.ended {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete file, `Ok(None)` when more bytes are needed (or the archive ended),
    /// or the error that stops the archive (returned again on every later call).
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            if self.ended || self.buf.len() < BLOCK {
                return Ok(None);
            }
            let header_offset = self.offset;
            let (name, size, kind) = match self.parse_header() {
                Ok(Header::Zero) => {
                    self.ended = true;
                    self.buf.clear();
                    return Ok(None);
                }
                Ok(Header::Entry { name, size, kind }) => (name, size, kind),
                Err(message) => return Err(self.fail(header_offset, message)),
            };
            let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
            let Some(needed) = usize::try_from(padded)
                .ok()
                .and_then(|p| p.checked_add(BLOCK))
            else {
                return Err(self.fail(
                    header_offset,
                    format!("entry `{name}` is too large ({size} bytes)"),
                ));
            };
            if self.buf.len() < needed {
                self.buf.reserve(needed - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(BLOCK);
            let data = self.buf.split_to(size as usize).freeze();
            self.buf.advance(padded as usize - size as usize);
            self.offset += needed as u64;
            match kind {
                b'0' | 0 | b'7' => {
                    let name = self.next_name.take().unwrap_or(name);
                    return Ok(Some(TarEntry {
                        name,
                        data,
                        offset: header_offset,
                    }));
                }
                b'L' => {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    self.next_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                }
                b'x' => {
                    if let Some(path) = pax_path(&data) {
                        self.next_name = Some(path);
                    }
                }
                // Directories, links, devices, FIFOs, global pax headers, GNU long link
                // names: nothing a sample is made of.
                _ => self.next_name = None,
            }
        }
    }

    /// Called when the archive's bytes are over: an error if it stopped inside an entry or
    /// before its end-of-archive blocks.
    pub(crate) fn finish(&mut self) -> Result<(), TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.ended {
            return Ok(());
        }
        let at = self.offset;
        let mut entry = None;
        let message = if self.buf.is_empty() {
            format!("the archive ends at byte {at} without its end-of-archive blocks (truncated?)")
        } else if self.buf.len() < BLOCK {
            format!(
                "truncated: a header at byte {at} has {} of its 512 bytes",
                self.buf.len()
            )
        } else {
            match self.parse_header() {
                Ok(Header::Entry { name, size, .. }) => {
                    let message = format!(
                        "truncated: entry `{name}` at byte {at} has {} of its {size} data bytes",
                        (self.buf.len() - BLOCK).min(size as usize)
                    );
                    entry = Some(self.next_name.clone().unwrap_or(name));
                    message
                }
                Ok(Header::Zero) => return Ok(()),
                Err(message) => message,
            }
        };
        let mut e = self.fail(at, message);
        e.entry = entry;
        self.failed = Some(e.clone());
        Err(e)
    }

    fn fail(&mut self, offset: u64, message: String) -> TarError {
        let e = TarError {
            offset,
            message,
            entry: None,
        };
        self.failed = Some(e.clone());
        self.buf.clear();
        e
    }

    /// Reads the header at the front of `buf` (which holds at least one block).
    fn parse_header(&self) -> Result<Header, String> {
        let h = &self.buf[..BLOCK];
        if h.iter().all(|&b| b == 0) {
            return Ok(Header::Zero);
        }
        let at = self.offset;
        let stored = parse_octal(&h[148..156])
            .ok_or_else(|| format!("corrupt header at byte {at}: unreadable checksum"))?;
        let actual: u64 = h[..148]
            .iter()
            .chain(&[b' '; 8])
            .chain(&h[156..])
            .map(|&b| u64::from(b))
            .sum();
        if stored != actual {
            return Err(format!(
                "corrupt header at byte {at}: checksum {stored} stored, {actual} computed"
            ));
        }
        let size = parse_size(&h[124..136])
            .ok_or_else(|| format!("corrupt header at byte {at}: unreadable size"))?;
        let mut name = c_string(&h[..100]);
        if &h[257..262] == b"ustar" {
            let prefix = c_string(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        Ok(Header::Entry {
            name,
            size,
            kind: h[156],
        })
    }
}

/// A NUL-terminated field as text.
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal field, padded with spaces or NULs.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A size field: octal, or GNU's base-256 for sizes of 8 GiB and more.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"` records).
fn pax_path(mut data: &[u8]) -> Option<String> {
    let mut path = None;
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space || len > data.len() {
            return path;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(value).into_owned());
        }
        data = &data[len..];
    }
    path
}

/// Writes tar archives (ustar, with GNU long names for paths over 100 bytes): for tests,
/// examples and preparing shards.
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a regular file.
    pub fn append(&mut self, name: &str, data: &[u8]) {
        if name.len() > 100 {
            let mut long = name.as_bytes().to_vec();
            long.push(0);
            self.entry("././@LongLink", b'L', &long);
        }
        self.entry(name, b'0', data);
    }

    fn entry(&mut self, name: &str, kind: u8, data: &[u8]) {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name.as_bytes()[..n]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.resize(self.out.len() + pad, 0);
    }

    /// The archive, with its end-of-archive blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 2 * BLOCK, 0);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut w = TarWriter::new();
        w.append("000001.jpg", b"jpeg bytes");
        w.append("000001.json", b"{}");
        w.append(&format!("{}/000002.txt", "d".repeat(120)), &[7u8; 1000]);
        w.finish()
    }

    /// Feeds `bytes` in chunks of `chunk` bytes, collecting the files and the final result.
    fn read(bytes: &[u8], chunk: usize) -> (Vec<TarEntry>, Result<(), TarError>) {
        let mut r = TarReader::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            r.push(c);
            loop {
                match r.next_entry() {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        (out, r.finish())
    }

    #[test]
    fn files_come_out_whole_whatever_the_chunking() {
        let bytes = archive();
        for chunk in [1, 7, 512, 513, 4096, bytes.len()] {
            let (files, end) = read(&bytes, chunk);
            assert_eq!(end, Ok(()), "chunk {chunk}");
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names[..2], ["000001.jpg", "000001.json"]);
            assert_eq!(names[2], format!("{}/000002.txt", "d".repeat(120)));
            assert_eq!(&files[0].data[..], b"jpeg bytes");
            assert_eq!(files[2].data.len(), 1000);
            assert_eq!(files[1].offset, 1024);
        }
    }

    #[test]
    fn a_truncated_archive_names_the_entry_and_its_offset() {
        let bytes = archive();
        let (files, end) = read(&bytes[..1024 + 512 + 1], 100);
        assert_eq!(files.len(), 1);
        let e = end.unwrap_err();
        assert_eq!(e.offset, 1024);
        assert!(e.message.contains("`000001.json`"), "{}", e.message);
        assert!(e.message.contains("1 of its 2 data bytes"), "{}", e.message);
        assert_eq!(e.entry.as_deref(), Some("000001.json"));
        // Cut exactly between two files: only the missing end blocks tell.
        let (files, end) = read(&bytes[..2048], 512);
        assert_eq!(files.len(), 2);
        assert!(end
            .unwrap_err()
            .message
            .contains("without its end-of-archive"));
    }

    #[test]
    fn a_corrupt_header_fails_at_its_offset_and_stays_failed() {
        let mut bytes = archive();
        bytes[1024 + 3] ^= 0x55;
        let (files, end) = read(&bytes, 333);
        assert_eq!(files.len(), 1);
        let e = end.unwrap_err();
        assert_eq!(e.offset, 1024);
        assert!(e.message.contains("checksum"), "{}", e.message);
    }

    #[test]
    fn pax_paths_and_base256_sizes_are_read() {
        assert_eq!(
            pax_path(b"30 mtime=1350244992.023960108\n18 path=a/b/c.jpg\n").as_deref(),
            Some("a/b/c.jpg")
        );
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[10] = 1;
        field[11] = 2;
        assert_eq!(parse_size(&field), Some(258));
        assert_eq!(parse_octal(b"0000644 \0"), Some(0o644));
    }
}
