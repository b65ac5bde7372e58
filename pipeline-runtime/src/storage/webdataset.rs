//! WebDataset shards: tar archives whose files are grouped into samples by key. A shard is
//! streamed from its store and parsed as it arrives (by a small incremental tar reader of
//! this crate's own); each run of consecutive files with the same key becomes one
//! [`Sample`], whose fields are named by the rest of the file name (`000123.jpg`, `000123.json`, `000123.cls` → sample `000123`
//! with fields `jpg`, `json`, `cls`).
//!
//! The key is the file's path up to the first dot of its file name (directories included,
//! as WebDataset does: `a/b.c/x.seg.png` → key `a/b.c/x`, field `seg.png`). Files without a
//! dot in their name are skipped.
//!
//! Keys are safe to use as relative paths: a file whose path is not valid UTF-8, contains a
//! NUL byte or a backslash, starts with `/`, or has a `..` component fails its sample (see
//! [`check_member_path`]); such a path never reaches user code. Which archives are read, and
//! which are refused, is listed in the guide's chapter "Reading from storage".
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_runtime::storage::{block_on, shard_split, webdataset, Filter, Store};
//! use pipeline_runtime::PipelineBuilder;
//!
//! let store = Store::open("s3://bucket/train")?;
//! let shards = block_on(store.list(&Filter::suffix(".tar")))?;
//! let mine = shard_split(&shards, 0, 1, 42, 0); // rank 0 of 1, seed 42, epoch 0
//! let pipeline = PipelineBuilder::new()
//!     .source(mine)
//!     .async_try_flat_pipe(webdataset::samples(&store))
//!     .concurrency(4)
//!     .sink()
//!     .build()?;
//! for sample in pipeline {
//!     let sample = sample?;
//!     let _jpeg = sample.get("jpg");
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use futures::Stream;

use super::error::{StorageError, StorageErrorKind};
use super::store::{Object, Store};
use super::tar::{TarEntry, TarError, TarReader};

/// One sample: the files of a shard that share a key.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The URL of the shard it came from.
    pub shard: Arc<str>,
    /// Its position in the shard (0 for the first sample): with the shard, where a resumed
    /// run can start again.
    pub index: u64,
    /// The byte offset of its first file's header in the shard.
    pub offset: u64,
    /// The key its files share.
    pub key: String,
    /// Its fields, in the order of the archive: (extension, data).
    pub fields: Vec<(String, Bytes)>,
}

impl Sample {
    /// The data of field `extension` (`"jpg"`, `"json"`, `"seg.png"`), if the sample has it.
    pub fn get(&self, extension: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(ext, _)| ext == extension)
            .map(|(_, data)| data)
    }

    /// The total size of its fields' data.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(|(_, d)| d.len()).sum()
    }
}

/// A stage function for [`async_try_flat_pipe`](crate::StageBuilder::async_try_flat_pipe):
/// each listed shard in, its samples out, as they are parsed. A shard that is truncated or
/// corrupt, or whose read fails for good, delivers the samples before the failure and then
/// fails: one failure of that shard's item, counted against the stage's budget, with a
/// message naming the shard's URL and the byte offset; the other shards go on. The sample
/// being read when the shard broke off is delivered only if it is known to be complete
/// (when the file that broke off has another key). A sample whose files' path is unsafe
/// (see [`check_member_path`]) is an error in its place, naming the file and why; inside a
/// pipeline, that error ends the shard's item like any other.
pub fn samples(
    store: &Store,
) -> impl Fn(Object) -> BoxStream<'static, Result<Sample, StorageError>> + Send + Sync + 'static {
    let store = store.clone();
    move |shard: Object| read_shard(&store, shard.path).boxed()
}

/// The samples of one shard (see [`samples`]).
pub fn read_shard(
    store: &Store,
    path: object_store::path::Path,
) -> impl Stream<Item = Result<Sample, StorageError>> + Send + 'static {
    let url: Arc<str> = store.url_of(&path).into();
    let state = ShardState {
        chunks: store.read_stream(path).boxed(),
        tar: TarReader::new(),
        group: Grouper::default(),
        url,
        bounded: false,
        done: false,
        failure: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.next_sample().await?;
        Some((item, s))
    })
}

