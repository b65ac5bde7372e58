//! A merge's place in a resume state.
//!
//! Each merge input numbers its own positions (its source's, in a key space of its own; see
//! [`source_key`](super::source_key)), so each source resumes on its own. What the merge adds
//! is its order: its lane's state when it last took an item or an end from an input (the
//! merged epoch, the weighted policy's generator, the round-robin turn, each input's pass and
//! whether it is open), and the merged items in flight, in merged order, by the input each
//! came from. A resumed merge first takes those again, each from its input, then goes on
//! from the saved state: the same draws and turns as a run that did not stop.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Tag;

/// Whether a merge reads an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InputStatus {
    Open,
    /// Its pass ended; it waits for the merged epoch to end (`on_end = continue`).
    Paused,
    Closed,
}

/// One input, as the merge last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InputCursor {
    pub(crate) status: InputStatus,
    /// Its pass ended in this merged epoch (`on_end = restart`).
    pub(crate) ended: bool,
    /// The pass of the input's source that the merge reads.
    pub(crate) pass: u64,
}

/// The merge lane's state after the last message it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MergeCursor {
    /// The merged epoch.
    pub(crate) epoch: u64,
    /// The weighted policy's generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rng: Option<[u64; 4]>,
    /// The round-robin policy's next turn (as available: where its next look starts).
    pub(crate) next: usize,
    pub(crate) inputs: Vec<InputCursor>,
}

/// A merge in a resume state: its cursor, and what it had merged that is still in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MergeState {
    pub(crate) cursor: MergeCursor,
    /// In merged order: the input of each merged item in flight, and (`null`) each merged
    /// epoch end between them and the cursor.
    pub(crate) pending: Vec<Option<u32>>,
}

impl MergeState {
    /// Checks its shape: `epoch` is the state's (the merged epoch of its first pending
    /// item); the ends in `pending` lead to the cursor's epoch.
    pub(crate) fn check(&self, epoch: u64) -> Result<(), String> {
        let c = &self.cursor;
        let n = c.inputs.len();
        if n == 0 || c.next >= n {
            return Err(format!(
                "its merge has {n} input(s) and its next turn is {}",
                c.next
            ));
        }
        if let Some(i) = self.pending.iter().flatten().find(|&&i| i as usize >= n) {
            return Err(format!(
                "its merge has an item in flight from input {i} of {n}"
            ));
        }
        let ends = self.pending.iter().filter(|p| p.is_none()).count() as u64;
        if epoch.checked_add(ends) != Some(c.epoch) {
            return Err(format!(
                "its merge is in epoch {} but the state in {epoch} with {ends} epoch end(s) \
                 in flight",
                c.epoch
            ));
        }
        if c.rng == Some([0; 4]) {
            return Err("its merge's generator state is all zeros".into());
        }
        Ok(())
    }
}

/// One thing a merge sent on: an item from an input (with the group that follows it in the
/// ledger; `None` while a resumed merge has not taken it again) or a merged epoch's end.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Item(u32, Option<Tag>),
    End,
}

/// The ledger's record of a merge (resume tracking on).
#[derive(Debug)]
pub(crate) struct MergeBook {
    cursor: MergeCursor,
    /// The merged epoch of the front of `sent`.
    epoch: u64,
    /// What it sent since the oldest item in flight, oldest first.
    sent: VecDeque<Sent>,
}

impl MergeBook {
    /// The book of a merge starting at `cursor`, with `state`'s items still to take again.
    pub(crate) fn new(cursor: MergeCursor, epoch: u64, pending: &[Option<u32>]) -> Self {
        let sent = pending
            .iter()
            .map(|p| match p {
                Some(i) => Sent::Item(*i, None),
                None => Sent::End,
            })
            .collect();
        Self {
            cursor,
            epoch,
            sent,
        }
    }

    /// The merge sent on an item of `input`, followed by `group`, after which its state is
    /// `cursor`; `again`: one of the resumed state's items in flight, taken again (it takes
    /// the place of the first of that input's still to take, in the order they are taken
    /// again).
    pub(crate) fn took(&mut self, input: u32, group: Tag, cursor: &MergeCursor, again: bool) {
        self.cursor.clone_from(cursor);
        let slot = again
            .then(|| {
                self.sent
                    .iter_mut()
                    .find(|s| matches!(s, Sent::Item(i, None) if *i == input))
            })
            .flatten();
        match slot {
            Some(slot) => *slot = Sent::Item(input, Some(group)),
            None => self.sent.push_back(Sent::Item(input, Some(group))),
        }
    }

    /// The merge's state changed without an item; `epoch_end`: it ends a merged epoch.
    pub(crate) fn moved(&mut self, cursor: &MergeCursor, epoch_end: bool) {
        self.cursor.clone_from(cursor);
        if epoch_end {
            self.sent.push_back(Sent::End);
        }
    }

    /// Forgets what is resolved at the front (`live` says whether a group is still in
    /// flight).
    pub(crate) fn prune(&mut self, live: impl Fn(Tag) -> bool) {
        while let Some(&front) = self.sent.front() {
            match front {
                Sent::Item(_, Some(group)) if !live(group) => {}
                Sent::End => self.epoch += 1,
                Sent::Item(..) => break,
            }
            self.sent.pop_front();
        }
    }

    /// The merged epoch of its oldest item in flight, and its state (pruned first).
    pub(crate) fn state(&self, live: impl Fn(Tag) -> bool) -> (u64, MergeState) {
        let pending = self
            .sent
            .iter()
            .filter_map(|s| match *s {
                Sent::Item(i, None) => Some(Some(i)),
                Sent::Item(i, Some(g)) => live(g).then_some(Some(i)),
                Sent::End => Some(None),
            })
            .collect();
        let state = MergeState {
            cursor: self.cursor.clone(),
            pending,
        };
        (self.epoch, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(epoch: u64) -> MergeCursor {
        let input = InputCursor {
            status: InputStatus::Open,
            ended: false,
            pass: epoch,
        };
        MergeCursor {
            epoch,
            rng: None,
            next: 0,
            inputs: vec![input; 2],
        }
    }

    #[test]
    fn the_book_keeps_what_is_in_flight_from_the_oldest_on_with_the_epoch_ends_between() {
        let g = Tag::group;
        let mut book = MergeBook::new(cursor(3), 3, &[]);
        book.took(0, g(0), &cursor(3), false);
        book.took(1, g(1), &cursor(3), false);
        book.moved(&cursor(4), true);
        book.took(1, g(2), &cursor(4), false);
        let live = |t: Tag| t != g(0);
        book.prune(live);
        let (epoch, state) = book.state(live);
        assert_eq!(
            (epoch, &state.pending[..]),
            (3, &[Some(1), None, Some(1)][..])
        );
        assert_eq!(state.check(epoch), Ok(()));
        let live = |t: Tag| t == g(2);
        book.prune(live);
        let (epoch, state) = book.state(live);
        assert_eq!((epoch, state.pending), (4, vec![Some(1)]));

        // Resumed: its items in flight are taken again in place, before anything new.
        let mut again = MergeBook::new(cursor(4), 3, &[Some(1), None, Some(0)]);
        again.took(1, g(7), &cursor(4), true);
        again.took(0, g(8), &cursor(4), false);
        let (epoch, state) = again.state(|t| t != g(7));
        assert_eq!(
            (epoch, state.pending),
            (3, vec![None, Some(0), Some(0)]),
            "the first item resolved, the second still to take again, then the new one"
        );
    }
}
