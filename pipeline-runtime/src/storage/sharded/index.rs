//! A dataset's shard index: each shard's name, size and the byte offset of each of its
//! samples. It is what lets a rank read an exact range of samples with one ranged read, and
//! a resumed run start in the middle of a shard without reading what came before.
//!
//! Stored as `index.json` at the dataset's root:
//!
//! ```json
//! {"version": 1, "shards": [{"name": "shard-00000.tar", "bytes": 40960, "first": 0,
//!   "sizes": [3584, 2560, 4608]}]}
//! ```
//!
//! `sizes` are the samples' lengths in bytes (all their members' headers and data), in the
//! order of the archive, from `first`, the offset of the first sample's first header. A
//! file of rows (Parquet) has `"rows": N` instead: its samples are its rows, found through
//! its own footer.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::distributed::mix64;
use crate::storage::error::{StorageError, StorageErrorKind};
use crate::storage::listing::Filter;
use crate::storage::store::Store;
use crate::storage::webdataset::{check_member_path, read_shard};

/// The name of the index file at a dataset's root.
pub const INDEX_FILE: &str = "index.json";

/// The largest index file read (a hostile one fails instead of being buffered whole).
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// The most samples an index may list.
const MAX_SAMPLES: u64 = 1 << 40;

const VERSION: u32 = 1;

/// The shards of a dataset and where each sample starts in them (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    shards: Vec<IndexedShard>,
    samples: u64,
}

/// One shard of a [`ShardIndex`]: a tar shard with the byte offset of each sample, or a
/// file of rows (Parquet) with its row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedShard {
    name: String,
    bytes: u64,
    samples: u64,
    /// Tar: the first header of each sample, then the end of the last one. Rows: empty.
    offsets: Vec<u64>,
}

impl IndexedShard {
    /// A shard named `name` (relative to the dataset's root) of `bytes` bytes whose samples
    /// start at `starts` (ascending); the last one ends at `end`.
    pub fn new(
        name: impl Into<String>,
        bytes: u64,
        starts: Vec<u64>,
        end: u64,
    ) -> Result<Self, StorageError> {
        let mut offsets = starts;
        offsets.push(end);
        let shard = Self {
            name: name.into(),
            bytes,
            samples: offsets.len() as u64 - 1,
            offsets,
        };
        shard.check()?;
        Ok(shard)
    }

    /// A file of `rows` rows (a Parquet file), named `name` (relative to the dataset's
    /// root), of `bytes` bytes: its samples are its rows.
    pub fn rows(name: impl Into<String>, bytes: u64, rows: u64) -> Result<Self, StorageError> {
        let shard = Self {
            name: name.into(),
            bytes,
            samples: rows,
            offsets: Vec::new(),
        };
        shard.check()?;
        Ok(shard)
    }

    /// Its name, relative to the dataset's root.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Its samples (a file of rows: its rows).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The bytes of samples `samples` (a range of them, in the archive's order); the whole
    /// file for a file of rows.
    pub fn byte_range(&self, samples: Range<u64>) -> Range<u64> {
        if self.offsets.is_empty() {
            return 0..self.bytes;
        }
        self.offsets[samples.start as usize]..self.offsets[samples.end as usize]
    }

    fn check(&self) -> Result<(), StorageError> {
        let bad = |why: String| {
            Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!("shard index: shard `{}` {why}", self.name.escape_debug()),
            ))
        };
        if let Err(why) = check_member_path(self.name.as_bytes()) {
            return bad(format!("is not a safe relative name: it {why}"));
        }
        if !self.offsets.windows(2).all(|w| w[0] < w[1]) {
            return bad("has sample offsets that do not ascend (or an empty sample)".into());
        }
        if self.offsets.last().is_some_and(|&end| end > self.bytes) {
            return bad(format!(
                "ends its last sample past its size of {} bytes",
                self.bytes
            ));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    shards: Vec<ShardEntry>,
}

