//! The seeded randomness of shard and sample shuffles: SplitMix64, small and the same on
//! every platform, so a seed gives the same order everywhere and in every release.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for a stream of numbers named by `parts` (a seed, an epoch, an index...).
    pub(crate) fn new(parts: &[u64]) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &p in parts {
            state = mix(state ^ p);
        }
        Self(state)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`), without modulo bias worth speaking of for the sizes of a
    /// shard list or a shuffle buffer (Lemire's multiply-shift).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn the_same_parts_give_the_same_numbers_and_others_differ() {
        let a: Vec<u64> = (0..4)
            .map(|_| SplitMix64::new(&[1, 2]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SplitMix64::new(&[1, 2]).next_u64(),
            SplitMix64::new(&[1, 3]).next_u64()
        );
        assert_ne!(
            SplitMix64::new(&[1, 2]).next_u64(),
            SplitMix64::new(&[2, 1]).next_u64()
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_below_stays_below() {
        let mut rng = SplitMix64::new(&[7]);
        let mut v: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }
}