/// The samples in bytes `bytes` of a shard, a range that starts at a sample's first header
/// and ends where another sample starts (or at the archive's end), numbered from
/// `first_index`: what a shard index says is there. The read may stop between two members
/// without the end-of-archive blocks; anything else reads as [`read_shard`] reads.
pub(crate) fn read_shard_range(
    store: &Store,
    path: object_store::path::Path,
    bytes: std::ops::Range<u64>,
    first_index: u64,
) -> impl Stream<Item = Result<Sample, StorageError>> + Send + 'static {
    let url: Arc<str> = store.url_of(&path).into();
    let state = ShardState {
        tar: TarReader::starting_at(bytes.start),
        chunks: store.read_stream_range(path, bytes).boxed(),
        group: Grouper {
            current: None,
            next_index: first_index,
        },
        url,
        bounded: true,
        done: false,
        failure: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.next_sample().await?;
        Some((item, s))
    })
}

/// The samples of a shard whose bytes arrive as `chunks` (then end), read as
/// [`read_shard`] reads them: for the fuzzing tests.
#[cfg(test)]
pub(crate) fn samples_of_chunks(chunks: Vec<Bytes>) -> Vec<Result<Sample, StorageError>> {
    let mut state = ShardState {
        chunks: futures::stream::iter(chunks.into_iter().map(Ok)).boxed(),
        tar: TarReader::new(),
        group: Grouper::default(),
        url: "memory:///fuzz.tar".into(),
        bounded: false,
        done: false,
        failure: None,
    };
    let mut out = Vec::new();
    while let Some(s) = futures::executor::block_on(state.next_sample()) {
        out.push(s);
    }
    out
}

struct ShardState {
    chunks: BoxStream<'static, Result<Bytes, StorageError>>,
    tar: TarReader,
    group: Grouper,
    url: Arc<str>,
    /// A ranged read: its end between two members is its end.
    bounded: bool,
    done: bool,
    /// The shard's failure, due after the complete sample that is delivered first.
    failure: Option<StorageError>,
}

impl ShardState {
    async fn next_sample(&mut self) -> Option<Result<Sample, StorageError>> {
        if let Some(e) = self.failure.take() {
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        loop {
            match self.tar.next_entry() {
                Ok(Some(entry)) => {
                    if let Some(sample) = self.group.add(entry, &self.url) {
                        return Some(sample);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return self.broken(e),
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.tar.push(&chunk),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(self.dropping_partial(e)));
                }
                None => {
                    if self.bounded && self.tar.at_boundary() {
                        self.done = true;
                        return self.group.take();
                    }
                    if let Err(e) = self.tar.finish() {
                        return self.broken(e);
                    }
                    self.done = true;
                    return self.group.take();
                }
            }
        }
    }

    /// The archive is truncated or corrupt. The sample being grouped is complete if the
    /// file that broke off is known to start another one: then it is delivered first.
    fn broken(&mut self, e: TarError) -> Option<Result<Sample, StorageError>> {
        self.done = true;
        let error = StorageError::new(
            StorageErrorKind::Corrupt,
            format!("shard {} at byte {}: {}", self.url, e.offset, e.message),
        );
        let next_key = e.entry.as_deref().and_then(split_key).map(|(key, _)| key);
        let complete = match (&self.group.current, next_key) {
            (Some(current), Some(next)) => current.raw_key[..] != *next,
            _ => false,
        };
        if complete {
            self.failure = Some(error);
            return self.group.take();
        }
        Some(Err(self.dropping_partial(error)))
    }

    /// The sample being grouped when the shard failed may miss fields: it is not delivered,
    /// and the message says so.
    fn dropping_partial(&mut self, e: StorageError) -> StorageError {
        match self.group.current.take() {
            Some(partial) => {
                let message = format!(
                    "{} (sample `{}`, index {}, was incomplete and is dropped)",
                    e.message(),
                    String::from_utf8_lossy(&partial.raw_key),
                    partial.sample.index
                );
                StorageError::new(e.kind(), message).with_source(e)
            }
            None => e,
        }
    }
}

/// Groups consecutive files by key.
#[derive(Default)]
struct Grouper {
    current: Option<Pending>,
    next_index: u64,
}

/// The sample being grouped.
struct Pending {
    /// The key as stored, to compare the next files' with.
    raw_key: Bytes,
    sample: Sample,
    /// Why the sample fails (its first unsafe file, and why), if it does.
    unsafe_path: Option<String>,
}

impl Grouper {
    /// Adds a file; returns the previous sample (or its failure) when this file starts a
    /// new one.
    fn add(&mut self, entry: TarEntry, url: &Arc<str>) -> Option<Result<Sample, StorageError>> {
        let (key, ext) = split_key(&entry.name)?;
        let checked = check_member_path(&entry.name);
        if let Some(cur) = &mut self.current {
            if cur.raw_key[..] == *key {
                match checked {
                    Ok(_) => {
                        let ext = String::from_utf8_lossy(ext).into_owned();
                        cur.sample.fields.push((ext, entry.data));
                    }
                    Err(why) => {
                        cur.unsafe_path
                            .get_or_insert_with(|| unsafe_message(&entry, why));
                    }
                }
                return None;
            }
        }
        let (key_text, fields, unsafe_path) = match checked {
            Ok(_) => (
                String::from_utf8_lossy(key).into_owned(),
                vec![(
                    String::from_utf8_lossy(ext).into_owned(),
                    entry.data.clone(),
                )],
                None,
            ),
            Err(why) => (String::new(), Vec::new(), Some(unsafe_message(&entry, why))),
        };
        let next = Pending {
            raw_key: entry.name.slice_ref(key),
            sample: Sample {
                shard: url.clone(),
                index: self.next_index,
                offset: entry.offset,
                key: key_text,
                fields,
            },
            unsafe_path,
        };
        self.next_index += 1;
        self.current.replace(next).map(|p| p.finish(url))
    }

