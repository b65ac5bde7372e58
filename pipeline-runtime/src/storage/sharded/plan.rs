//! Which samples a rank reads in an epoch, in what order, and what it has left when it
//! stops.
//!
//! An epoch's samples are the shards in an order shuffled by `(seed, epoch)`, each read
//! from its first sample to its last, as one sequence. A rank takes one contiguous block of
//! that sequence (so it reads whole runs of consecutive samples: one ranged read per shard,
//! at most two shards cut at a block's edge), of the length its [`Split`] gives: every rank
//! the same count with `DropRemainder` (the last few samples of the sequence are not read
//! that epoch) and `Pad` (the sequence wraps around to fill the last block), or lengths
//! that differ by at most one with `Even`. The rank then hands its block out through a
//! seeded shuffle buffer ([`BufferOrder`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::index::ShardIndex;
use super::order::BufferOrder;
use crate::distributed::{Rng, Split};

/// Samples `start..end` of shard `shard` (its place in the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SampleRun {
    pub(crate) shard: u32,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl SampleRun {
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// A shard sampler's description: the dataset (by its index's fingerprint), the shuffles,
/// the split, the world and the rank, and the epoch it continues from a run on another
/// world size, if any. Serialisable; it is part of a [`ShardState`](super::ShardState).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub(crate) dataset: u64,
    pub(crate) samples: u64,
    pub(crate) seed: u64,
    pub(crate) shuffle: bool,
    pub(crate) buffer: u32,
    pub(crate) split: Split,
    pub(crate) rank: u32,
    pub(crate) world_size: u32,
    /// The epoch continued from a run on another world size.
    #[serde(default)]
    pub(crate) resplit: Option<Box<Resplit>>,
}

/// An epoch continued on a new world size: what every old rank had left of it, in old-rank
/// order, split across the new ranks as an epoch's sequence is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resplit {
    pub(crate) epoch: u64,
    pub(crate) left: Vec<SampleRun>,
}

impl ShardPlan {
    /// The seed of the shard and sample shuffles.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Ranks in the world.
    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    /// How an epoch is split across ranks.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The shuffle buffer's capacity in samples (0 or 1: no sample shuffle).
    pub fn shuffle_buffer(&self) -> usize {
        self.buffer as usize
    }

    /// The epoch this plan continues from a run on another world size, if any.
    pub fn resplit_epoch(&self) -> Option<u64> {
        self.resplit.as_ref().map(|r| r.epoch)
    }

    pub(crate) fn with_rank(&self, rank: u32) -> Self {
        Self {
            rank,
            ..self.clone()
        }
    }

    /// Checks a plan read from elsewhere against the index it is used with.
    pub(crate) fn check(&self, index: &ShardIndex) -> Result<(), String> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(format!(
                "rank {} is not below the world size {}",
                self.rank, self.world_size
            ));
        }
        if self.dataset != index.fingerprint() || self.samples != index.samples() {
            return Err(format!(
                "the state is for another dataset ({} samples, fingerprint {:016x}; this one \
                 has {} samples, fingerprint {:016x})",
                self.samples,
                self.dataset,
                index.samples(),
                index.fingerprint()
            ));
        }
        if let Some(r) = &self.resplit {
            let mut total = 0u64;
            for run in &r.left {
                let ok = index
                    .shards()
                    .get(run.shard as usize)
                    .is_some_and(|s| run.start < run.end && run.end <= s.samples());
                if !ok {
                    return Err(format!(
                        "the re-split epoch names samples outside the dataset ({run:?})"
                    ));
                }
                total += run.len();
            }
            if total > index.samples() {
                return Err("the re-split epoch lists more samples than the dataset has".into());
            }
        }
        Ok(())
    }

    /// The sequence the ranks' blocks are cut from in `epoch`.
    fn sequence(&self, index: &ShardIndex, epoch: u64) -> Vec<SampleRun> {
        if let Some(r) = self.resplit.as_ref().filter(|r| r.epoch == epoch) {
            return r.left.clone();
        }
        let mut order: Vec<u32> = (0..index.shards().len() as u32).collect();
        if self.shuffle {
            Rng::from_parts(&[self.seed, epoch, 0x5a4d]).shuffle(&mut order);
        }
        order
            .into_iter()
            .map(|shard| SampleRun {
                shard,
                start: 0,
                end: index.shards()[shard as usize].samples(),
            })
            .filter(|run| run.len() > 0)
            .collect()
    }

    /// This rank's block of `epoch`, in reading order.
    pub(crate) fn runs(&self, index: &ShardIndex, epoch: u64) -> Vec<SampleRun> {
        let sequence = self.sequence(index, epoch);
        let total: u64 = sequence.iter().map(SampleRun::len).sum();
        let (rank, world) = (u64::from(self.rank), u64::from(self.world_size));
        let split = self.split_of(epoch);
        let len = split.len(total, self.rank, self.world_size);
        let start = match split {
            Split::Even => rank * (total / world) + rank.min(total % world),
            Split::DropRemainder | Split::Pad => rank * len,
        };
        cut(&sequence, total, start, len)
    }

    /// The samples this rank reads in `epoch`.
    pub(crate) fn epoch_len(&self, index: &ShardIndex, epoch: u64) -> u64 {
        let total = match self.resplit.as_ref().filter(|r| r.epoch == epoch) {
            Some(r) => r.left.iter().map(SampleRun::len).sum(),
            None => index.samples(),
        };
        self.split_of(epoch).len(total, self.rank, self.world_size)
    }

    /// The split of `epoch`. A re-split epoch delivers every sample the old ranks owed
    /// exactly once, so `DropRemainder` splits it as `Even` (lengths differ by at most
    /// one); `Pad` keeps equal lengths by repeating a few.
    fn split_of(&self, epoch: u64) -> Split {
        match self.split {
            Split::DropRemainder if self.resplit_epoch() == Some(epoch) => Split::Even,
            split => split,
        }
    }

    /// The order in which the rank hands out its `len` samples of `epoch`.
    pub(crate) fn order(&self, epoch: u64, len: u64) -> BufferOrder {
        let resplit = u64::from(self.resplit_epoch() == Some(epoch));
        let rng = Rng::from_parts(&[
            self.seed,
            epoch,
            u64::from(self.rank),
            u64::from(self.world_size),
            resplit,
            0xb0ff,
        ]);
        BufferOrder::new(len, self.buffer as usize, rng)
    }

    /// What the rank had left of `epoch` when it had handed out every position below
    /// `frontier` and those in `pending` (ascending, below `frontier`) were still owed.
    pub(crate) fn left(
        &self,
        index: &ShardIndex,
        epoch: u64,
        frontier: u64,
        pending: &[u64],
    ) -> Left {
        let len = self.epoch_len(index, epoch);
        let mut order = self.order(epoch, len);
        let mut needed = BTreeSet::new();
        let mut owed = pending.iter().copied().filter(|&p| p < len).peekable();
        for p in 0..frontier.min(len) {
            let Some(q) = order.next_pos() else { break };
            if owed.peek() == Some(&p) {
                owed.next();
                needed.insert(q);
            }
        }
        needed.extend(order.held());
        Left {
            needed,
            from: order.pushed(),
            len,
            frontier,
            pending: pending.iter().copied().filter(|&p| p < len).collect(),
        }
    }
}

