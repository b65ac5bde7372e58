//! A pipeline as burn's [`DataLoader`] (feature `burn`): a burn user keeps their model and
//! training loop, and the batches come from a pipeline instead of burn's worker threads.
//!
//! [`PipelineLoader`] wraps a function that builds the pipeline of one part of the data for
//! one device. The data's order is a [`Sampler`]'s (one shuffled permutation per epoch,
//! this rank's share of it), and the function gets the item keys to read as a
//! [`SliceEpochs`] for `continuous_source`:
//!
//! - each [`iter`](DataLoader::iter) is one epoch of that pipeline, which is built on the
//!   first `iter` and kept running between epochs, so the next epoch's first batches are
//!   loaded while the trainer validates or saves (burn's own loader starts its workers'
//!   pass at each `iter`);
//! - [`num_items`](DataLoader::num_items) is the items of an epoch;
//! - [`slice(start, end)`](DataLoader::slice) keeps positions `start..end` of every epoch's
//!   order: the slices that burn's `split_dataloader` makes are disjoint parts of the same
//!   permutation, and together they cover it;
//! - [`to_device`](DataLoader::to_device) gives the function another device: its batches
//!   are made there.
//!
//! An epoch left unfinished (its iterator dropped early) is abandoned: its pipeline is
//! stopped and the next `iter` starts the next epoch with a new one, so no batch of an old
//! epoch turns up in a new one. One epoch is read at a time: an `iter` while another
//! epoch's iterator is alive yields an error (a second reader takes a [`slice`]).
//!
//! [`slice`]: DataLoader::slice
//!
//! Why here and not in `pipeline-runtime`: burn's loader API changes with each minor
//! release (0.22 dropped the backend type parameter and made items `Result`s), and the
//! runtime should not follow burn's releases or make every user compile burn. The adapter
//! is this one file, to depend on through this crate or to copy.

use std::iter::{Skip, Take};
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::Device;
use pipeline_runtime::distributed::{EpochIter, ItemKey, Sampler};
use pipeline_runtime::error::BuildError;
use pipeline_runtime::stats::PipelineStats;
use pipeline_runtime::Pipeline;

/// Builds the pipeline of one part of the data: read `keys` with `continuous_source`,
/// make batches on `device`.
pub type BuildPipeline<O> =
    dyn Fn(SliceEpochs, &Device) -> Result<Pipeline<O>, BuildError> + Send + Sync;

/// A burn [`DataLoader`] whose batches come from a pipeline; see the [module](self).
pub struct PipelineLoader<O> {
    sampler: Sampler,
    /// The positions of each epoch's order this loader reads.
    range: Range<u64>,
    batch_size: usize,
    device: Device,
    build: Arc<BuildPipeline<O>>,
    /// The warm pipeline, locked by the epoch being read.
    pipeline: Mutex<Option<Pipeline<O>>>,
    /// The epoch the next `iter` reads.
    next_epoch: AtomicU64,
    /// The pipeline's statistics at the end of the last epoch read (or abandoned).
    stats: Mutex<Option<PipelineStats>>,
}

impl<O> std::fmt::Debug for PipelineLoader<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineLoader")
            .field("sampler", &self.sampler)
            .field("range", &self.range)
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
            .field("next_epoch", &self.next_epoch)
            .finish_non_exhaustive()
    }
}

impl<O: Send + 'static> PipelineLoader<O> {
    /// Every item of `sampler`'s epochs, in batches of (at most) `batch_size` made on the
    /// default device by the pipelines `build` makes. `batch_size` only feeds burn's
    /// progress (`items_processed`); the pipeline does the batching.
    pub fn new<F>(sampler: Sampler, batch_size: usize, build: F) -> Self
    where
        F: Fn(SliceEpochs, &Device) -> Result<Pipeline<O>, BuildError> + Send + Sync + 'static,
    {
        let first = sampler.first_epoch();
        let len = sampler.epoch_len(first);
        Self::part(
            sampler,
            0..len,
            batch_size.max(1),
            Device::default(),
            Arc::new(build),
            first,
        )
    }

    /// The same loader making its batches on `device` (as `to_device` does, but typed).
    pub fn with_device(self, device: &Device) -> Self {
        let next = self.next_epoch();
        Self::part(
            self.sampler,
            self.range,
            self.batch_size,
            device.clone(),
            self.build,
            next,
        )
    }

    fn part(
        sampler: Sampler,
        range: Range<u64>,
        batch_size: usize,
        device: Device,
        build: Arc<BuildPipeline<O>>,
        next_epoch: u64,
    ) -> Self {
        Self {
            sampler,
            range,
            batch_size,
            device,
            build,
            pipeline: Mutex::new(None),
            next_epoch: AtomicU64::new(next_epoch),
            stats: Mutex::new(None),
        }
    }

    /// The positions of each epoch's order this loader reads.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The device its batches are made on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The epoch the next [`iter`](DataLoader::iter) reads.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch.load(Ordering::Relaxed)
    }

    /// The pipeline's statistics at the end of the last epoch read or abandoned (`None`
    /// before): the trainer's wait per batch, each stage's busy share, the bottleneck.
    pub fn stats(&self) -> Option<PipelineStats> {
        lock(&self.stats).clone()
    }

    fn derive(&self, range: Range<u64>, device: Device) -> Arc<dyn DataLoader<O>> {
        Arc::new(Self::part(
            self.sampler.clone(),
            range,
            self.batch_size,
            device,
            self.build.clone(),
            self.next_epoch(),
        ))
    }
}

