//! Reading training data from where it lives (feature `storage`): object stores, WebDataset
//! tar shards and (feature `parquet`) Parquet files.
//!
//! - [`Store`] opens a URL (`file:///data`, a plain path, `memory://`, and with their
//!   features `s3://bucket/prefix`, `gs://...`, `az://...`) on the
//!   [`object_store`](https://docs.rs/object_store) crate, configured by [`StoreOptions`] and
//!   the usual environment variables; it lists (with a [`Filter`]), gets whole objects or
//!   byte ranges, and streams an object chunk by chunk, every read retried by a [`Retry`]
//!   policy and counted in [`StoreCounters`].
//! - [`webdataset`] turns each tar shard into its samples, streamed, as a stage function for
//!   `async_try_flat_pipe`.
//! - [`ShardIndex`] and [`ShardSampler`] read indexed shards as a distributed, exactly
//!   resumable source: every rank the same number of samples per epoch, a stopped run
//!   resumed (on any world size) without reading a finished sample again ([`ShardState`]).
//! - [`shard_split`] deals a shuffled shard list out to the ranks of a distributed job;
//!   [`ShuffleBuffer`] shuffles samples within a bounded buffer.
//! - `parquet` (feature `parquet`) reads a Parquet file's rows as Arrow record batches.
//!
//! Every read is async and runs on the pipeline's runtime when called from an async stage:
//! the stage's `concurrency` bounds the reads in flight, and no pool thread waits on the
//! network. The guide's chapter "Reading from storage" shows whole pipelines.

mod counters;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod listing;
mod options;
#[cfg(feature = "parquet")]
#[cfg_attr(docsrs, doc(cfg(feature = "parquet")))]
pub mod parquet;
mod retry;
mod runtime;
mod sharded;
mod shards;
mod shuffle;
mod store;
mod tar;
#[cfg(test)]
mod tar_corpus;
pub mod webdataset;

pub use counters::{StoreCounters, StoreCounts};
pub use error::{StorageError, StorageErrorKind};
pub use listing::Filter;
pub use options::StoreOptions;
pub use retry::Retry;
pub use runtime::block_on;
pub use sharded::{
    EpochSamples, IndexedShard, ShardEpochs, ShardFormat, ShardIndex, ShardPlan, ShardResume,
    ShardSampler, ShardState, WebDataset, INDEX_FILE,
};
pub use shards::{shard_split, shard_split_for};
pub use shuffle::ShuffleBuffer;
pub use store::{Object, Store};
pub use tar::{TarWriter, MAX_MEMBER_BYTES, MAX_META_BYTES};

/// The `bytes` crate. Sample fields and whole reads are `bytes::Bytes`, a type your stage
/// functions name in their signatures; this is the version they must match.
pub use bytes;
/// The `object_store` crate this module is built on. Its types appear in this module's
/// API: paths ([`object_store::path::Path`]) and a store you configure yourself
/// (`Arc<dyn ObjectStore>`, for [`Store::from_object_store`]).
pub use object_store;