#[derive(Serialize, Deserialize)]
struct ShardEntry {
    name: String,
    bytes: u64,
    /// A file of rows: its row count (and no `first`, `sizes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    #[serde(default)]
    first: u64,
    #[serde(default)]
    sizes: Vec<u64>,
}

impl ShardIndex {
    /// An index of `shards`, in the order given (the dataset's order).
    pub fn new(shards: Vec<IndexedShard>) -> Result<Self, StorageError> {
        let samples = shards
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.samples()));
        if samples > MAX_SAMPLES {
            return Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!("shard index: {samples} samples is over the limit of {MAX_SAMPLES}"),
            ));
        }
        if shards.len() > u32::MAX as usize {
            return Err(StorageError::new(
                StorageErrorKind::Corrupt,
                "shard index: more than 2^32 shards",
            ));
        }
        Ok(Self { shards, samples })
    }

    /// The index in `store`'s [`INDEX_FILE`], checked: a missing file is a
    /// [`NotFound`](StorageErrorKind::NotFound) error, a malformed one
    /// [`Corrupt`](StorageErrorKind::Corrupt).
    pub async fn load(store: &Store) -> Result<Self, StorageError> {
        let path = store.path(INDEX_FILE);
        let mut text = Vec::new();
        let mut chunks = store.read_stream(path.clone()).boxed();
        while let Some(chunk) = chunks.try_next().await? {
            if text.len() as u64 + chunk.len() as u64 > MAX_INDEX_BYTES {
                return Err(StorageError::new(
                    StorageErrorKind::Corrupt,
                    format!(
                        "{}: an index over {MAX_INDEX_BYTES} bytes is refused",
                        store.url_of(&path)
                    ),
                ));
            }
            text.extend_from_slice(&chunk);
        }
        Self::from_json(&text).map_err(|e| {
            StorageError::new(
                e.kind(),
                format!("{}: {}", store.url_of(&path), e.message()),
            )
        })
    }

    /// Writes the index to `store`'s [`INDEX_FILE`].
    pub async fn save(&self, store: &Store) -> Result<(), StorageError> {
        store
            .put(&store.path(INDEX_FILE), self.to_json().into())
            .await
    }

    /// Builds the index by reading every shard below `store`'s root that `filter` keeps (in
    /// the listing's order), `concurrency` at a time. Reads the whole dataset once: build it
    /// once and [`save`](Self::save) it. A shard that cannot be read to its end fails the
    /// build, naming the shard and the byte.
    pub async fn scan(
        store: &Store,
        filter: &Filter,
        concurrency: usize,
    ) -> Result<Self, StorageError> {
        let objects = store.list(filter).await?;
        let root = store.prefix().as_ref().len();
        let shards: Vec<IndexedShard> = futures::stream::iter(objects)
            .map(|object| async move {
                let name = object.path.as_ref()[root..]
                    .trim_start_matches('/')
                    .to_owned();
                let starts: Vec<u64> = read_shard(store, object.path)
                    .map_ok(|sample| sample.offset)
                    .try_collect()
                    .await?;
                IndexedShard::new(name, object.size, starts, object.size)
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        Self::new(shards)
    }

    /// The index from its JSON form (see the module docs).
    pub fn from_json(text: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |why: String| StorageError::new(StorageErrorKind::Corrupt, why);
        let file: IndexFile =
            serde_json::from_slice(text).map_err(|e| corrupt(format!("not a shard index: {e}")))?;
        if file.version != VERSION {
            return Err(corrupt(format!(
                "a shard index of version {}; this build reads version {VERSION}",
                file.version
            )));
        }
        let shards = file
            .shards
            .into_iter()
            .map(|entry| {
                if let Some(rows) = entry.rows {
                    if !entry.sizes.is_empty() {
                        return Err(corrupt(format!(
                            "shard `{}` has both `rows` and `sizes`",
                            entry.name
                        )));
                    }
                    return IndexedShard::rows(entry.name, entry.bytes, rows);
                }
                let mut starts = Vec::with_capacity(entry.sizes.len());
                let mut at = entry.first;
                for size in entry.sizes {
                    starts.push(at);
                    at = at.checked_add(size).ok_or_else(|| {
                        corrupt(format!("shard `{}`: sizes overflow", entry.name))
                    })?;
                }
                IndexedShard::new(entry.name, entry.bytes, starts, at)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(shards)
    }

    /// The index as JSON (see the module docs).
    pub fn to_json(&self) -> Vec<u8> {
        let file = IndexFile {
            version: VERSION,
            shards: self
                .shards
                .iter()
                .map(|s| ShardEntry {
                    name: s.name.clone(),
                    bytes: s.bytes,
                    rows: s.offsets.is_empty().then_some(s.samples),
                    first: s.offsets.first().copied().unwrap_or(0),
                    sizes: s.offsets.windows(2).map(|w| w[1] - w[0]).collect(),
                })
                .collect(),
        };
        serde_json::to_vec(&file).expect("an index serialises")
    }

    /// Its shards, in the dataset's order.
    pub fn shards(&self) -> &[IndexedShard] {
        &self.shards
    }

    /// Samples in the dataset.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A number that differs, all but certainly, between two indexes of different shards,
    /// sizes or sample offsets: a resume state records it, and a run on another dataset
    /// refuses the state.
    pub fn fingerprint(&self) -> u64 {
        let mut h = mix64(self.shards.len() as u64);
        for shard in &self.shards {
            for b in shard.name.bytes() {
                h = mix64(h ^ u64::from(b));
            }
            h = mix64(h ^ shard.bytes);
            h = mix64(h ^ shard.samples);
            for &offset in &shard.offsets {
                h = mix64(h ^ offset);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_through_json_and_hostile_ones_are_refused() {
        let index = ShardIndex::new(vec![
            IndexedShard::new("a.tar", 10_240, vec![0, 1536, 4096], 8192).unwrap(),
            IndexedShard::new("b/c.tar", 2048, vec![0], 1024).unwrap(),
            IndexedShard::rows("d.parquet", 5000, 300).unwrap(),
        ])
        .unwrap();
        assert_eq!(index.samples(), 304);
        let back = ShardIndex::from_json(&index.to_json()).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.fingerprint(), index.fingerprint());
        assert_eq!(index.shards()[0].byte_range(1..3), 1536..8192);
        for (bad, why) in [
            (
                r#"{"version":1,"shards":[{"name":"../x.tar","bytes":9,"first":0,"sizes":[1]}]}"#,
                "safe",
            ),
            (
                r#"{"version":1,"shards":[{"name":"x.tar","bytes":9,"first":0,"sizes":[0]}]}"#,
                "ascend",
            ),
            (
                r#"{"version":1,"shards":[{"name":"x.tar","bytes":9,"first":0,"sizes":[10]}]}"#,
                "past its size",
            ),
            (
                r#"{"version":1,"shards":[{"name":"x.tar","bytes":9,"first":18446744073709551615,"sizes":[1]}]}"#,
                "overflow",
            ),
            (r#"{"version":2,"shards":[]}"#, "version"),
            (
                r#"{"version":1,"shards":[{"name":"a.parquet","bytes":9,"rows":18446744073709551615},{"name":"b.parquet","bytes":9,"rows":9}]}"#,
                "over the limit",
            ),
            (
                r#"{"version":1,"shards":[{"name":"a.parquet","bytes":9,"rows":3,"sizes":[1]}]}"#,
                "both",
            ),
            (r#"{"shards":7}"#, "not a shard index"),
        ] {
            let e = ShardIndex::from_json(bad.as_bytes()).unwrap_err();
            assert!(e.message().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_fingerprint_sees_a_moved_sample() {
        let a = ShardIndex::new(vec![
            IndexedShard::new("a.tar", 9000, vec![0, 1024], 4096).unwrap()
        ])
        .unwrap();
        let b = ShardIndex::new(vec![
            IndexedShard::new("a.tar", 9000, vec![0, 1536], 4096).unwrap()
        ])
        .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
