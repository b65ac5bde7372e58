//! Splitting an epoch's order across ranks, after shuffling: rank `r` of `w` takes the
//! positions `r, r + w, r + 2w, ...` of the epoch's order (as PyTorch's
//! `DistributedSampler` does), so ranks' shares are disjoint and interleaved.

use serde::{Deserialize, Serialize};

/// What to do with the `len % world_size` items that do not divide evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Split {
    /// Every rank takes `len / world_size` items; the last `len % world_size` of the
    /// epoch's order are not seen that epoch (a different few each epoch when shuffled).
    #[default]
    DropRemainder,
    /// Every rank takes `ceil(len / world_size)` items; the order wraps around, so the first
    /// `world_size - len % world_size` items of the epoch's order are seen twice.
    Pad,
    /// For evaluation: every item exactly once; ranks' lengths differ by at most one.
    Even,
}

impl Split {
    /// Items rank `rank` of `world` takes out of `len`.
    pub fn len(self, len: u64, rank: u32, world: u32) -> u64 {
        let (rank, world) = (u64::from(rank), u64::from(world));
        match self {
            Split::DropRemainder => len / world,
            Split::Pad => len.div_ceil(world),
            Split::Even if rank < len => (len - rank - 1) / world + 1,
            Split::Even => 0,
        }
    }

    /// The position in the epoch's order of the `i`-th item of rank `rank` of `world`
    /// (`i` below [`len`](Self::len)).
    #[inline]
    pub fn position(self, len: u64, rank: u32, world: u32, i: u64) -> u64 {
        let p = u64::from(rank) + u64::from(world) * i;
        match self {
            Split::Pad => p % len,
            Split::DropRemainder | Split::Even => p,
        }
    }

    /// Items of the epoch no rank sees.
    pub fn dropped(self, len: u64, world: u32) -> u64 {
        match self {
            Split::DropRemainder => len % u64::from(world),
            Split::Pad | Split::Even => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(split: Split, len: u64, world: u32) -> Vec<Vec<u64>> {
        (0..world)
            .map(|r| {
                (0..split.len(len, r, world))
                    .map(|i| split.position(len, r, world, i))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn shares_are_disjoint_complete_and_as_long_as_documented() {
        for len in [0u64, 1, 2, 3, 7, 10, 16, 97, 100] {
            for world in [1u32, 2, 3, 4, 7, 8, 16] {
                for split in [Split::DropRemainder, Split::Pad, Split::Even] {
                    let shares = shares(split, len, world);
                    let mut all: Vec<u64> = shares.concat();
                    assert!(all.iter().all(|&p| p < len.max(1)));
                    let lens: Vec<usize> = shares.iter().map(Vec::len).collect();
                    let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                    all.sort_unstable();
                    match split {
                        Split::DropRemainder => {
                            assert_eq!(min, max);
                            let kept = len - split.dropped(len, world);
                            assert_eq!(all, (0..kept).collect::<Vec<_>>(), "{len} / {world}");
                        }
                        Split::Even => {
                            assert!(max - min <= 1);
                            assert_eq!(all, (0..len).collect::<Vec<_>>(), "{len} / {world}");
                        }
                        Split::Pad => {
                            assert_eq!(min, max);
                            all.dedup();
                            assert_eq!(all, (0..len).collect::<Vec<_>>(), "{len} / {world}");
                        }
                    }
                }
            }
        }
    }
}