/// What a rank had left of an epoch, in reading positions: `needed` below `from`, and all
/// of `from..len`.
#[derive(Debug, Clone)]
pub(crate) struct Left {
    pub(crate) needed: BTreeSet<u64>,
    pub(crate) from: u64,
    pub(crate) len: u64,
    /// The same in handing-out positions: all from `frontier` on, and `pending` below it.
    frontier: u64,
    pending: BTreeSet<u64>,
}

impl Left {
    /// Whether the sample handed out `n`-th was resolved (delivered, failed or dropped)
    /// before the stop.
    pub(crate) fn is_resolved(&self, n: u64) -> bool {
        n < self.frontier && !self.pending.contains(&n)
    }

    pub(crate) fn is_needed(&self, pos: u64) -> bool {
        pos >= self.from || self.needed.contains(&pos)
    }

    /// The samples left, as runs of the dataset, in reading order.
    pub(crate) fn sample_runs(&self, map: &ReadMap) -> Vec<SampleRun> {
        let mut out: Vec<SampleRun> = Vec::new();
        let mut push = |run: SampleRun| match out.last_mut() {
            Some(last) if last.shard == run.shard && last.end == run.start => last.end = run.end,
            _ => out.push(run),
        };
        for &pos in &self.needed {
            let (shard, sample) = map.locate(pos);
            push(SampleRun {
                shard,
                start: sample,
                end: sample + 1,
            });
        }
        for run in map.range(self.from..self.len) {
            push(run);
        }
        out
    }
}

/// Reading positions of a block mapped to the dataset's samples.
#[derive(Debug, Clone)]
pub(crate) struct ReadMap {
    runs: Vec<SampleRun>,
    /// The reading position of each run's first sample.
    starts: Vec<u64>,
}

impl ReadMap {
    pub(crate) fn new(runs: Vec<SampleRun>) -> Self {
        let mut starts = Vec::with_capacity(runs.len());
        let mut at = 0;
        for run in &runs {
            starts.push(at);
            at += run.len();
        }
        Self { runs, starts }
    }

    /// The run holding reading position `pos`, and `pos`'s place in it.
    pub(crate) fn run_of(&self, pos: u64) -> (usize, u64) {
        let i = self.starts.partition_point(|&s| s <= pos) - 1;
        (i, pos - self.starts[i])
    }

    /// (shard, sample in the shard) of reading position `pos`.
    pub(crate) fn locate(&self, pos: u64) -> (u32, u64) {
        let (i, within) = self.run_of(pos);
        (self.runs[i].shard, self.runs[i].start + within)
    }

