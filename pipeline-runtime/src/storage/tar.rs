//! An incremental tar reader: fed the bytes of an archive chunk by chunk as they arrive,
//! it hands out each regular file whole (its raw name, its data, the byte offset of its
//! first header) as soon as the file's last byte is in. It holds one file plus one chunk at
//! a time, never the archive.
//!
//! It reads an archive as Python's `tarfile` and GNU tar do, so that a shard holds the same
//! files for us as for them (an archive read differently by two readers can smuggle or hide
//! files: CVE-2025-62518). Per header type:
//!
//! - regular files (`0`, NUL, `7`): delivered; their size and path come from the pax
//!   extended header before them if it has `size` / `path` records, else from a GNU long
//!   name, else from the ustar header (`prefix/name`); empty files are delivered too;
//! - pax extended headers (`x`): records parsed strictly (`"%d %s=%s\n"`, lengths exact);
//!   `size`, `path` and `linkpath` are applied to the next member;
//! - pax global headers (`g`): parsed strictly; one that sets `size`, `path`, `linkpath` or
//!   a `GNU.sparse.*` key is refused (readers disagree on whether globals apply to every
//!   member), others are ignored;
//! - GNU long names (`L`) and long link names (`K`): applied to the next member;
//! - directories (`5`, and an old-style NUL-type member whose name ends in `/`), hard and
//!   symbolic links (`1`, `2`), devices and FIFOs (`3`, `4`, `6`): skipped, and refused if
//!   they claim data (readers disagree on whether it follows them);
//! - GNU sparse members (`S`, or pax `GNU.sparse.*`) and every other typeflag: refused.
//!
//! Sizes are octal or base-256; checksums are verified (unsigned or signed sums, as tarfile
//! accepts). Every refusal and every damage stops the archive with an error naming the byte
//! offset of the header at fault; the files before it have been delivered. A member over
//! [`MAX_MEMBER_BYTES`] and metadata (`x`, `g`, `L`, `K`) over [`MAX_META_BYTES`] are refused
//! from their header, before their data is read.

use bytes::{Buf, Bytes, BytesMut};

const BLOCK: usize = 512;

/// The largest file of a shard that is read (1 GiB): a member claiming more is refused at
/// its header, before any of its data is buffered.
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// The largest pax header, GNU long name or long link name that is read (1 MiB).
pub const MAX_META_BYTES: u64 = 1 << 20;

/// One regular file of the archive.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// The file's path inside the archive, as stored (not checked, not decoded).
    pub(crate) name: Bytes,
    pub(crate) data: Bytes,
    /// Where its first header (its pax or GNU long-name header, if any) starts.
    pub(crate) offset: u64,
}

/// Why the archive cannot be read past `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarError {
    pub(crate) offset: u64,
    pub(crate) message: String,
    /// The name of the file being read when the archive broke off, if its header was whole:
    /// everything before that file is known to be complete.
    pub(crate) entry: Option<Bytes>,
    /// The refusal rule that stopped the archive, `None` for damage (truncated, corrupt).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) rule: Option<Rule>,
}

/// Why a well-formed archive is refused: what it holds is read differently by the
/// reference readers, or is not a plain file, or is over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// A pax record is not `"%d %s=%s\n"` with the exact length.
    PaxRecord,
    /// A pax `size` is not a decimal number of at most [`MAX_MEMBER_BYTES`].
    PaxSize,
    /// A global pax header sets `size`, `path` or `linkpath`.
    GlobalOverride,
    /// Two pax headers, two long names or two long links for one member, or both a long
    /// name and a pax `path`.
    DuplicateMeta,
    /// A sparse member (`S`, pax `GNU.sparse.*`).
    Sparse,
    /// A typeflag other than the ones listed in the module's docs.
    Typeflag,
    /// A directory, link, device or FIFO that claims data.
    DataOnNonFile,
    /// A member over [`MAX_MEMBER_BYTES`].
    MemberLimit,
    /// A pax header or long name over [`MAX_META_BYTES`].
    MetaLimit,
    /// A negative base-256 size.
    NegativeSize,
}

