//! A shuffle of `0..n` with O(1) random access and O(1) memory: a keyed bijection.
//!
//! A Feistel network permutes the `b`-bit numbers, `2^b` the smallest power of two at least
//! `n`; *cycle-walking* (applying it again while the result is `n` or more) restricts it to
//! `0..n` and stays a bijection. The value is split into a high and a low half (of
//! `ceil(b/2)` and `floor(b/2)` bits); each round XORs one half with a keyed hash of the
//! other, which is invertible whatever the halves' sizes. Since `2^b < 2n`, an index walks
//! fewer than two steps on average.

use super::rng::mix64;

const ROUNDS: usize = 6;

/// A permutation of `0..len` chosen by `(seed, epoch)`; `Copy`, no heap, any `len` up to
/// `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permutation {
    len: u64,
    low_bits: u32,
    low_mask: u64,
    high_mask: u64,
    keys: [u64; ROUNDS],
}

impl Permutation {
    /// The permutation of `0..len` for `epoch` of a run seeded with `seed`.
    pub fn new(len: u64, seed: u64, epoch: u64) -> Self {
        let bits = if len <= 1 {
            0
        } else {
            64 - (len - 1).leading_zeros()
        };
        let low_bits = bits / 2;
        let high_bits = bits - low_bits;
        let mask = |b: u32| if b == 0 { 0 } else { u64::MAX >> (64 - b) };
        let mut k =
            mix64(seed ^ 0x5851_f42d_4c95_7f2d) ^ mix64(epoch.wrapping_add(0x14057b7ef767814f));
        let keys = std::array::from_fn(|_| {
            k = mix64(k.wrapping_add(0x9e37_79b9_7f4a_7c15));
            k
        });
        Self {
            len,
            low_bits,
            low_mask: mask(low_bits),
            high_mask: mask(high_bits),
            keys,
        }
    }

    /// The number of items permuted.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it permutes nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `i` goes: the `i`-th item of the shuffled order. Panics unless `i < len`.
    pub fn get(&self, i: u64) -> u64 {
        assert!(
            i < self.len,
            "index {i} out of a permutation of {}",
            self.len
        );
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.len {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mut high = x >> self.low_bits;
        let mut low = x & self.low_mask;
        for (round, key) in self.keys.iter().enumerate() {
            if round % 2 == 0 {
                high ^= mix64(low ^ key) & self.high_mask;
            } else {
                low ^= mix64(high ^ key) & self.low_mask;
            }
        }
        (high << self.low_bits) | low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_bijection(p: &Permutation) -> bool {
        let mut seen = vec![false; p.len() as usize];
        for i in 0..p.len() {
            let j = p.get(i) as usize;
            if seen[j] {
                return false;
            }
            seen[j] = true;
        }
        true
    }

    #[test]
    fn it_is_a_bijection_for_many_lengths() {
        let mut lengths: Vec<u64> = (0..=70).collect();
        lengths.extend([
            97, 101, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025, 4099,
        ]);
        lengths.extend([65_521, 65_536, 65_537, 100_003]);
        for n in lengths {
            for (seed, epoch) in [(0, 0), (1, 0), (1, 1), (42, 7)] {
                let p = Permutation::new(n, seed, epoch);
                assert!(is_bijection(&p), "n = {n}, seed {seed}, epoch {epoch}");
            }
        }
    }

    #[test]
    fn it_depends_on_seed_and_epoch_only() {
        let order = |seed, epoch| -> Vec<u64> {
            let p = Permutation::new(1000, seed, epoch);
            (0..1000).map(|i| p.get(i)).collect()
        };
        assert_eq!(order(3, 1), order(3, 1));
        assert_ne!(order(3, 1), order(3, 2));
        assert_ne!(order(3, 1), order(4, 1));
        assert_ne!(order(3, 1), (0..1000).collect::<Vec<_>>());
        // Shuffled, not shifted: few items keep their place.
        let fixed = order(3, 1)
            .iter()
            .enumerate()
            .filter(|&(i, &j)| i as u64 == j)
            .count();
        assert!(fixed < 20, "{fixed} fixed points");
    }

    #[test]
    fn a_billion_items_cost_no_memory() {
        fn no_heap<T: Copy>(_: &T) {}
        let n = 1_000_000_000u64;
        let p = Permutation::new(n, 9, 3);
        no_heap(&p); // `Copy`: nothing it owns lives on the heap
        assert!(std::mem::size_of::<Permutation>() <= 96);
        let mut seen = std::collections::HashSet::new();
        for k in 0..10_000u64 {
            let i = k * (n / 10_000) + k % 97;
            let j = p.get(i);
            assert!(j < n);
            assert!(seen.insert(j), "two indices map to {j}");
        }
        assert!(p.get(n - 1) < n);
        let last = Permutation::new(u64::MAX, 1, 1);
        assert!(last.get(u64::MAX - 1) < u64::MAX);
    }
}
