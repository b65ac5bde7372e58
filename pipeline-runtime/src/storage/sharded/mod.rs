//! Indexed WebDataset shards as an exactly resumable source for distributed training.
//!
//! A [`ShardIndex`] lists a dataset's shards and where each sample starts in them (written
//! beside the shards as `index.json`, or built once by reading them). A [`ShardSampler`]
//! gives one rank its share of each epoch: shards shuffled by `(seed, epoch)`, a contiguous
//! block of their samples of a length its [`Split`](crate::distributed::Split) sets (so
//! every rank steps the same number of batches), read sequentially with one ranged read per
//! shard, then mixed by a shuffle buffer seeded by `(seed, epoch, rank)`.
//!
//! Each sample is a source position of the pipeline, so the pipeline's
//! [`ResumeState`](crate::ResumeState) says exactly which samples were delivered. A
//! [`ShardState`] saves it with the sampler's plan; resuming from it reads only the samples
//! still owed (ranged reads from their first byte: a finished sample is not read again, a
//! finished shard not at all), and on another world size
//! ([`ShardState::resume_all`]) the samples the old ranks still owed are split across the
//! new ones.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_runtime::distributed::{Rank, Split};
//! use pipeline_runtime::storage::{block_on, ShardIndex, ShardSampler, Store};
//! use pipeline_runtime::PipelineBuilder;
//!
//! let store = Store::open("s3://bucket/train")?;
//! let index = block_on(ShardIndex::load(&store))?;
//! let sampler = ShardSampler::new(&store, index, Rank::from_env()?)
//!     .seed(42)
//!     .shuffle_buffer(1000)
//!     .split(Split::DropRemainder);
//! let mut pipeline = PipelineBuilder::new()
//!     .continuous_source(sampler.epochs())
//!     .try_pipe(|sample| sample.map(|s| s.byte_len()))
//!     .aggregate(32)
//!     .sink()
//!     .track_resume(true)
//!     .build()?;
//! for batch in pipeline.epoch() {
//!     let _sizes = batch?;
//! }
//! # Ok(()) }
//! ```

mod format;
mod index;
mod order;
mod plan;
mod reader;
mod sampler;
mod state;

pub use format::{ShardFormat, WebDataset};
pub use index::{IndexedShard, ShardIndex, INDEX_FILE};
pub use plan::ShardPlan;
pub use reader::{EpochSamples, ShardEpochs};
pub use sampler::ShardSampler;
pub use state::{ShardResume, ShardState};

#[cfg(test)]
mod tests;