#[cfg(test)]
impl Rule {
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Rule::PaxRecord => "pax-record",
            Rule::PaxSize => "pax-size",
            Rule::GlobalOverride => "global-override",
            Rule::DuplicateMeta => "duplicate-meta",
            Rule::Sparse => "sparse",
            Rule::Typeflag => "typeflag",
            Rule::DataOnNonFile => "data-on-non-file",
            Rule::MemberLimit => "member-limit",
            Rule::MetaLimit => "meta-limit",
            Rule::NegativeSize => "negative-size",
        }
    }
}

/// A failure while reading one header: damage (`None`) or a refusal.
type Fault = (Option<Rule>, String);

fn damage(message: String) -> Fault {
    (None, message)
}

fn refuse(rule: Rule, message: String) -> Fault {
    (Some(rule), message)
}

/// What the metadata headers before a member said about it.
#[derive(Debug, Default)]
struct Meta {
    /// Offset of the first metadata header.
    start: Option<u64>,
    pax: bool,
    long_name: Option<Bytes>,
    long_link: bool,
    path: Option<Bytes>,
    size: Option<u64>,
}

impl Meta {
    fn is_empty(&self) -> bool {
        self.start.is_none()
    }
}

/// The reader's state between chunks.
#[derive(Debug, Default)]
pub(crate) struct TarReader {
    buf: BytesMut,
    /// Archive offset of `buf[0]`.
    offset: u64,
    /// Set by the `x`, `L` and `K` headers since the last member.
    meta: Meta,
    /// The end-of-archive block was read.
    ended: bool,
    failed: Option<TarError>,
}

/// One 512-byte header, its checksum verified.
struct Header {
    /// `prefix/name` (the prefix whenever it is set, as tarfile reads it).
    name: Bytes,
    /// The raw name field ends in `/`.
    slash: bool,
    size: u64,
    kind: u8,
}

/// What the reader does with a header's typeflag.
enum Kind {
    File,
    NonFile(&'static str),
    Pax,
    Global,
    LongName,
    LongLink,
}

impl TarReader {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A reader whose first byte is the archive's byte `offset` (a ranged read starting at
    /// a member's first header), so that the offsets it reports are the archive's.
    pub(crate) fn starting_at(offset: u64) -> Self {
        Self {
            offset,
            ..Self::default()
        }
    }

    /// Whether every byte pushed so far was read and no member is half-described: a ranged
    /// read that stops here stopped between members.
    pub(crate) fn at_boundary(&self) -> bool {
        self.failed.is_none() && self.buf.is_empty() && self.meta.is_empty()
    }

