//! The sharded, shuffled index source: what one rank reads each epoch.
//!
//! Epoch `e`'s order is a [`Permutation`] of `0..len` from `(seed, e)` (or `0..len` itself
//! without shuffling), split across ranks after shuffling by a [`Split`]. Looking up the
//! `i`-th item of a rank's epoch is O(1) and the sampler holds no per-item memory, so a
//! dataset of 10^9 items costs the same as one of ten.
//!
//! A sampler made to continue an epoch on another world size (see
//! [`DistributedState::resume`](super::DistributedState::resume)) reads, in that epoch, the
//! items the old ranks had left, split across the new ranks; the epochs after it are
//! ordinary.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::permutation::Permutation;
use super::rank::Rank;
use super::rng::ItemKey;
use super::split::Split;

/// A sampler's description: dataset, shuffling, world and rank, and the re-split epoch if it
/// continues one. Serialisable; it is part of a [`DistributedState`](super::DistributedState).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    len: u64,
    seed: u64,
    shuffle: bool,
    split: Split,
    rank: u32,
    world_size: u32,
    /// The epoch continued from a run on another world size.
    resplit: Option<Box<Resplit>>,
}

/// An epoch continued on a new world size: the old run's plan and, for each of its ranks,
/// what it had left of the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resplit {
    pub(crate) epoch: u64,
    /// The old run's plan (its rank 0; the rank of each part is its place in `left`).
    pub(crate) old: Plan,
    pub(crate) left: Vec<Leftover>,
}

/// What one old rank had left of the epoch: positions (in its order of the epoch) from
/// `frontier` on, and `pending` below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Leftover {
    pub(crate) frontier: u64,
    pub(crate) pending: Vec<u64>,
}

impl Plan {
    /// Items in the dataset.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the dataset is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The seed of the shuffles and of the items' generators.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether each epoch is shuffled.
    pub fn shuffle(&self) -> bool {
        self.shuffle
    }

    /// How an epoch is split across ranks.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Ranks in the world.
    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    /// The epoch this plan continues from a run on another world size, if any.
    pub fn resplit_epoch(&self) -> Option<u64> {
        self.resplit.as_ref().map(|r| r.epoch)
    }

    pub(crate) fn with_rank(&self, rank: u32) -> Plan {
        Plan {
            rank,
            ..self.clone()
        }
    }

    pub(crate) fn with_resplit(&self, resplit: Option<Resplit>) -> Plan {
        Plan {
            resplit: resplit.map(Box::new),
            ..self.clone()
        }
    }
}

/// One rank's share of each epoch of a dataset of `len` items, shuffled per epoch by
/// `(seed, epoch)`. Cheap to clone.
///
/// As a source: [`epoch`](Self::epoch) gives one epoch's [`ItemKey`]s (for
/// `PipelineBuilder::source`), [`epochs`](Self::epochs) a new epoch at each pass (for
/// `continuous_source`).
#[derive(Clone)]
pub struct Sampler {
    inner: Arc<Inner>,
}

struct Inner {
    plan: Plan,
    remainder: Option<Remainder>,
}

/// The re-split epoch's items, compiled for lookup: every old rank's leftover, in rank
/// order, as one list to split across the new ranks.
struct Remainder {
    epoch: u64,
    parts: Vec<Part>,
    /// `starts[i]`: items in the parts before part `i`.
    starts: Vec<u64>,
    total: u64,
}

struct Part {
    old: Sampler,
    /// Pending positions below the old rank's epoch length, ascending.
    pending: Vec<u64>,
    /// The old rank's positions `from..len` are left too.
    from: u64,
    len: u64,
}

impl Part {
    fn count(&self) -> u64 {
        self.pending.len() as u64 + (self.len - self.from)
    }

    /// The old rank's position of this part's `k`-th item.
    fn position(&self, k: u64) -> u64 {
        match self.pending.get(k as usize) {
            Some(&p) => p,
            None => self.from + (k - self.pending.len() as u64),
        }
    }
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("plan", &self.inner.plan)
            .finish()
    }
}

impl Sampler {
    /// `rank`'s share of a dataset of `len` items: shuffled, seed 0,
    /// [`Split::DropRemainder`].
    pub fn new(len: u64, rank: Rank) -> Self {
        Self::from_checked(Plan {
            len,
            seed: 0,
            shuffle: true,
            split: Split::DropRemainder,
            rank: rank.rank,
            world_size: rank.world_size,
            resplit: None,
        })
    }

    /// The seed of the shuffles and of the items' generators (default 0).
    pub fn seed(self, seed: u64) -> Self {
        self.map_plan(|p| p.seed = seed)
    }

    /// Whether each epoch is shuffled (default: yes). Without, every epoch is `0..len` in
    /// order, split the same way.
    pub fn shuffle(self, shuffle: bool) -> Self {
        self.map_plan(|p| p.shuffle = shuffle)
    }

