//! Reading one rank's epoch: the samples come out in the sampler's order, read with one
//! ranged read per stretch of consecutive samples still owed (a whole run of a shard, in a
//! run that is not resuming), parsed as they arrive.
//!
//! The order is computed from positions alone (see [`BufferOrder`]), so skipping positions
//! (a resumed pipeline passing over what it had delivered) reads nothing; a sample is read
//! only when it is owed: handed out now, or still in the shuffle buffer. In an epoch a
//! resumed pipeline starts in, a position its state resolved comes out as an error saying
//! so, unread; the pipeline never takes it (its source skips what the state resolved).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::StreamExt;

use super::format::{ShardFormat, WebDataset};
use super::order::BufferOrder;
use super::plan::{Left, ReadMap};
use super::sampler::ShardSampler;
use crate::storage::error::{StorageError, StorageErrorKind};

// The reading side of a sampler: its epochs are read here (the sampler itself only plans).
impl<F: ShardFormat> ShardSampler<F> {
    /// This rank's samples of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> EpochSamples<F> {
        EpochSamples::new(self.clone(), epoch)
    }

    /// Every epoch from [`first_epoch`](Self::first_epoch) on, for `continuous_source`: each
    /// `into_iter` of it (or of a clone: they share one counter) gives the next epoch.
    pub fn epochs(&self) -> ShardEpochs<F> {
        ShardEpochs {
            sampler: self.clone(),
            next: Arc::new(AtomicU64::new(self.first_epoch())),
        }
    }
}

/// A new epoch at each pass; see [`ShardSampler::epochs`].
#[derive(Debug, Clone)]
pub struct ShardEpochs<F: ShardFormat = WebDataset> {
    sampler: ShardSampler<F>,
    next: Arc<AtomicU64>,
}

impl<F: ShardFormat> IntoIterator for ShardEpochs<F> {
    type Item = <EpochSamples<F> as Iterator>::Item;
    type IntoIter = EpochSamples<F>;

    fn into_iter(self) -> EpochSamples<F> {
        let epoch = self.next.fetch_add(1, Ordering::Relaxed);
        self.sampler.epoch(epoch)
    }
}

/// One rank's samples of one epoch; see [`ShardSampler::epoch`]. An exact-size iterator
/// whose `nth` reads nothing.
pub struct EpochSamples<F: ShardFormat = WebDataset> {
    sampler: ShardSampler<F>,
    epoch: u64,
    len: u64,
    /// Built at the first sample, so that an epoch a resumed pipeline passes over costs
    /// nothing.
    state: Option<Box<Reading<F>>>,
}

struct Reading<F: ShardFormat> {
    map: ReadMap,
    order: BufferOrder,
    /// What a resumed pipeline still owes of this epoch (`None`: everything).
    left: Option<Left>,
    /// Samples read and not handed out yet (they are in the shuffle buffer).
    read: HashMap<u64, Result<F::Sample, StorageError>>,
    /// Every reading position below it was read or passed over as not owed.
    cursor: u64,
    /// The open ranged read: the reading position of its next sample, and where it ends.
    stream: Option<OpenRead<F::Sample>>,
    /// The next run's read, started when the current one started, so that its first bytes
    /// are on their way before they are needed.
    next_run: Option<OpenRead<F::Sample>>,
    /// Shards that failed for good, with the error, so that their later samples fail at
    /// once instead of each re-reading the damage.
    failed: HashMap<u32, StorageError>,
    runtime: tokio::runtime::Runtime,
}

/// A ranged read running on the reading runtime, ahead of the consumer by at most
/// [`READ_AHEAD`] samples; dropping it stops the read.
struct OpenRead<S> {
    next: u64,
    end: u64,
    samples: tokio::sync::mpsc::Receiver<Result<S, StorageError>>,
    task: tokio::task::JoinHandle<()>,
}