    /// Adds the next bytes of the archive.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if !self.ended && self.failed.is_none() {
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
            let at = self.offset;
            match self.step() {
                Ok(Step::More) => return Ok(None),
                Ok(Step::Ended) => return Ok(None),
                Ok(Step::Skipped) => {}
                Ok(Step::File(entry)) => return Ok(Some(entry)),
                Err((rule, message)) => {
                    let mut e = self.fail(at, message);
                    e.rule = rule;
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Reads the header at the front of `buf` (which holds at least one block) and, if its
    /// data is in, consumes both.
    fn step(&mut self) -> Result<Step, Fault> {
        let at = self.offset;
        let Some(h) = parse_header(&self.buf[..BLOCK], at)? else {
            if !self.meta.is_empty() {
                return Err(damage(format!(
                    "the end-of-archive block at byte {at} follows an extended header \
                     without its member"
                )));
            }
            self.ended = true;
            self.buf.clear();
            return Ok(Step::Ended);
        };
        let kind = classify(&h).map_err(|m| refuse_at(m.0, m.1, at))?;
        let display = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
        // The size that says where the next header is.
        let size = match kind {
            Kind::File | Kind::NonFile(_) => self.meta.size.unwrap_or(h.size),
            _ => h.size,
        };
        match kind {
            Kind::File if size > MAX_MEMBER_BYTES => {
                return Err(refuse(
                    Rule::MemberLimit,
                    format!(
                        "member `{}` at byte {at} claims {size} bytes, over the limit of \
                         {MAX_MEMBER_BYTES}",
                        display(&self.name_of(&h))
                    ),
                ))
            }
            Kind::NonFile(what) if size != 0 => {
                return Err(refuse(
                    Rule::DataOnNonFile,
                    format!(
                        "{what} `{}` at byte {at} claims {size} data bytes",
                        display(&self.name_of(&h))
                    ),
                ))
            }
            Kind::Pax | Kind::Global | Kind::LongName | Kind::LongLink if size > MAX_META_BYTES => {
                return Err(refuse(
                    Rule::MetaLimit,
                    format!(
                        "extended header at byte {at} claims {size} bytes, over the limit of \
                         {MAX_META_BYTES}"
                    ),
                ))
            }
            _ => {}
        }
        // Within the limits above, so it fits a usize.
        let padded = (size.div_ceil(BLOCK as u64) * BLOCK as u64) as usize;
        let needed = BLOCK + padded;
        if self.buf.len() < needed {
            return Ok(Step::More);
        }
        let name = self.name_of(&h);
        self.buf.advance(BLOCK);
        let data = self.buf.split_to(size as usize).freeze();
        self.buf.advance(padded - size as usize);
        self.offset += needed as u64;
        let meta = &mut self.meta;
        let first = *meta.start.get_or_insert(at);
        match kind {
            Kind::File => {
                if meta.long_name.is_some() && meta.path.is_some() {
                    return Err(refuse(
                        Rule::DuplicateMeta,
                        format!("member at byte {at} has both a GNU long name and a pax path"),
                    ));
                }
                self.meta = Meta::default();
                Ok(Step::File(TarEntry {
                    name,
                    data,
                    offset: first,
                }))
            }
            Kind::NonFile(_) => {
                self.meta = Meta::default();
                Ok(Step::Skipped)
            }
            Kind::Pax => {
                if std::mem::replace(&mut meta.pax, true) {
                    return Err(refuse(
                        Rule::DuplicateMeta,
                        format!("a second pax extended header for one member at byte {at}"),
                    ));
                }
                for (key, value) in
                    pax_records(&data).map_err(|m| refuse_at(Rule::PaxRecord, m, at))?
                {
                    match key {
                        b"size" => {
                            meta.size =
                                Some(pax_size(value).map_err(|m| refuse_at(Rule::PaxSize, m, at))?)
                        }
                        b"path" => meta.path = Some(data.slice_ref(value)),
                        b"linkpath" => {}
                        k if k.starts_with(b"GNU.sparse.") => {
                            return Err(refuse(
                                Rule::Sparse,
                                format!("a sparse member (pax `{}`) at byte {at}", display(k)),
                            ))
                        }
                        _ => {}
                    }
                }
                Ok(Step::Skipped)
            }
            Kind::Global => {
                if meta.start != Some(at) {
                    return Err(refuse(
                        Rule::GlobalOverride,
                        format!("a global pax header at byte {at} between a member's extended headers and the member"),
                    ));
                }
                for (key, _) in pax_records(&data).map_err(|m| refuse_at(Rule::PaxRecord, m, at))? {
                    if matches!(key, b"size" | b"path" | b"linkpath")
                        || key.starts_with(b"GNU.sparse.")
                    {
                        return Err(refuse(
                            Rule::GlobalOverride,
                            format!(
                                "the global pax header at byte {at} sets `{}` for every member",
                                display(key)
                            ),
                        ));
                    }
                }
                self.meta = Meta::default();
                Ok(Step::Skipped)
            }
            Kind::LongName | Kind::LongLink => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                let value = data.slice(..end);
                let slot_taken = if matches!(kind, Kind::LongName) {
                    meta.long_name.replace(value).is_some()
                } else {
                    std::mem::replace(&mut meta.long_link, true)
                };
                if slot_taken {
                    return Err(refuse(
                        Rule::DuplicateMeta,
                        format!("a second GNU long name or long link for one member at byte {at}"),
                    ));
                }
                Ok(Step::Skipped)
            }
        }
    }

    /// The member's path: pax `path`, else the GNU long name, else the header's.
    fn name_of(&self, h: &Header) -> Bytes {
        self.meta
            .path
            .clone()
            .or_else(|| self.meta.long_name.clone())
            .unwrap_or_else(|| h.name.clone())
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
            match parse_header(&self.buf[..BLOCK], at) {
                Ok(Some(h)) => {
                    let name = self.name_of(&h);
                    let size = self.meta.size.unwrap_or(h.size);
                    let message = format!(
                        "truncated: entry `{}` at byte {at} has {} of its {size} data bytes",
                        String::from_utf8_lossy(&name),
                        ((self.buf.len() - BLOCK) as u64).min(size)
                    );
                    entry = Some(name);
                    message
                }
                Ok(None) => unreachable!("a zero block is read by next_entry"),
                Err((_, message)) => message,
            }
        };
        let at = self.meta.start.unwrap_or(at);
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
            rule: None,
        };
        self.failed = Some(e.clone());
        self.buf.clear();
        e
    }
}