    pub(crate) fn run(&self, i: usize) -> SampleRun {
        self.runs[i]
    }

    /// Reading positions in all.
    pub(crate) fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0) + self.runs.last().map_or(0, SampleRun::len)
    }

    /// The reading position of run `i`'s first sample.
    pub(crate) fn start_of(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// Reading positions `range` as runs of the dataset.
    fn range(&self, range: std::ops::Range<u64>) -> Vec<SampleRun> {
        let total =
            self.starts.last().copied().unwrap_or(0) + self.runs.last().map_or(0, SampleRun::len);
        cut(
            &self.runs,
            total,
            range.start,
            range.end.saturating_sub(range.start),
        )
    }
}

/// `len` samples of the sequence `runs` (of `total` samples) from `start`, wrapping around
/// past its end.
fn cut(runs: &[SampleRun], total: u64, start: u64, len: u64) -> Vec<SampleRun> {
    let mut out = Vec::new();
    if total == 0 || len == 0 {
        return out;
    }
    let mut at = start % total;
    let mut left = len;
    while left > 0 {
        let mut offset = 0;
        for run in runs {
            if left == 0 {
                break;
            }
            if at >= offset + run.len() {
                offset += run.len();
                continue;
            }
            let from = run.start + (at - offset);
            let take = (run.end - from).min(left);
            out.push(SampleRun {
                shard: run.shard,
                start: from,
                end: from + take,
            });
            left -= take;
            at += take;
            offset += run.len();
        }
        at = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sharded::index::IndexedShard;

    fn index(counts: &[u64]) -> ShardIndex {
        let shards = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let starts: Vec<u64> = (0..n).map(|k| k * 1024).collect();
                IndexedShard::new(format!("s{i}.tar"), n * 1024 + 1024, starts, n * 1024).unwrap()
            })
            .collect();
        ShardIndex::new(shards).unwrap()
    }

    fn plan(index: &ShardIndex, split: Split, rank: u32, world: u32) -> ShardPlan {
        ShardPlan {
            dataset: index.fingerprint(),
            samples: index.samples(),
            seed: 5,
            shuffle: true,
            buffer: 0,
            split,
            rank,
            world_size: world,
            resplit: None,
        }
    }

    fn samples(index: &ShardIndex, p: &ShardPlan, epoch: u64) -> Vec<(u32, u64)> {
        p.runs(index, epoch)
            .iter()
            .flat_map(|r| (r.start..r.end).map(move |k| (r.shard, k)))
            .collect()
    }

    #[test]
    fn ranks_take_contiguous_equal_blocks_by_the_split_rule() {
        let idx = index(&[7, 3, 10, 1, 5]); // 26 samples
        for (split, world, lens, union) in [
            (Split::DropRemainder, 4, vec![6, 6, 6, 6], 24),
            (Split::Pad, 4, vec![7, 7, 7, 7], 26),
            (Split::Even, 4, vec![7, 7, 6, 6], 26),
            (Split::Even, 3, vec![9, 9, 8], 26),
        ] {
            let mut all = Vec::new();
            for r in 0..world {
                let p = plan(&idx, split, r, world);
                let s = samples(&idx, &p, 1);
                assert_eq!(s.len() as u64, p.epoch_len(&idx, 1));
                assert_eq!(s.len(), lens[r as usize], "{split:?} rank {r}");
                assert!(p.runs(&idx, 1).len() <= 5, "few runs: read sequentially");
                all.extend(s);
            }
            let distinct: BTreeSet<_> = all.iter().copied().collect();
            assert_eq!(distinct.len(), union, "{split:?}");
            if split != Split::Pad {
                assert_eq!(all.len(), distinct.len(), "{split:?}: disjoint");
            }
        }
        let p = plan(&idx, Split::Even, 0, 1);
        assert_ne!(
            samples(&idx, &p, 0),
            samples(&idx, &p, 1),
            "shards reshuffled per epoch"
        );
    }

    #[test]
    fn what_is_left_is_what_the_order_had_not_handed_out_plus_the_pending() {
        let idx = index(&[40, 30]);
        let mut p = plan(&idx, Split::Even, 0, 1);
        p.buffer = 8;
        let len = p.epoch_len(&idx, 0);
        let mut order = p.order(0, len);
        let handed: Vec<u64> = (0..30).map(|_| order.next_pos().unwrap()).collect();
        let pending = [3u64, 17, 29];
        let left = p.left(&idx, 0, 30, &pending);
        for q in 0..len {
            let was_handed = handed.iter().position(|&h| h == q);
            let owed = match was_handed {
                Some(i) => pending.contains(&(i as u64)),
                None => true,
            };
            assert_eq!(left.is_needed(q), owed, "position {q}");
        }
        let map = ReadMap::new(p.runs(&idx, 0));
        let runs = left.sample_runs(&map);
        let count: u64 = runs.iter().map(SampleRun::len).sum();
        assert_eq!(
            count,
            (0..len).filter(|&q| left.is_needed(q)).count() as u64
        );
    }
}