/// A panic while an epoch was read leaves nothing half-updated that matters here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<O: Send + 'static> DataLoader<O> for PipelineLoader<O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let total = self.num_items();
        let fail = |error: DatasetError| -> Box<dyn DataLoaderIterator<O> + 'a> {
            Box::new(Failed {
                error: Some(error),
                total,
                batches: PhantomData,
            })
        };
        // A second reader of the same loader would take batches of this epoch (or wait
        // forever on its own thread): it is told so instead.
        let mut pipeline = match self.pipeline.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return fail(DatasetError::new(std::io::Error::other(format!(
                    "epoch {} of this loader is being read; drop its iterator first, or \
                     slice the loader for a second reader",
                    self.next_epoch()
                ))))
            }
        };
        if pipeline.is_none() {
            let keys = SliceEpochs {
                sampler: self.sampler.clone(),
                range: self.range.clone(),
                next: Arc::new(AtomicU64::new(self.next_epoch())),
            };
            match (self.build)(keys, &self.device) {
                Ok(built) => *pipeline = Some(built),
                // The epoch did not start: the next `iter` tries it again.
                Err(e) => return fail(DatasetError::new(e)),
            }
        }
        Box::new(EpochBatches {
            loader: self,
            pipeline,
            batches: 0,
            ended: false,
        })
    }

    fn num_items(&self) -> usize {
        usize::try_from(self.range.end - self.range.start).unwrap_or(usize::MAX)
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<O>> {
        self.derive(self.range.clone(), device.clone())
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<O>> {
        let at = |i: usize| (self.range.start + i as u64).min(self.range.end);
        self.derive(at(start)..at(end.max(start)), self.device.clone())
    }
}

/// One epoch's batches, holding the loader's pipeline until the epoch ends.
struct EpochBatches<'a, O: Send + 'static> {
    loader: &'a PipelineLoader<O>,
    pipeline: MutexGuard<'a, Option<Pipeline<O>>>,
    batches: usize,
    ended: bool,
}

impl<O: Send + 'static> Iterator for EpochBatches<'_, O> {
    type Item = Result<O, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let pipeline = self.pipeline.as_mut()?;
        match pipeline.epoch().next() {
            Some(Ok(batch)) => {
                self.batches += 1;
                Some(Ok(batch))
            }
            Some(Err(e)) => {
                // The pipeline has ended with an error: the next epoch gets a new one.
                self.finish(true);
                Some(Err(DatasetError::new(e)))
            }
            None => {
                self.finish(false);
                None
            }
        }
    }
}

impl<O: Send + 'static> EpochBatches<'_, O> {
    /// The epoch is over: keep the statistics, count the epoch, and drop the pipeline if
    /// the next epoch must not use it.
    fn finish(&mut self, drop_pipeline: bool) {
        self.ended = true;
        self.loader.next_epoch.fetch_add(1, Ordering::Relaxed);
        if let Some(pipeline) = self.pipeline.as_ref() {
            *lock(&self.loader.stats) = Some(pipeline.stats());
        }
        if drop_pipeline {
            *self.pipeline = None;
        }
    }
}

impl<O: Send + 'static> Drop for EpochBatches<'_, O> {
    fn drop(&mut self) {
        if !self.ended {
            // Abandoned mid-epoch: the pipeline is loading the rest of this epoch, which
            // the next `iter` must not see. Stop it; the next epoch gets a new one.
            self.finish(true);
        }
    }
}

impl<O: Send + 'static> DataLoaderIterator<O> for EpochBatches<'_, O> {
    fn progress(&self) -> Progress {
        let total = self.loader.num_items();
        let done = self.batches.saturating_mul(self.loader.batch_size);
        Progress::new(done.min(total), total, Some("items".to_owned()))
    }
}

/// An epoch that could not start: its one error, then the end.
struct Failed<O> {
    error: Option<DatasetError>,
    total: usize,
    batches: PhantomData<fn() -> O>,
}

impl<O> Iterator for Failed<O> {
    type Item = Result<O, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.error.take().map(Err)
    }
}

impl<O> DataLoaderIterator<O> for Failed<O> {
    fn progress(&self) -> Progress {
        Progress::new(0, self.total, Some("items".to_owned()))
    }
}

/// The item keys of one loader's part of every epoch, for `continuous_source`: each
/// `into_iter` (of it or of a clone: they share one counter) is the next epoch's positions
/// `range` of the sampler's order.
#[derive(Debug, Clone)]
pub struct SliceEpochs {
    sampler: Sampler,
    range: Range<u64>,
    next: Arc<AtomicU64>,
}

impl SliceEpochs {
    /// The keys of `epoch` (whatever the counter says), for tests and for reading one
    /// epoch with a plain `source`.
    pub fn epoch(&self, epoch: u64) -> Take<Skip<EpochIter>> {
        let len = (self.range.end - self.range.start) as usize;
        self.sampler
            .epoch(epoch)
            .skip(self.range.start as usize)
            .take(len)
    }
}

impl IntoIterator for SliceEpochs {
    type Item = ItemKey;
    type IntoIter = Take<Skip<EpochIter>>;

    fn into_iter(self) -> Self::IntoIter {
        let epoch = self.next.fetch_add(1, Ordering::Relaxed);
        self.epoch(epoch)
    }
}
