//! The shard sampler: one rank's samples of each epoch of an indexed WebDataset, as a
//! pipeline source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::format::{ShardFormat, WebDataset};
use super::index::ShardIndex;
use super::plan::{Left, ShardPlan};
use crate::distributed::{Rank, Split};
use crate::resume::ResumeState;
use crate::storage::store::Store;

/// One rank's share of each epoch of the dataset `index` describes, read from `store`.
/// Cheap to clone (the clones share the index and the byte counter).
///
/// Each epoch, the shards are shuffled by `(seed, epoch)` (unless
/// [`shuffle`](Self::shuffle)`(false)`) and read as one sequence; the rank takes a
/// contiguous block of it whose length its [`Split`] sets (every rank the same count, unless
/// `Split::Even`), and hands the block's samples out through a shuffle buffer seeded by
/// `(seed, epoch, rank)`. The guide's chapter "Reading from storage" has the rules.
///
/// As a source: `continuous_source(sampler.epochs())`; each item is one sample
/// (`Result<F::Sample, StorageError>`: a sample that cannot be read is an error in its
/// place, so that every position of the epoch is accounted for). `F` is the kind of shard:
/// [`WebDataset`] tar shards by default, or Parquet files of rows
/// (`storage::parquet::ParquetRows`, feature `parquet`). With
/// [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from), a pipeline resumes
/// exactly, reading only the samples it still owes (see [`ShardState`](super::ShardState)).
#[derive(Clone)]
pub struct ShardSampler<F: ShardFormat = WebDataset> {
    pub(crate) format: F,
    pub(crate) index: Arc<ShardIndex>,
    pub(crate) store: Store,
    pub(crate) plan: ShardPlan,
    /// Where the pipeline resumes, for reading only what it still owes.
    pub(crate) resumed: Option<Arc<Resumed>>,
    pub(crate) bytes_read: Arc<AtomicU64>,
}

/// A resumed pipeline's state, in the sampler's epochs.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// The sampler's epoch the state's positions count from.
    pub(crate) epoch: u64,
    pub(crate) frontier: u64,
    pub(crate) pending: Vec<u64>,
}

impl<F: ShardFormat> std::fmt::Debug for ShardSampler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSampler")
            .field("store", &self.store.url())
            .field("shards", &self.index.shards().len())
            .field("plan", &self.plan)
            .finish()
    }
}

impl ShardSampler {
    /// Rank `rank`'s share of the WebDataset `index` describes, in `store` (the dataset's
    /// root): seed 0, shards shuffled, no sample shuffle buffer, `Split::DropRemainder`.
    pub fn new(store: &Store, index: impl Into<Arc<ShardIndex>>, rank: Rank) -> Self {
        Self::with_format(store, index, rank, WebDataset)
    }
}

impl<F: ShardFormat> ShardSampler<F> {
    /// [`new`](ShardSampler::new) for shards of another kind.
    pub fn with_format(
        store: &Store,
        index: impl Into<Arc<ShardIndex>>,
        rank: Rank,
        format: F,
    ) -> Self {
        let index = index.into();
        Self {
            format,
            plan: ShardPlan {
                dataset: index.fingerprint(),
                samples: index.samples(),
                seed: 0,
                shuffle: true,
                buffer: 0,
                split: Split::DropRemainder,
                rank: rank.rank,
                world_size: rank.world_size,
                resplit: None,
            },
            index,
            store: store.clone(),
            resumed: None,
            bytes_read: Arc::default(),
        }
    }

    /// The seed of the shard order and of the shuffle buffer.
    pub fn seed(mut self, seed: u64) -> Self {
        self.plan.seed = seed;
        self
    }

    /// Whether the shard order is shuffled each epoch (default: yes).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.plan.shuffle = shuffle;
        self
    }

    /// Shuffles the rank's samples within a buffer of `capacity` samples (0 or 1: none). The
    /// buffer holds that many samples' bytes; a larger one moves samples further.
    pub fn shuffle_buffer(mut self, capacity: usize) -> Self {
        self.plan.buffer = u32::try_from(capacity).unwrap_or(u32::MAX);
        self
    }

    /// What to do with the samples that do not divide evenly across the ranks.
    pub fn split(mut self, split: Split) -> Self {
        self.plan.split = split;
        self
    }

    /// The sampler's description, as a state records it.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// The dataset's index.
    pub fn index(&self) -> &ShardIndex {
        &self.index
    }

    /// The epoch [`epochs`](Self::epochs) starts with: 0, or the epoch a re-split continues.
    pub fn first_epoch(&self) -> u64 {
        self.plan.resplit_epoch().unwrap_or(0)
    }

    /// The samples this rank reads in `epoch`.
    pub fn epoch_len(&self, epoch: u64) -> u64 {
        self.plan.epoch_len(&self.index, epoch)
    }

    /// Bytes of shard data this sampler and its clones have received.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// The same sampler, resuming a pipeline at `state` (its positions count from the
    /// sampler's first epoch): its epochs read only the samples the state still owes.
    pub(crate) fn resuming(mut self, state: &ResumeState) -> Self {
        self.resumed = Some(Arc::new(Resumed {
            epoch: self.first_epoch() + state.epoch(),
            frontier: state.frontier(),
            pending: state.pending().to_vec(),
        }));
        self
    }

    /// What the resumed pipeline still owes of `epoch`, if it resumes in it or its
    /// positions run into it.
    pub(crate) fn left_of(&self, epoch: u64) -> Option<Left> {
        let resumed = self.resumed.as_ref()?;
        if epoch < resumed.epoch {
            return None;
        }
        let mut offset = 0u64;
        for e in resumed.epoch..epoch {
            offset += self.epoch_len(e);
        }
        if resumed.frontier <= offset {
            return None;
        }
        let len = self.epoch_len(epoch);
        let pending: Vec<u64> = resumed
            .pending
            .iter()
            .filter(|&&p| p >= offset && p < offset + len)
            .map(|&p| p - offset)
            .collect();
        Some(
            self.plan
                .left(&self.index, epoch, resumed.frontier - offset, &pending),
        )
    }
}