    fn take(&mut self) -> Option<Result<Sample, StorageError>> {
        let url = self.current.as_ref()?.sample.shard.clone();
        self.current.take().map(|p| p.finish(&url))
    }
}

impl Pending {
    fn finish(self, url: &Arc<str>) -> Result<Sample, StorageError> {
        match self.unsafe_path {
            None => Ok(self.sample),
            Some(why) => Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!(
                    "shard {url} at byte {}: sample {} fails: {why}",
                    self.sample.offset, self.sample.index
                ),
            )),
        }
    }
}

fn unsafe_message(entry: &TarEntry, why: &str) -> String {
    format!(
        "member `{}` at byte {} {why}",
        entry.name.escape_ascii(),
        entry.offset
    )
}

/// Checks that a file's path inside a shard is safe to use as a relative path, and returns
/// it as text. A path is refused (and its sample fails) if it is empty, is not valid UTF-8,
/// contains a NUL byte or a backslash (`\`), starts with `/`, or has a `..` component
/// (between slashes, or at either end). Anything else is allowed, `.` components, empty
/// components (`a//b`), spaces and any Unicode included.
pub fn check_member_path(path: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(path).map_err(|_| "is not valid UTF-8")?;
    if text.is_empty() {
        return Err("has an empty path");
    }
    if text.contains('\0') {
        return Err("contains a NUL byte");
    }
    if text.contains('\\') {
        return Err("contains a backslash");
    }
    if text.starts_with('/') {
        return Err("is an absolute path");
    }
    if text.split('/').any(|c| c == "..") {
        return Err("has a `..` component");
    }
    Ok(text)
}

/// `dir/000123.seg.png` → (`dir/000123`, `seg.png`); `None` for a name without a dot.
fn split_key(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let file_start = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let dot = name[file_start..].iter().position(|&b| b == b'.')? + file_start;
    Some((&name[..dot], &name[dot + 1..]))
}

#[cfg(test)]
mod tests {
    use super::{check_member_path, split_key};

    #[test]
    fn the_key_ends_at_the_first_dot_of_the_file_name() {
        let split = |n: &'static str| {
            split_key(n.as_bytes()).map(|(k, e)| {
                (
                    std::str::from_utf8(k).unwrap(),
                    std::str::from_utf8(e).unwrap(),
                )
            })
        };
        assert_eq!(split("000123.jpg"), Some(("000123", "jpg")));
        assert_eq!(split("a/b.c/x.seg.png"), Some(("a/b.c/x", "seg.png")));
        assert_eq!(split("a.b/README"), None);
        assert_eq!(split(".hidden"), Some(("", "hidden")));
    }

    #[test]
    fn unsafe_member_paths_are_refused_with_a_reason() {
        for ok in [
            "a/b.jpg",
            "./a.jpg",
            "a//b.c",
            "x..y.jpg",
            "...jpg",
            "é ü/猫.png",
        ] {
            assert_eq!(check_member_path(ok.as_bytes()), Ok(ok));
        }
        for (bad, why) in [
            (&b"../../evil.txt"[..], "`..`"),
            (b"a/../b.txt", "`..`"),
            (b"a/..", "`..`"),
            (b"/abs/x.txt", "absolute"),
            (b"a\0b.txt", "NUL"),
            (b"a\xff.txt", "UTF-8"),
            (b"..\\evil.txt", "backslash"),
            (b"", "empty"),
        ] {
            let e = check_member_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
