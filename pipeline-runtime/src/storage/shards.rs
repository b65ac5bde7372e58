//! Which shards a rank reads in an epoch: the whole list shuffled by `(seed, epoch)`, then
//! dealt out round-robin, so that the ranks' lists are disjoint, together cover every shard
//! once, and change from epoch to epoch the same way on every rank. Ranks never talk to
//! each other: each computes the same permutation and takes its own part.
//!
//! The rank and the world size come from the launcher (torchrun's `RANK`/`WORLD_SIZE`,
//! SLURM, mpirun): [`shard_split_for`] takes them as [`Rank::from_env`] reads them;
//! [`shard_split`] takes plain numbers (0 and 1 for one process).

use crate::distributed::{Rank, Rng};

/// [`shard_split`] for `rank` (e.g. [`Rank::from_env`], this process's rank as the launcher
/// set it).
pub fn shard_split_for<T: Clone>(shards: &[T], rank: &Rank, seed: u64, epoch: u64) -> Vec<T> {
    shard_split(
        shards,
        rank.rank as usize,
        rank.world_size as usize,
        seed,
        epoch,
    )
}

/// The part of `shards` that `rank` of `world` reads in `epoch`: the list shuffled by
/// `(seed, epoch)` (the same permutation on every rank), then every `world`-th shard
/// starting at `rank`. When the list does not divide evenly, the first
/// `shards.len() % world` ranks get one shard more; no shard is repeated or dropped.
///
/// # Panics
///
/// If `world` is 0 or `rank >= world`.
pub fn shard_split<T: Clone>(
    shards: &[T],
    rank: usize,
    world: usize,
    seed: u64,
    epoch: u64,
) -> Vec<T> {
    assert!(world > 0, "shard_split: world must be at least 1");
    assert!(
        rank < world,
        "shard_split: rank {rank} is not below world {world}"
    );
    let mut order: Vec<usize> = (0..shards.len()).collect();
    Rng::from_parts(&[seed, epoch]).shuffle(&mut order);
    order
        .into_iter()
        .skip(rank)
        .step_by(world)
        .map(|i| shards[i].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{shard_split, shard_split_for};
    use crate::distributed::Rank;

    #[test]
    fn a_launcher_rank_takes_the_same_part_as_its_numbers() {
        let shards: Vec<u32> = (0..17).collect();
        for r in 0..3 {
            let rank = Rank::new(r, 3).unwrap();
            assert_eq!(
                shard_split_for(&shards, &rank, 9, 2),
                shard_split(&shards, r as usize, 3, 9, 2)
            );
        }
    }

    #[test]
    fn ranks_get_disjoint_parts_that_cover_the_list() {
        let shards: Vec<u32> = (0..10).collect();
        let parts: Vec<Vec<u32>> = (0..3).map(|r| shard_split(&shards, r, 3, 42, 0)).collect();
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [4, 3, 3]);
        let mut all: Vec<u32> = parts.concat();
        all.sort();
        assert_eq!(all, shards);
    }

    #[test]
    fn an_epoch_changes_the_order_and_a_replay_does_not() {
        let shards: Vec<u32> = (0..64).collect();
        let e0 = shard_split(&shards, 0, 1, 7, 0);
        assert_eq!(e0, shard_split(&shards, 0, 1, 7, 0));
        assert_ne!(e0, shard_split(&shards, 0, 1, 7, 1));
        assert_ne!(e0, shard_split(&shards, 0, 1, 8, 0));
        assert_ne!(e0, shards, "shuffled");
    }

    #[test]
    #[should_panic(expected = "rank 2 is not below world 2")]
    fn a_rank_outside_the_world_panics() {
        shard_split(&[1, 2, 3], 2, 2, 0, 0);
    }
}