    /// How an epoch that does not divide evenly is split (default
    /// [`Split::DropRemainder`]).
    pub fn split(self, split: Split) -> Self {
        self.map_plan(|p| p.split = split)
    }

    fn map_plan(self, f: impl FnOnce(&mut Plan)) -> Self {
        let mut plan = self.inner.plan.clone();
        f(&mut plan);
        Self::from_checked(plan)
    }

    /// The sampler a plan describes (e.g. one read back from a state).
    pub fn from_plan(plan: Plan) -> Result<Self, String> {
        check_plan(&plan)?;
        Ok(Self::from_checked(plan))
    }

    fn from_checked(plan: Plan) -> Self {
        assert!(
            plan.world_size > 0 && plan.rank < plan.world_size,
            "rank {} of a world of {}",
            plan.rank,
            plan.world_size
        );
        let remainder = plan.resplit.as_deref().map(Remainder::compile);
        Self {
            inner: Arc::new(Inner { plan, remainder }),
        }
    }

    /// The sampler's description.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// The epoch [`epochs`](Self::epochs) starts with: 0, or the epoch a re-split
    /// continues.
    pub fn first_epoch(&self) -> u64 {
        self.inner.remainder.as_ref().map_or(0, |r| r.epoch)
    }

    /// The items this rank reads in `epoch`.
    pub fn epoch_len(&self, epoch: u64) -> u64 {
        let plan = &self.inner.plan;
        let total = match &self.inner.remainder {
            Some(r) if r.epoch == epoch => r.total,
            _ => plan.len,
        };
        plan.split.len(total, plan.rank, plan.world_size)
    }

    /// The dataset index of this rank's `pos`-th item of `epoch` (`pos` below
    /// [`epoch_len`](Self::epoch_len)). O(1) (O(log ranks) in a re-split epoch).
    pub fn index(&self, epoch: u64, pos: u64) -> u64 {
        self.lookup(epoch, pos, None)
    }

    fn lookup(&self, epoch: u64, pos: u64, perm: Option<&Permutation>) -> u64 {
        let plan = &self.inner.plan;
        if let Some(r) = self.inner.remainder.as_ref().filter(|r| r.epoch == epoch) {
            let j = plan
                .split
                .position(r.total, plan.rank, plan.world_size, pos);
            return r.index(j);
        }
        let j = plan
            .split
            .position(plan.len, plan.rank, plan.world_size, pos);
        match (plan.shuffle, perm) {
            (false, _) => j,
            (true, Some(perm)) => perm.get(j),
            (true, None) => Permutation::new(plan.len, plan.seed, epoch).get(j),
        }
    }

    /// The key of this rank's `pos`-th item of `epoch`.
    pub fn key(&self, epoch: u64, pos: u64) -> ItemKey {
        ItemKey {
            seed: self.inner.plan.seed,
            epoch,
            index: self.index(epoch, pos),
        }
    }

    /// This rank's items of `epoch`, in order: an exact-size iterator whose `nth` is O(1).
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let plan = &self.inner.plan;
        EpochIter {
            perm: Permutation::new(plan.len, plan.seed, epoch),
            sampler: self.clone(),
            epoch,
            pos: 0,
            end: self.epoch_len(epoch),
        }
    }

    /// Every epoch from [`first_epoch`](Self::first_epoch) on, for `continuous_source`: each
    /// `into_iter` of it (or of a clone of it: they share one counter) gives the next
    /// epoch's [`EpochIter`].
    pub fn epochs(&self) -> Epochs {
        self.epochs_from(self.first_epoch())
    }

    /// Like [`epochs`](Self::epochs), from `epoch` on.
    pub fn epochs_from(&self, epoch: u64) -> Epochs {
        Epochs {
            sampler: self.clone(),
            next: Arc::new(AtomicU64::new(epoch)),
        }
    }
}

impl Remainder {
    fn compile(resplit: &Resplit) -> Self {
        let mut parts = Vec::with_capacity(resplit.left.len());
        let mut starts = Vec::with_capacity(resplit.left.len());
        let mut total = 0;
        for (rank, left) in resplit.left.iter().enumerate() {
            let old = Sampler::from_checked(resplit.old.with_rank(rank as u32));
            let len = old.epoch_len(resplit.epoch);
            let part = Part {
                pending: left.pending.iter().copied().filter(|&p| p < len).collect(),
                from: left.frontier.min(len),
                len,
                old,
            };
            starts.push(total);
            total += part.count();
            parts.push(part);
        }
        Self {
            epoch: resplit.epoch,
            parts,
            starts,
            total,
        }
    }

