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
//! epoch turns up in a new one.
//!
//! Why here and not in `pipeline-runtime`: burn's loader API changes with each minor
//! release (0.22 dropped the backend type parameter and made items `Result`s), and the
//! runtime should not follow burn's releases or make every user compile burn. The adapter
//! is this one file, to depend on through this crate or to copy.

use std::iter::{Skip, Take};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    running: Mutex<Running<O>>,
}

/// The warm pipeline, if any, and the epoch the next `iter` reads.
struct Running<O> {
    pipeline: Option<Pipeline<O>>,
    next_epoch: u64,
    /// The statistics of the last pipeline dropped (an epoch abandoned or failed).
    last_stats: Option<PipelineStats>,
}

impl<O: Send + 'static> Running<O> {
    /// Stops the pipeline (its statistics kept): the next `iter` builds a new one.
    fn drop_pipeline(&mut self) -> Option<Pipeline<O>> {
        let pipeline = self.pipeline.take()?;
        self.last_stats = Some(pipeline.stats());
        Some(pipeline)
    }
}

impl<O> std::fmt::Debug for PipelineLoader<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineLoader")
            .field("sampler", &self.sampler)
            .field("range", &self.range)
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
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
            running: Mutex::new(Running {
                pipeline: None,
                next_epoch,
                last_stats: None,
            }),
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
        self.lock().next_epoch
    }

    /// The statistics of the running pipeline, or of the last one stopped (`None` before
    /// the first `iter`): the trainer's wait per batch and the bottleneck stage. Waits for
    /// an epoch being read to end.
    pub fn stats(&self) -> Option<PipelineStats> {
        let running = self.lock();
        match &running.pipeline {
            Some(pipeline) => Some(pipeline.stats()),
            None => running.last_stats.clone(),
        }
    }

    /// Stops the running pipeline; the next `iter` builds a new one. Returns the error the
    /// pipeline ended with, if any.
    pub fn stop(&self) -> Result<(), pipeline_runtime::PipelineError> {
        match self.lock().drop_pipeline() {
            Some(mut pipeline) => pipeline.stop(),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Running<O>> {
        // A panic while reading an epoch leaves nothing half-updated that matters here.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
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

impl<O: Send + 'static> DataLoader<O> for PipelineLoader<O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let mut running = self.lock();
        let mut failed = None;
        if running.pipeline.is_none() {
            let keys = SliceEpochs {
                sampler: self.sampler.clone(),
                range: self.range.clone(),
                next: Arc::new(AtomicU64::new(running.next_epoch)),
            };
            match (self.build)(keys, &self.device) {
                Ok(pipeline) => running.pipeline = Some(pipeline),
                Err(e) => failed = Some(DatasetError::new(e)),
            }
        }
        Box::new(EpochBatches {
            running,
            failed,
            batches: 0,
            batch_size: self.batch_size,
            total: self.num_items(),
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

/// One epoch's batches: holds the loader's lock, so a second `iter` of the same loader
/// waits for this epoch to end.
struct EpochBatches<'a, O: Send + 'static> {
    running: MutexGuard<'a, Running<O>>,
    /// The pipeline could not be built: yielded once, then the epoch ends.
    failed: Option<DatasetError>,
    batches: usize,
    batch_size: usize,
    total: usize,
    ended: bool,
}

impl<O: Send + 'static> Iterator for EpochBatches<'_, O> {
    type Item = Result<O, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.ended = true;
            return Some(Err(e));
        }
        if self.ended {
            return None;
        }
        let pipeline = self.running.pipeline.as_mut()?;
        match pipeline.epoch().next() {
            Some(Ok(batch)) => {
                self.batches += 1;
                Some(Ok(batch))
            }
            Some(Err(e)) => {
                // The pipeline has ended with an error: the next epoch gets a new one.
                self.running.drop_pipeline();
                self.finish();
                Some(Err(DatasetError::new(e)))
            }
            None => {
                self.finish();
                None
            }
        }
    }
}

impl<O: Send + 'static> EpochBatches<'_, O> {
    fn finish(&mut self) {
        if !self.ended {
            self.ended = true;
            self.running.next_epoch += 1;
        }
    }
}

impl<O: Send + 'static> Drop for EpochBatches<'_, O> {
    fn drop(&mut self) {
        if !self.ended {
            // Abandoned mid-epoch: the pipeline is loading the rest of this epoch, which
            // the next `iter` must not see. Stop it; the next epoch gets a new one.
            self.running.drop_pipeline();
            self.finish();
        }
    }
}

impl<O: Send + 'static> DataLoaderIterator<O> for EpochBatches<'_, O> {
    fn progress(&self) -> Progress {
        Progress::new(
            (self.batches * self.batch_size).min(self.total),
            self.total,
            Some("items".to_owned()),
        )
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
