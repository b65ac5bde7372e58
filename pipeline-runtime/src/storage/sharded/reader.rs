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
use std::sync::atomic::Ordering;

use futures::stream::{BoxStream, StreamExt};

use super::order::BufferOrder;
use super::plan::{Left, ReadMap};
use super::sampler::ShardSampler;
use crate::storage::error::{StorageError, StorageErrorKind};
use crate::storage::webdataset::{read_shard_range, Sample};

/// One rank's samples of one epoch; see [`ShardSampler::epoch`]. An exact-size iterator
/// whose `nth` reads nothing.
pub struct EpochSamples {
    sampler: ShardSampler,
    epoch: u64,
    len: u64,
    /// Built at the first sample, so that an epoch a resumed pipeline passes over costs
    /// nothing.
    state: Option<Box<Reading>>,
}

struct Reading {
    map: ReadMap,
    order: BufferOrder,
    /// What a resumed pipeline still owes of this epoch (`None`: everything).
    left: Option<Left>,
    /// Samples read and not handed out yet (they are in the shuffle buffer).
    read: HashMap<u64, Result<Sample, StorageError>>,
    /// The open ranged read: the reading position of its next sample, and where it ends.
    stream: Option<OpenRead>,
    /// Shards that failed for good, with the error, so that their later samples fail at
    /// once instead of each re-reading the damage.
    failed: HashMap<u32, StorageError>,
    runtime: tokio::runtime::Runtime,
}

struct OpenRead {
    next: u64,
    end: u64,
    samples: BoxStream<'static, Result<Sample, StorageError>>,
}

impl EpochSamples {
    pub(crate) fn new(sampler: ShardSampler, epoch: u64) -> Self {
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

    fn reading(&mut self) -> Result<&mut Reading, StorageError> {
        if self.state.is_none() {
            let plan = &self.sampler.plan;
            let runtime = tokio::runtime::Builder::new_current_thread()
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
                stream: None,
                failed: HashMap::new(),
                runtime,
            }));
        }
        Ok(self.state.as_mut().expect("just built"))
    }
}

impl Reading {
    /// Whether reading position `pos` (at or past the order's) must be read: it is in the
    /// buffer, or not yet in it, and the resumed pipeline owes it.
    fn owed(&self, pos: u64) -> bool {
        (pos >= self.order.pushed() || self.order.holds(pos))
            && self.left.as_ref().is_none_or(|left| left.is_needed(pos))
    }

    /// The sample at reading position `pos`, which the order has just handed out.
    fn sample(&mut self, sampler: &ShardSampler, pos: u64) -> Result<Sample, StorageError> {
        if let Some(sample) = self.read.remove(&pos) {
            return sample;
        }
        // Read forward to `pos`, keeping the owed samples on the way (they are in the
        // buffer) and jumping over the rest.
        loop {
            let next = match &self.stream {
                Some(open) if open.next < open.end => open.next,
                _ => self.open_at(sampler, pos),
            };
            if next > pos {
                // Not reached by the open read: `pos` alone.
                self.stream = None;
                continue;
            }
            let sample = self.read_next(sampler);
            if next == pos {
                return sample;
            }
            if self.owed(next) {
                self.read.insert(next, sample);
            }
        }
    }

    /// Opens a ranged read from the first owed position at or after the cursor... which,
    /// with nothing open, is `pos` itself. Returns the reading position it starts at.
    fn open_at(&mut self, sampler: &ShardSampler, pos: u64) -> u64 {
        let (run_index, _) = self.map.run_of(pos);
        let run_start = self.map.start_of(run_index);
        let run = self.map.run(run_index);
        // The stretch of owed positions from `pos` within its run: one ranged read.
        let run_end = run_start + run.len();
        let mut end = pos + 1;
        while end < run_end && self.owed(end) {
            end += 1;
        }
        let shard = &sampler.index.shards()[run.shard as usize];
        let first = run.start + (pos - run_start);
        let bytes = shard.byte_range(first..first + (end - pos));
        let counter = sampler.bytes_read.clone();
        let path = sampler.store.path(shard.name());
        let samples = read_shard_range(&sampler.store, path, bytes.clone(), first)
            .inspect(move |sample| {
                if let Ok(s) = sample {
                    counter.fetch_add(s.byte_len() as u64, Ordering::Relaxed);
                }
            })
            .boxed();
        self.stream = Some(OpenRead {
            next: pos,
            end,
            samples,
        });
        pos
    }

    /// The open read's next sample, checked against the index.
    fn read_next(&mut self, sampler: &ShardSampler) -> Result<Sample, StorageError> {
        let open = self.stream.as_mut().expect("a read is open");
        let pos = open.next;
        open.next += 1;
        let (shard_no, sample_no) = self.map.locate(pos);
        if let Some(e) = self.failed.get(&shard_no) {
            return Err(StorageError::new(e.kind(), e.message()));
        }
        let shard = &sampler.index.shards()[shard_no as usize];
        let expected_at = shard.byte_range(sample_no..sample_no + 1).start;
        let got = self.runtime.block_on(open.samples.next());
        let result = match got {
            Some(Ok(sample)) if sample.offset == expected_at => Ok(sample),
            Some(Ok(sample)) => Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!(
                    "shard {} has a sample at byte {} where its index says sample {sample_no} \
                     starts at byte {expected_at}: the shard changed since it was indexed",
                    sample.shard, sample.offset
                ),
            )),
            Some(Err(e)) => Err(e),
            None => Err(StorageError::new(
                StorageErrorKind::Corrupt,
                format!(
                    "shard {} ends before sample {sample_no} (byte {expected_at}) that its \
                     index lists: the shard changed since it was indexed",
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

impl Iterator for EpochSamples {
    type Item = Result<Sample, StorageError>;

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

impl ExactSizeIterator for EpochSamples {}

impl std::fmt::Debug for EpochSamples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSamples")
            .field("epoch", &self.epoch)
            .field("len", &self.len)
            .finish()
    }
}