    /// The dataset index of the `j`-th item left.
    fn index(&self, j: u64) -> u64 {
        let part = self.starts.partition_point(|&s| s <= j) - 1;
        let p = &self.parts[part];
        p.old.index(self.epoch, p.position(j - self.starts[part]))
    }
}

fn check_plan(plan: &Plan) -> Result<(), String> {
    if plan.world_size == 0 || plan.rank >= plan.world_size {
        return Err(format!(
            "rank {} is not below the world size {}",
            plan.rank, plan.world_size
        ));
    }
    if let Some(r) = &plan.resplit {
        if r.left.len() != r.old.world_size as usize {
            return Err(format!(
                "the re-split epoch lists {} old ranks for a world of {}",
                r.left.len(),
                r.old.world_size
            ));
        }
        check_plan(&r.old)?;
    }
    Ok(())
}

/// One rank's items of one epoch; see [`Sampler::epoch`].
#[derive(Debug, Clone)]
pub struct EpochIter {
    sampler: Sampler,
    perm: Permutation,
    epoch: u64,
    pos: u64,
    end: u64,
}

impl EpochIter {
    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Iterator for EpochIter {
    type Item = ItemKey;

    #[inline]
    fn next(&mut self) -> Option<ItemKey> {
        if self.pos >= self.end {
            return None;
        }
        let index = self.sampler.lookup(self.epoch, self.pos, Some(&self.perm));
        self.pos += 1;
        Some(ItemKey {
            seed: self.sampler.inner.plan.seed,
            epoch: self.epoch,
            index,
        })
    }

    fn nth(&mut self, n: usize) -> Option<ItemKey> {
        self.pos = self.pos.saturating_add(n as u64).min(self.end);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochIter {}

/// A new epoch at each pass; see [`Sampler::epochs`].
#[derive(Debug, Clone)]
pub struct Epochs {
    sampler: Sampler,
    next: Arc<AtomicU64>,
}

impl IntoIterator for Epochs {
    type Item = ItemKey;
    type IntoIter = EpochIter;

    fn into_iter(self) -> EpochIter {
        let epoch = self.next.fetch_add(1, Ordering::Relaxed);
        self.sampler.epoch(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(r: u32, w: u32) -> Rank {
        Rank::new(r, w).unwrap()
    }

    #[test]
    fn ranks_read_disjoint_equal_shares_of_each_shuffled_epoch() {
        for (len, world) in [(1000u64, 4u32), (1001, 4), (7, 3), (3, 8)] {
            for epoch in 0..3 {
                let mut all = Vec::new();
                let mut lens = Vec::new();
                for r in 0..world {
                    let s = Sampler::new(len, rank(r, world)).seed(11);
                    let keys: Vec<ItemKey> = s.epoch(epoch).collect();
                    assert!(keys.iter().all(|k| k.epoch == epoch && k.seed == 11));
                    lens.push(keys.len());
                    all.extend(keys.iter().map(|k| k.index));
                }
                assert!(lens.iter().all(|&l| l as u64 == len / u64::from(world)));
                all.sort_unstable();
                let n = all.len();
                all.dedup();
                assert_eq!(all.len(), n, "disjoint");
                assert!(all.iter().all(|&i| i < len));
            }
        }
    }

    #[test]
    fn epochs_differ_and_no_shuffle_keeps_the_order() {
        let s = Sampler::new(100, rank(1, 2)).seed(5);
        let e0: Vec<u64> = s.epoch(0).map(|k| k.index).collect();
        let e1: Vec<u64> = s.epoch(1).map(|k| k.index).collect();
        assert_ne!(e0, e1);
        let plain = s.clone().shuffle(false);
        let e: Vec<u64> = plain.epoch(3).map(|k| k.index).collect();
        assert_eq!(e, (0..50).map(|i| 1 + 2 * i).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_gives_a_new_epoch_at_each_pass_and_nth_is_random_access() {
        let s = Sampler::new(50, rank(0, 1)).seed(2);
        let epochs = s.epochs();
        let a: Vec<ItemKey> = epochs.clone().into_iter().collect();
        let b: Vec<ItemKey> = epochs.into_iter().collect();
        assert_eq!((a[0].epoch, b[0].epoch), (0, 1));
        assert_eq!(a, s.epoch(0).collect::<Vec<_>>());
        let mut it = s.epoch(1);
        assert_eq!(it.len(), 50);
        assert_eq!(it.nth(20), Some(b[20]));
        assert_eq!(it.next(), Some(b[21]));
        assert_eq!(it.len(), 28);
        assert_eq!(it.nth(100), None);

        let big = Sampler::new(1_000_000_000, rank(3, 8)).seed(1);
        let mut it = big.epoch(4);
        assert_eq!(it.len(), 125_000_000);
        let k = it.nth(124_999_999).unwrap();
        assert_eq!(k.index, big.index(4, 124_999_999));
        assert_eq!(it.next(), None);
    }
}