impl<S> Drop for OpenRead<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Samples a ranged read parses ahead of the consumer (per open read; at most two are open,
/// the current one and the next run's).
const READ_AHEAD: usize = 32;

impl<F: ShardFormat> EpochSamples<F> {
    pub(crate) fn new(sampler: ShardSampler<F>, epoch: u64) -> Self {
        let len = sampler.epoch_len(epoch);
        Self {
            sampler,
            epoch,
            len,
            state: None,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn reading(&mut self) -> Result<&mut Reading<F>, StorageError> {
        if self.state.is_none() {
            let plan = &self.sampler.plan;
            // One thread of its own, so that reads go on while the pipeline works.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pipeline-shard-read")
                .enable_all()
                .build()
                .map_err(|e| {
                    StorageError::new(
                        StorageErrorKind::Other,
                        format!("cannot start a runtime for shard reads: {e}"),
                    )
                })?;
            self.state = Some(Box::new(Reading {
                map: ReadMap::new(plan.runs(&self.sampler.index, self.epoch)),
                order: plan.order(self.epoch, self.len),
                left: self.sampler.left_of(self.epoch),
                read: HashMap::new(),
                cursor: 0,
                stream: None,
                next_run: None,
                failed: HashMap::new(),
                runtime,
            }));
        }
        Ok(self.state.as_mut().expect("just built"))
    }
}

impl<F: ShardFormat> Reading<F> {
    /// Whether reading position `pos` (at or past the order's) must be read: it is in the
    /// buffer, or not yet in it, and the resumed pipeline owes it.
    fn owed(&self, pos: u64) -> bool {
        (pos >= self.order.pushed() || self.order.holds(pos))
            && self.left.as_ref().is_none_or(|left| left.is_needed(pos))
    }

    /// The sample at reading position `pos`, which the order has just handed out.
    fn sample(&mut self, sampler: &ShardSampler<F>, pos: u64) -> Result<F::Sample, StorageError> {
        if let Some(sample) = self.read.remove(&pos) {
            return sample;
        }
        if pos < self.cursor {
            // Passed over as not owed (a state that does not match its pipeline): alone.
            self.open(sampler, pos, pos + 1);
            let sample = self.read_next(sampler);
            self.stream = None;
            return sample;
        }
        // Read forward from the cursor to `pos`, keeping the owed samples on the way (they
        // are in the buffer) and jumping over the rest.
        loop {
            while self.cursor < pos && !self.owed(self.cursor) {
                self.cursor += 1;
            }
            let at = self.cursor;
            if !matches!(&self.stream, Some(open) if open.next == at && open.next < open.end) {
                let end = self.stretch_end(at, pos);
                self.open(sampler, at, end);
            }
            let sample = self.read_next(sampler);
            self.cursor = at + 1;
            if at == pos {
                return sample;
            }
            self.read.insert(at, sample);
        }
    }

    /// The end of the stretch of owed positions from `at` (and `pos` itself) within `at`'s
    /// run: what one ranged read covers.
    fn stretch_end(&self, at: u64, pos: u64) -> u64 {
        let (run_index, _) = self.map.run_of(at);
        let run_end = self.map.start_of(run_index) + self.map.run(run_index).len();
        let mut end = at + 1;
        while end < run_end && (end == pos || self.owed(end)) {
            end += 1;
        }
        end
    }

    /// Opens a ranged read of reading positions `from..end` (one run's), or takes it from
    /// the read started ahead; then starts the next run's read if it will be needed.
    fn open(&mut self, sampler: &ShardSampler<F>, from: u64, end: u64) {
        self.stream = match self.next_run.take() {
            Some(ahead) if ahead.next == from && ahead.end == end => Some(ahead),
            _ => Some(self.spawn_read(sampler, from, end)),
        };
        let (run_index, _) = self.map.run_of(from);
        let run_end = self.map.start_of(run_index) + self.map.run(run_index).len();
        if end == run_end && run_end < self.map.len() && self.owed(run_end) {
            let ahead_end = self.stretch_end(run_end, run_end);
            self.next_run = Some(self.spawn_read(sampler, run_end, ahead_end));
        }
    }

    fn spawn_read(&self, sampler: &ShardSampler<F>, from: u64, end: u64) -> OpenRead<F::Sample> {
        let (run_index, within) = self.map.run_of(from);
        let run = self.map.run(run_index);
        let shard = &sampler.index.shards()[run.shard as usize];
        let first = run.start + within;
        let counter = sampler.bytes_read.clone();
        let mut samples = sampler
            .format
            .read(&sampler.store, shard, first..first + (end - from));
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let task = self.runtime.spawn(async move {
            while let Some(sample) = samples.next().await {
                if let Ok(s) = &sample {
                    counter.fetch_add(F::bytes(s), Ordering::Relaxed);
                }
                if tx.send(sample).await.is_err() {
                    return;
                }
            }
        });
        OpenRead {
            next: from,
            end,
            samples: rx,
            task,
        }
    }

    /// The open read's next sample, checked against the index.
    fn read_next(&mut self, sampler: &ShardSampler<F>) -> Result<F::Sample, StorageError> {
        let open = self.stream.as_mut().expect("a read is open");
        let pos = open.next;
        open.next += 1;
        let (shard_no, sample_no) = self.map.locate(pos);
        if let Some(e) = self.failed.get(&shard_no) {
            return Err(StorageError::new(e.kind(), e.message()));
        }
        let shard = &sampler.index.shards()[shard_no as usize];
        let result = match open.samples.blocking_recv() {
            Some(Ok(sample)) => sampler
                .format
                .check(&sampler.store, shard, sample_no, &sample)
                .map(|()| sample),
            Some(Err(e)) => Err(e),
            None => Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!(
                    "shard {} ends before sample {sample_no} that its index lists: the \
                     shard changed since it was indexed",
                    sampler.store.url_of(&sampler.store.path(shard.name()))
                ),
            )),
        };
        if let Err(e) = &result {
            // The rest of the read is not trusted; a later sample of this shard fails
            // with the same error rather than reading the damage again.
            self.stream = None;
            self.failed
                .insert(shard_no, StorageError::new(e.kind(), e.message()));
        }
        result
    }
}

impl<F: ShardFormat> Iterator for EpochSamples<F> {
    type Item = Result<F::Sample, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let sampler = self.sampler.clone();
        let state = match self.reading() {
            Ok(state) => state,
            Err(e) => {
                self.len = 0;
                return Some(Err(e));
            }
        };
        let n = state.order.handed_out();
        let pos = state.order.next_pos()?;
        if state.left.as_ref().is_some_and(|left| left.is_resolved(n)) {
            // The resumed pipeline passes over it: not read.
            state.read.remove(&pos);
            return Some(Err(StorageError::new(
                StorageErrorKind::Other,
                format!(
                    "sample {n} of epoch {} was delivered before the resume and is not read again",
                    self.epoch
                ),
            )));
        }
        Some(state.sample(&sampler, pos))
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        let state = match self.reading() {
            Ok(state) => state,
            Err(e) => {
                self.len = 0;
                return Some(Err(e));
            }
        };
        for _ in 0..n {
            let pos = state.order.next_pos()?;
            state.read.remove(&pos);
        }
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let handed = self.state.as_ref().map_or(0, |s| s.order.handed_out());
        let left = usize::try_from(self.len.saturating_sub(handed)).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl<F: ShardFormat> ExactSizeIterator for EpochSamples<F> {}

impl<F: ShardFormat> std::fmt::Debug for EpochSamples<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSamples")
            .field("epoch", &self.epoch)
            .field("len", &self.len)
            .finish()
    }
}
