//! The order in which a rank hands out the samples it reads: its reading order passed
//! through a seeded shuffle buffer. Only positions move through it (a sample's place in the
//! reading order), never sample bytes, so the order can be replayed, skipped through or
//! inspected without reading anything: a resumed run finds out what was in the buffer when
//! it stopped, and a new world size finds what each old rank had left.
//!
//! The buffer holds up to `capacity` positions; once full, it hands out a randomly chosen
//! one for each that comes in; at the end of the reading order it hands out what is left,
//! shuffled. With a capacity of 0 or 1 the order is the reading order.

use std::collections::HashSet;

use crate::distributed::Rng;

/// Hands out positions `0..len` in shuffle-buffer order (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct BufferOrder {
    len: u64,
    capacity: usize,
    /// Positions below it have entered the buffer.
    pushed: u64,
    buffer: Vec<u64>,
    /// The same positions as `buffer`, for membership.
    held: HashSet<u64>,
    /// At the end: what was left, shuffled, handed out from the back.
    draining: Option<Vec<u64>>,
    rng: Rng,
    handed_out: u64,
}

impl BufferOrder {
    pub(crate) fn new(len: u64, capacity: usize, rng: Rng) -> Self {
        Self {
            len,
            capacity: capacity.max(1),
            pushed: 0,
            buffer: Vec::new(),
            held: HashSet::new(),
            draining: None,
            rng,
            handed_out: 0,
        }
    }

    /// Positions handed out so far.
    pub(crate) fn handed_out(&self) -> u64 {
        self.handed_out
    }

    /// Positions below it have entered the buffer (and been handed out, unless
    /// [`holds`](Self::holds) says otherwise).
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Whether `pos` is in the buffer: read (or due to be read) and not handed out yet.
    pub(crate) fn holds(&self, pos: u64) -> bool {
        self.held.contains(&pos)
    }

    /// The positions in the buffer, in no particular order.
    pub(crate) fn held(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().copied()
    }

    /// The next position to hand out.
    pub(crate) fn next_pos(&mut self) -> Option<u64> {
        if self.capacity == 1 {
            if self.pushed >= self.len {
                return None;
            }
            self.pushed += 1;
            self.handed_out += 1;
            return Some(self.pushed - 1);
        }
        if self.draining.is_none() {
            while self.buffer.len() < self.capacity && self.pushed < self.len {
                self.buffer.push(self.pushed);
                self.held.insert(self.pushed);
                self.pushed += 1;
            }
            if self.buffer.len() == self.capacity {
                let i = self.rng.below(self.capacity as u64) as usize;
                let pos = self.buffer.swap_remove(i);
                self.held.remove(&pos);
                self.handed_out += 1;
                return Some(pos);
            }
            let mut rest = std::mem::take(&mut self.buffer);
            self.rng.shuffle(&mut rest);
            rest.reverse();
            self.draining = Some(rest);
        }
        let pos = self.draining.as_mut().and_then(Vec::pop)?;
        self.held.remove(&pos);
        self.handed_out += 1;
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(len: u64, capacity: usize, seed: u64) -> Vec<u64> {
        let mut o = BufferOrder::new(len, capacity, Rng::seed_from_u64(seed));
        std::iter::from_fn(|| o.next_pos()).collect()
    }

    #[test]
    fn every_position_once_never_further_ahead_than_the_buffer() {
        for (len, capacity) in [
            (0, 8),
            (1, 8),
            (5, 8),
            (100, 8),
            (100, 1),
            (100, 0),
            (64, 64),
        ] {
            let out = order(len, capacity, 3);
            let mut sorted = out.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                (0..len).collect::<Vec<_>>(),
                "len {len} cap {capacity}"
            );
            let reach = capacity.max(1) as u64;
            assert!(out.iter().enumerate().all(|(i, &p)| p < i as u64 + reach));
        }
        assert_eq!(order(10, 1, 3), (0..10).collect::<Vec<_>>());
        assert_ne!(order(100, 8, 3), order(100, 8, 4), "seeded");
        assert_eq!(order(100, 8, 3), order(100, 8, 3), "replayed");
    }

    #[test]
    fn the_buffer_holds_exactly_what_was_pushed_and_not_handed_out() {
        let mut o = BufferOrder::new(50, 6, Rng::seed_from_u64(1));
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(o.next_pos().unwrap());
            let held: HashSet<u64> = o.held().collect();
            let expected: HashSet<u64> = (0..o.pushed()).filter(|p| !out.contains(p)).collect();
            assert_eq!(held, expected);
            assert!(held.iter().all(|&p| o.holds(p)));
        }
    }
}
