//! A stage's set of lanes while it runs: how many it should have (its target concurrency),
//! how many it has, which slot each one uses, and what each is doing now.
//!
//! Growing starts new lanes (the stage's spawner does); shrinking lowers the target, and a
//! lane above it retires at its next item boundary, after it has emitted what it holds, so
//! no item is lost or emitted twice, and the input-order gate keeps order across lanes that
//! come and go. Slots are reused lowest first, so a lane's statistics shard and its entry in
//! [`busy_since`](LaneSet::task_started) stay its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock;
use crate::sync::lock;

/// Lanes a stage can grow to unless its bounds say otherwise (the slot table's size).
pub(crate) const DEFAULT_MAX_LANES: usize = 256;

#[derive(Debug)]
pub(crate) struct LaneSet {
    /// The concurrency asked for; shared with the statistics, which show it.
    target: Arc<AtomicUsize>,
    /// Lanes running and not retiring.
    active: AtomicUsize,
    /// Which slots are taken.
    slots: Mutex<Vec<bool>>,
    /// Start tick of each slot's current call of the stage function, 0 when none (only
    /// recorded when the pipeline is supervised).
    busy_since: Box<[AtomicU64]>,
    watched: bool,
    /// The most lanes it is expected to run (its tuning bound): statistics shards are
    /// made for that many.
    planned: usize,
}

impl LaneSet {
    /// A set of `initial` lanes (slots `0..initial`) expected to grow to `planned` at most
    /// and able to grow to `max`; `watched`: record the calls under way (stall detection).
    pub(crate) fn new(initial: usize, planned: usize, max: usize, watched: bool) -> Self {
        let planned = planned.max(initial).max(1);
        let max = max.max(planned);
        let mut slots = vec![false; max];
        slots[..initial].fill(true);
        Self {
            target: Arc::new(AtomicUsize::new(initial)),
            active: AtomicUsize::new(initial),
            slots: Mutex::new(slots),
            busy_since: (0..max).map(|_| AtomicU64::new(0)).collect(),
            watched,
            planned,
        }
    }

    pub(crate) fn planned(&self) -> usize {
        self.planned
    }

    pub(crate) fn target(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    pub(crate) fn shared_target(&self) -> Arc<AtomicUsize> {
        self.target.clone()
    }

    /// Most lanes the slot table holds.
    pub(crate) fn max(&self) -> usize {
        self.busy_since.len()
    }

    /// Sets the target; returns the slots of the lanes to start now (none when shrinking,
    /// or when lanes asked to retire have not yet and are simply kept).
    pub(crate) fn set_target(&self, n: usize) -> Vec<usize> {
        let mut slots = lock(&self.slots);
        self.target.store(n, Ordering::Relaxed);
        let mut starting = Vec::new();
        // Under the slot lock: a lane retiring now has its `active` decrement done first.
        while self.active.load(Ordering::Acquire) < n {
            let Some(free) = slots.iter().position(|taken| !taken) else {
                break;
            };
            slots[free] = true;
            self.active.fetch_add(1, Ordering::AcqRel);
            starting.push(free);
        }
        starting
    }

    /// Called by a lane between items: true if it must retire now (the set is above its
    /// target); its slot is then free. Two relaxed loads when nothing changes.
    #[inline]
    pub(crate) fn should_retire(&self, slot: usize) -> bool {
        if self.active.load(Ordering::Relaxed) <= self.target.load(Ordering::Relaxed) {
            return false;
        }
        self.retire_slow(slot)
    }

    #[cold]
    fn retire_slow(&self, slot: usize) -> bool {
        let mut slots = lock(&self.slots);
        let active = self.active.load(Ordering::Acquire);
        // Never the last lane: the stage ends when its input ends, not by a resize.
        if active <= self.target.load(Ordering::Relaxed) || active <= 1 {
            return false;
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(taken) = slots.get_mut(slot) {
            *taken = false;
        }
        true
    }

    /// A lane ended without retiring (end of input, stop, failure): its slot is free.
    pub(crate) fn lane_ended(&self, slot: usize) {
        let mut slots = lock(&self.slots);
        if let Some(taken) = slots.get_mut(slot) {
            if *taken {
                *taken = false;
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Lanes running now (retiring ones excluded).
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn task_started(&self, slot: usize) {
        if self.watched {
            if let Some(since) = self.busy_since.get(slot) {
                since.store(clock::now().max(1), Ordering::Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn task_ended(&self, slot: usize) {
        if self.watched {
            if let Some(since) = self.busy_since.get(slot) {
                since.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Calls of the stage function under way, and the start tick of the oldest one.
    pub(crate) fn in_calls(&self) -> (usize, Option<u64>) {
        let mut n = 0;
        let mut oldest: Option<u64> = None;
        for since in self.busy_since.iter() {
            let t = since.load(Ordering::Relaxed);
            if t != 0 {
                n += 1;
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        (n, oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_reuses_the_lowest_free_slots_and_shrinking_retires_down_to_the_target() {
        let set = LaneSet::new(2, 2, 8, false);
        assert_eq!(set.set_target(4), vec![2, 3]);
        set.set_target(2);
        // Lanes 3 and 1 come to an item boundary first: they retire, the others stay.
        assert!(set.should_retire(3));
        assert!(set.should_retire(1));
        assert!(!set.should_retire(0));
        assert!(!set.should_retire(2));
        assert_eq!(set.active(), 2);
        assert_eq!(set.set_target(3), vec![1]);
        // A lane that ends on its own frees its slot once.
        set.lane_ended(1);
        set.lane_ended(1);
        assert_eq!(set.active(), 2);
    }

    #[test]
    fn the_last_lane_never_retires() {
        let set = LaneSet::new(1, 1, 4, false);
        set.set_target(0);
        assert!(!set.should_retire(0));
    }

    #[test]
    fn a_grow_before_lanes_retired_keeps_them() {
        let set = LaneSet::new(4, 4, 4, false);
        set.set_target(1);
        assert!(set.should_retire(0));
        assert!(
            set.set_target(4).len() == 1,
            "one slot freed, three lanes kept"
        );
        assert!(!set.should_retire(1));
    }
}
