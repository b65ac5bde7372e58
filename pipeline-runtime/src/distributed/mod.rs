//! Multi-GPU training: which rank this process is, its share of each shuffled epoch, per-item
//! randomness that replays bit-exactly, and states to resume from, on the same number of
//! ranks or another.
//!
//! The launcher (torchrun, SLURM, mpirun) is the distributed engine: ranks never talk to
//! each other. Each rank reads its [`Rank`] from the environment, builds the same
//! [`Sampler`] (dataset length, seed) for its rank, and feeds its pipeline from it:
//!
//! ```
//! use pipeline_runtime::distributed::{Rank, Sampler};
//! use pipeline_runtime::PipelineBuilder;
//!
//! let rank = Rank::from_env()?; // a job of one outside a launcher
//! let sampler = Sampler::new(1_000, rank).seed(17);
//! let mut pipeline = PipelineBuilder::new()
//!     .continuous_source(sampler.epochs())
//!     .pipe(|key| {
//!         let mut rng = key.rng(); // the same numbers for this item in every run
//!         (key.index, rng.next_u64())
//!     })
//!     .concurrency(4)
//!     .aggregate(10)
//!     .sink()
//!     .track_resume(true)
//!     .build()?;
//! let batches = pipeline.epoch().count();
//! assert_eq!(batches, 1_000 / rank.world_size as usize / 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One file per concept: [`rank`](Rank) (who am I), [`permutation`](Permutation) (the
//! shuffle), [`split`](Split) (shares of ranks), the [`sampler`](Sampler), the per-item
//! [`rng`](ItemKey::rng), and the saved [`state`](DistributedState). The guide's chapter
//! "Distributed training and resume" explains them.

mod permutation;
mod rank;
mod rng;
mod sampler;
mod split;
mod state;

pub use permutation::Permutation;
pub use rank::{local_rank, Rank, RankError, LAUNCHER_VAR};
#[cfg(feature = "storage")]
pub(crate) use rng::mix64;
pub use rng::{rng_for, ItemKey, Rng};
pub use sampler::{EpochIter, Epochs, Plan, Sampler};
pub use split::Split;
pub use state::{DistributedState, Resume, StateError};
