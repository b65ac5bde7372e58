//! Deterministic per-item randomness: a small, fast generator seeded from
//! `(seed, epoch, index)`, so that an augmentation draws the same numbers for the same item
//! whatever the concurrency, executor, output order or number of ranks.

use serde::{Deserialize, Serialize};

/// Which item of which epoch: what a [`Sampler`](super::Sampler) yields. Carry it with the
/// item through the stages and draw its randomness from [`rng`](Self::rng).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemKey {
    /// The sampler's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u64,
    /// The item's index in the dataset (`0..len`).
    pub index: u64,
}

impl ItemKey {
    /// The item's generator: the same numbers for the same `(seed, epoch, index)`.
    pub fn rng(&self) -> Rng {
        rng_for(*self)
    }

    /// An independent generator of the item for `stream` (e.g. one per stage), so that two
    /// stages drawing for the same item do not draw the same numbers.
    pub fn rng_stream(&self, stream: u64) -> Rng {
        let h = mix64(self.seed ^ 0x243f_6a88_85a3_08d3);
        let h = mix64(h ^ self.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let h = mix64(h ^ self.index.wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        Rng::seed_from_u64(mix64(h ^ stream.wrapping_mul(0x1656_67b1_9e37_79f9)))
    }
}

/// The generator of `key`'s item (stream 0; see [`ItemKey::rng_stream`]).
pub fn rng_for(key: ItemKey) -> Rng {
    key.rng_stream(0)
}

/// SplitMix64's finaliser: a bijective mixing of 64 bits.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256++ (Blackman and Vigna): 32 bytes of state, a few ns a number; not for
/// cryptography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` by SplitMix64.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(x)
        };
        let mut s = [next(), next(), next(), next()];
        if s == [0; 4] {
            s[0] = 1; // the one state xoshiro cannot leave
        }
        Self { s }
    }

    /// Its state, for a resume state to carry.
    pub(crate) fn state(&self) -> [u64; 4] {
        self.s
    }

    /// The generator whose state is `s` (from [`state`](Self::state)); `None` for the
    /// all-zero state, which xoshiro cannot leave (a state made up by hand).
    pub(crate) fn from_state(s: [u64; 4]) -> Option<Self> {
        (s != [0; 4]).then_some(Self { s })
    }

    /// A generator for the stream of numbers named by `parts` (a seed, an epoch, ...): the
    /// same parts in the same order give the same numbers (shard and sample shuffles).
    #[cfg_attr(not(feature = "storage"), allow(dead_code))]
    pub(crate) fn from_parts(parts: &[u64]) -> Self {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for &p in parts {
            h = mix64(h ^ p);
        }
        Self::seed_from_u64(h)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `0..n`, unbiased (Lemire's method); `n` must be at least 1.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A number in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_parts_give_the_same_numbers_and_others_differ() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::from_parts(&[1, 2]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::from_parts(&[1, 2]).next_u64(),
            Rng::from_parts(&[1, 3]).next_u64()
        );
        assert_ne!(
            Rng::from_parts(&[1, 2]).next_u64(),
            Rng::from_parts(&[2, 1]).next_u64()
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = Rng::from_parts(&[7]);
        let mut v: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    fn key(epoch: u64, index: u64) -> ItemKey {
        ItemKey {
            seed: 7,
            epoch,
            index,
        }
    }

    #[test]
    fn the_same_key_draws_the_same_numbers_and_other_keys_others() {
        let draw = |k: ItemKey| {
            (0..4)
                .map(|_| 0)
                .scan(k.rng(), |r, _: i32| Some(r.next_u64()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(key(0, 5)), draw(key(0, 5)));
        let firsts: std::collections::HashSet<u64> = (0..3)
            .flat_map(|e| (0..1000).map(move |i| key(e, i).rng().next_u64()))
            .collect();
        assert_eq!(
            firsts.len(),
            3000,
            "distinct keys draw distinct first numbers"
        );
        assert_ne!(
            key(0, 5).rng_stream(1).next_u64(),
            key(0, 5).rng_stream(2).next_u64()
        );
        let other_seed = ItemKey {
            seed: 8,
            ..key(0, 5)
        };
        assert_ne!(other_seed.rng().next_u64(), key(0, 5).rng().next_u64());
    }

    #[test]
    fn xoshiro256pp_matches_its_reference_output() {
        // The reference implementation's first outputs from state [1, 2, 3, 4].
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let out: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(out, [41943041, 58720359, 3588806011781223]);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::seed_from_u64(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let f = rng.next_f64();
        assert!((0.0..1.0).contains(&f));
        let mut v: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
