//! What a shard holds and how a run of its samples is read: tar shards of WebDataset
//! samples here; Parquet files of rows in `storage::parquet` (feature `parquet`).

use std::ops::Range;

use futures::stream::{BoxStream, StreamExt};

use super::index::IndexedShard;
use crate::storage::error::{StorageError, StorageErrorKind};
use crate::storage::store::Store;
use crate::storage::webdataset::{read_shard_range, Sample};

/// A kind of shard a [`ShardSampler`](super::ShardSampler) reads: how to read samples
/// `range` of one (in order, one item per sample), and what each costs in bytes.
pub trait ShardFormat: Clone + Send + Sync + 'static {
    /// One sample.
    type Sample: Send + 'static;

    /// Samples `range` of `shard`, in order: `range.end - range.start` items, or fewer
    /// followed by nothing (the reader then fails the missing ones, naming the shard).
    fn read(
        &self,
        store: &Store,
        shard: &IndexedShard,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Self::Sample, StorageError>>;

    /// Checks that `sample` is the `index`-th of `shard`, as the index says (a shard that
    /// changed since it was indexed fails here).
    fn check(
        &self,
        store: &Store,
        shard: &IndexedShard,
        index: u64,
        sample: &Self::Sample,
    ) -> Result<(), StorageError> {
        let _ = (store, shard, index, sample);
        Ok(())
    }

    /// The bytes of `sample`'s data, for [`bytes_read`](super::ShardSampler::bytes_read).
    fn bytes(sample: &Self::Sample) -> u64;
}

/// WebDataset tar shards: each sample is the files that share a key (see
/// [`webdataset`](crate::storage::webdataset)), read with one ranged read per run.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebDataset;

impl ShardFormat for WebDataset {
    type Sample = Sample;

    fn read(
        &self,
        store: &Store,
        shard: &IndexedShard,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Sample, StorageError>> {
        let bytes = shard.byte_range(range.clone());
        read_shard_range(store, store.path(shard.name()), bytes, range.start).boxed()
    }

    fn check(
        &self,
        store: &Store,
        shard: &IndexedShard,
        index: u64,
        sample: &Sample,
    ) -> Result<(), StorageError> {
        let expected_at = shard.byte_range(index..index + 1).start;
        if sample.offset == expected_at {
            return Ok(());
        }
        Err(StorageError::new(
            StorageErrorKind::Corrupt,
            format!(
                "shard {} has a sample at byte {} where its index says sample {index} starts \
                 at byte {expected_at}: the shard changed since it was indexed",
                store.url_of(&store.path(shard.name())),
                sample.offset
            ),
        ))
    }

    fn bytes(sample: &Sample) -> u64 {
        sample.byte_len() as u64
    }
}
