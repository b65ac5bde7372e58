//! A seeded shuffle of a stream within a bounded buffer, as an aggregator: it holds up to
//! `capacity` items and, once full, passes on a randomly chosen one for each item that comes
//! in. Memory is bounded by `capacity` items; the larger it is, the further an item can move.
//!
//! ```
//! use pipeline_runtime::storage::ShuffleBuffer;
//! use pipeline_runtime::PipelineBuilder;
//!
//! let pipeline = PipelineBuilder::new()
//!     .source(0..100u32)
//!     .aggregate_with(ShuffleBuffer::new(16, 42))
//!     .disaggregate()
//!     .sink()
//!     .build()?;
//! let out: Vec<u32> = pipeline.collect::<Result<_, _>>()?;
//! assert_eq!(out.len(), 100);
//! assert_ne!(out, (0..100).collect::<Vec<_>>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::distributed::Rng;
use crate::failure::BoxError;
use crate::stage::aggregate::Aggregator;

/// Shuffles within a buffer of `capacity` items (see the module docs). Each aggregate is a
/// `Vec` of zero or one item (all that is left at a flush); follow it with `disaggregate()`.
#[derive(Debug)]
pub struct ShuffleBuffer<T> {
    items: Vec<T>,
    capacity: usize,
    rng: Rng,
}

impl<T> ShuffleBuffer<T> {
    /// A buffer of `capacity` items (at least 1), shuffling with `seed` (give a different
    /// one per epoch, e.g. `seed ^ epoch`, for a different order each epoch).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: Vec::with_capacity(capacity),
            capacity,
            rng: Rng::from_parts(&[seed, 0x5eed]),
        }
    }
}

impl<T: Send + 'static> Aggregator<T> for ShuffleBuffer<T> {
    type Output = Vec<T>;

    fn accumulate(&mut self, item: T) -> Result<Option<Vec<T>>, BoxError> {
        self.items.push(item);
        if self.items.len() < self.capacity {
            return Ok(None);
        }
        let i = self.rng.below(self.items.len() as u64) as usize;
        Ok(Some(vec![self.items.swap_remove(i)]))
    }

    fn flush(&mut self) -> Result<Option<Vec<T>>, BoxError> {
        if self.items.is_empty() {
            return Ok(None);
        }
        let mut rest = std::mem::take(&mut self.items);
        self.rng.shuffle(&mut rest);
        Ok(Some(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(capacity: usize, seed: u64, n: u32) -> Vec<u32> {
        let mut s = ShuffleBuffer::new(capacity, seed);
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(s.accumulate(i).unwrap().unwrap_or_default());
            assert!(s.items.len() < capacity, "the buffer stays bounded");
        }
        out.extend(s.flush().unwrap().unwrap_or_default());
        out
    }

    #[test]
    fn every_item_once_in_a_seeded_order_and_never_far_ahead() {
        let a = run(8, 1, 200);
        assert_eq!(a, run(8, 1, 200));
        assert_ne!(a, run(8, 2, 200));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());
        // Output position p holds an item that came in by position p + capacity - 1.
        assert!(a.iter().enumerate().all(|(p, &v)| (v as usize) < p + 8));
    }
}