enum Step {
    /// The header's data is not all in yet.
    More,
    Ended,
    /// A metadata header or a non-file, consumed.
    Skipped,
    File(TarEntry),
}

fn refuse_at(rule: Rule, message: String, at: u64) -> Fault {
    refuse(rule, format!("{message} (header at byte {at})"))
}

/// What to do with a header's typeflag.
fn classify(h: &Header) -> Result<Kind, (Rule, String)> {
    Ok(match h.kind {
        0 if h.slash => Kind::NonFile("directory"),
        b'0' | 0 | b'7' => Kind::File,
        b'1' => Kind::NonFile("hard link"),
        b'2' => Kind::NonFile("symbolic link"),
        b'3' | b'4' => Kind::NonFile("device"),
        b'5' => Kind::NonFile("directory"),
        b'6' => Kind::NonFile("FIFO"),
        b'x' => Kind::Pax,
        b'g' => Kind::Global,
        b'L' => Kind::LongName,
        b'K' => Kind::LongLink,
        b'S' => {
            return Err((
                Rule::Sparse,
                format!(
                    "member `{}` is a GNU sparse file (typeflag `S`), which is not read",
                    String::from_utf8_lossy(&h.name)
                ),
            ))
        }
        other => {
            return Err((
                Rule::Typeflag,
                format!(
                    "member `{}` has typeflag {:?}, which is not read",
                    String::from_utf8_lossy(&h.name),
                    char::from(other)
                ),
            ))
        }
    })
}

/// Reads a header block: `None` for a zero block (the end of the archive).
fn parse_header(h: &[u8], at: u64) -> Result<Option<Header>, Fault> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let corrupt = |what: &str| damage(format!("corrupt header at byte {at}: {what}"));
    let stored = parse_number(&h[148..156])
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| corrupt("unreadable checksum"))?;
    let rest = h[..148].iter().chain(&[b' '; 8]).chain(&h[156..]);
    let unsigned: u64 = rest.clone().map(|&b| u64::from(b)).sum();
    let signed: i64 = rest.map(|&b| i64::from(b as i8)).sum();
    if stored != unsigned && i64::try_from(stored) != Ok(signed) {
        return Err(corrupt(&format!(
            "checksum {stored} stored, {unsigned} computed"
        )));
    }
    let size = match parse_number(&h[124..136]) {
        Ok(n) if n >= 0 => n as u64,
        Ok(_) => {
            return Err(refuse(
                Rule::NegativeSize,
                format!("the header at byte {at} has a negative size"),
            ))
        }
        Err(()) => return Err(corrupt("unreadable size")),
    };
    let raw = c_str(&h[..100]);
    let prefix = c_str(&h[345..500]);
    let kind = h[156];
    let name = if !prefix.is_empty() && !matches!(kind, b'L' | b'K' | b'S') {
        let mut n = prefix.to_vec();
        n.push(b'/');
        n.extend_from_slice(raw);
        Bytes::from(n)
    } else {
        Bytes::copy_from_slice(raw)
    };
    Ok(Some(Header {
        name,
        slash: raw.ends_with(b"/"),
        size,
        kind,
    }))
}

/// A NUL-terminated field.
fn c_str(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A numeric field as tarfile reads it: base-256 when its first byte is 0x80 (positive) or
/// 0xff (negative), else octal digits up to the first NUL, surrounded by whitespace.
fn parse_number(field: &[u8]) -> Result<i128, ()> {
    match field[0] {
        0x80 | 0xff => {
            let mut v: i128 = 0;
            for &b in &field[1..] {
                v = v.checked_mul(256).ok_or(())? + i128::from(b);
            }
            if field[0] == 0xff {
                v -= 1i128 << (8 * (field.len() - 1));
            }
            Ok(v)
        }
        _ => {
            let text = c_str(field).trim_ascii();
            if text.is_empty() {
                return Ok(0);
            }
            if !text.iter().all(|b| (b'0'..=b'7').contains(b)) || text.len() > 40 {
                return Err(());
            }
            Ok(text.iter().fold(0, |v, &b| v * 8 + i128::from(b - b'0')))
        }
    }
}

/// One pax record: its keyword and its value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// The records of a pax header: `"<len> <key>=<value>\n"`, each exactly `len` bytes long,
/// filling the header's data exactly.
fn pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while !data.is_empty() {
        let bad = |what: &str| format!("malformed pax record at byte {pos} of the header: {what}");
        let space = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let digits = &data[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("the length is not a decimal number"));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the length is too large"))?;
        if len < space + 4 || len > data.len() {
            return Err(bad(&format!(
                "length {len} does not fit the {} bytes left",
                data.len()
            )));
        }
        let record = &data[space + 1..len];
        let Some(body) = record.strip_suffix(b"\n") else {
            return Err(bad(&format!("length {len} does not end at a newline")));
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no `=`"))?;
        if eq == 0 {
            return Err(bad("an empty keyword"));
        }
        out.push((&body[..eq], &body[eq + 1..]));
        data = &data[len..];
        pos += len;
    }
    Ok(out)
}

/// A pax `size`: decimal digits, at most [`MAX_MEMBER_BYTES`].
fn pax_size(value: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(value);
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(format!("pax size `{text}` is not a decimal number"));
    }
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_MEMBER_BYTES => Ok(n),
        _ => Err(format!(
            "pax size {text} is over the limit of {MAX_MEMBER_BYTES} bytes"
        )),
    }
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

    /// Bytes written so far: the offset the next file's first header will have (what a
    /// shard index records for each sample).
    pub fn len(&self) -> u64 {
        self.out.len() as u64
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
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
            let names: Vec<&str> = files
                .iter()
                .map(|f| std::str::from_utf8(&f.name).unwrap())
                .collect();
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
        assert_eq!(e.entry.as_deref(), Some(&b"000001.json"[..]));
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
    fn pax_records_sizes_and_numbers_are_read_strictly() {
        let records = pax_records(b"30 mtime=1350244992.023960108\n18 path=a/b/c.jpg\n").unwrap();
        assert_eq!(records[1], (&b"path"[..], &b"a/b/c.jpg"[..]));
        assert!(
            pax_records(b"19 path=a/b/c.jpg\n").is_err(),
            "length one too long"
        );
        assert!(
            pax_records(b"17 path=a/b/c.jpg\n").is_err(),
            "length one too short"
        );
        assert!(pax_records(b"x8 path=a\n").is_err());
        assert!(pax_records(b"9 patha\n\n").is_err(), "no `=`");
        assert_eq!(pax_size(b"1234"), Ok(1234));
        for bad in [&b"-1"[..], b"12a", b"", b" 12", b"99999999999999999999999"] {
            assert!(pax_size(bad).is_err(), "{bad:?}");
        }
        assert!(pax_size(format!("{}", MAX_MEMBER_BYTES + 1).as_bytes()).is_err());
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[10] = 1;
        field[11] = 2;
        assert_eq!(parse_number(&field), Ok(258));
        field[0] = 0xff;
        assert!(parse_number(&field).unwrap() < 0);
        assert_eq!(parse_number(b"0000644 \0"), Ok(0o644));
        assert_eq!(parse_number(b" 12\0 garbage"), Ok(0o12));
        assert!(parse_number(b"+12").is_err());
    }

    #[test]
    fn a_member_over_the_limit_is_refused_at_its_header_before_its_data() {
        let mut bytes = archive();
        // The second header claims 8 GiB (octal, the largest the field holds), checksum fixed.
        let h = &mut bytes[1024..1536];
        h[124..135].copy_from_slice(b"77777777777");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut r = TarReader::new();
        r.push(&bytes[..1536]);
        assert_eq!(
            r.next_entry().unwrap().unwrap().data.as_ref(),
            b"jpeg bytes"
        );
        let e = r.next_entry().unwrap_err();
        assert_eq!((e.offset, e.rule), (1024, Some(Rule::MemberLimit)));
        assert!(
            r.buf.capacity() < 1 << 20,
            "nothing allocated for the claim"
        );
    }

    /// A pax header's data holding `records`.
    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in records {
            let n = k.len() + v.len() + 3;
            let mut len = n + n.to_string().len();
            if len.to_string().len() != n.to_string().len() {
                len += 1;
            }
            out.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
        }
        out
    }

    #[test]
    fn a_pax_size_over_a_zero_ustar_size_is_honoured_so_nothing_is_smuggled() {
        let mut inner = TarWriter::new();
        inner.append("smuggled.txt", b"evil");
        let inner = inner.out;
        let mut w = TarWriter::new();
        w.entry(
            "PaxHeader/x",
            b'x',
            &pax(&[("size", &inner.len().to_string())]),
        );
        w.entry("outer.tar", b'0', &[]);
        // The ustar header says 0; the pax size covers the inner archive that follows.
        w.out.extend_from_slice(&inner);
        w.append("next.txt", b"n");
        let (files, end) = read(&w.finish(), 100);
        assert_eq!(end, Ok(()));
        let names: Vec<&[u8]> = files.iter().map(|f| &f.name[..]).collect();
        assert_eq!(names, [&b"outer.tar"[..], b"next.txt"]);
        assert_eq!(files[0].data[..], inner[..]);
        assert_eq!(files[0].offset, 0, "a file's offset is its first header's");
    }

    #[test]
    fn sparse_members_unknown_typeflags_and_malformed_pax_are_refused_at_their_offset() {
        let refused = |build: &dyn Fn(&mut TarWriter)| {
            let mut w = TarWriter::new();
            w.append("a.txt", b"a");
            build(&mut w);
            w.append("b.txt", b"b");
            let (files, end) = read(&w.finish(), 333);
            assert_eq!(files.len(), 1, "the file before is delivered");
            let e = end.unwrap_err();
            assert_eq!(e.offset, 1024);
            assert!(e.message.contains("at byte 1024"), "{}", e.message);
            e.rule.unwrap()
        };
        assert_eq!(refused(&|w| w.entry("s.bin", b'S', b"x")), Rule::Sparse);
        assert_eq!(refused(&|w| w.entry("z.bin", b'Z', b"x")), Rule::Typeflag);
        let sparse = pax(&[("GNU.sparse.major", "1")]);
        assert_eq!(refused(&|w| w.entry("p", b'x', &sparse)), Rule::Sparse);
        assert_eq!(
            refused(&|w| w.entry("p", b'x', b"20 path=a.txt\n")),
            Rule::PaxRecord
        );
        let size = pax(&[("size", "-1")]);
        assert_eq!(refused(&|w| w.entry("p", b'x', &size)), Rule::PaxSize);
        assert_eq!(
            refused(&|w| w.entry("d/", b'5', b"data")),
            Rule::DataOnNonFile
        );
        let path = pax(&[("path", "all.txt")]);
        assert_eq!(
            refused(&|w| w.entry("g", b'g', &path)),
            Rule::GlobalOverride
        );
    }
}
