//! The source's side of resume: numbering the items it takes, and, when resuming, skipping
//! those the state says were already delivered (or failed, or dropped); and telling the
//! ledger what it took ([`SourceBooks`]).

use std::sync::Arc;

use super::accounts::{Accounts, Counts};
use super::ledger::Ledger;
use super::ResumeState;

/// Where a source records the positions it takes: the token ledger (which counts them in
/// the accounts under its lock), or straight in the accounts (one-to-one pipelines).
#[derive(Debug)]
pub(crate) struct SourceBooks {
    ledger: Option<Arc<Ledger>>,
    accounts: Option<Arc<Accounts>>,
    /// The current epoch's first position and tallies (accounts without a ledger).
    epoch: Option<(u64, Arc<Counts>)>,
    /// The ledger's key of the source's position 0 (see
    /// [`source_key`](super::source_key)).
    base: u64,
}

impl SourceBooks {
    /// Books of a source starting at pass `epoch`, whose keys start at `base`.
    pub(crate) fn new(
        ledger: Option<Arc<Ledger>>,
        accounts: Option<Arc<Accounts>>,
        epoch: u64,
        base: u64,
    ) -> Self {
        let mut books = Self {
            ledger,
            accounts,
            epoch: None,
            base,
        };
        books.pass_started(epoch, 0);
        books
    }

    /// The source begins pass `pass` at position `first`.
    pub(crate) fn pass_started(&mut self, pass: u64, first: u64) {
        if let Some(ledger) = &self.ledger {
            ledger.pass_started(pass, self.base + first);
        } else if let Some(accounts) = &self.accounts {
            self.epoch = Some((first, accounts.epoch_started(pass, first)));
        }
    }

    /// The source took `pos` and is about to send it: returns its key (its tag's).
    #[inline]
    pub(crate) fn taken(&self, pos: u64) -> u64 {
        let key = self.base + pos;
        if let Some(ledger) = &self.ledger {
            ledger.taken(key);
        } else if let Some((first, counts)) = &self.epoch {
            Accounts::sourced(counts, *first, pos);
        }
        key
    }
}

/// Numbers a source's items across its passes, and says how many to skip before the next
/// one to send.
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    /// Position of the next item the source pulls.
    next: u64,
    /// Below it, only `pending` positions are sent.
    frontier: u64,
    pending: Vec<u64>,
    /// Index of the first `pending` position at or after `next`.
    cursor: usize,
}

impl Numbering {
    /// Numbering from 0 that skips nothing.
    pub(crate) fn fresh() -> Self {
        Self::default()
    }

    /// Numbering from the start of the state's epoch that skips what it resolved.
    pub(crate) fn resumed(state: &ResumeState) -> Self {
        Self {
            next: 0,
            frontier: state.frontier(),
            pending: state.pending().to_vec(),
            cursor: 0,
        }
    }

    /// The position of the next item the source pulls.
    #[inline]
    pub(crate) fn next_pos(&self) -> u64 {
        self.next
    }

    /// How many items to skip before the next one to send (0 at once unless resuming).
    #[inline]
    pub(crate) fn to_skip(&self) -> u64 {
        if self.next >= self.frontier {
            return 0;
        }
        self.pending
            .get(self.cursor)
            .copied()
            .unwrap_or(self.frontier)
            - self.next
    }

    /// `n` items were skipped.
    pub(crate) fn skipped(&mut self, n: u64) {
        self.next += n;
        self.advance();
    }

    /// Takes the next position, for an item about to be sent.
    #[inline]
    pub(crate) fn take(&mut self) -> u64 {
        let pos = self.next;
        self.next += 1;
        if pos < self.frontier {
            self.advance();
        }
        pos
    }

    fn advance(&mut self) {
        while self
            .pending
            .get(self.cursor)
            .is_some_and(|&p| p < self.next)
        {
            self.cursor += 1;
        }
    }
}

/// Skips up to `n` items of `iter`; returns how many it skipped (fewer: it ended). An
/// iterator whose `size_hint` is exact is skipped with one `nth`, which is O(1) for indexed
/// iterators (ranges, slices, the distributed sampler); others are pulled one by one.
pub(crate) fn skip_items<I: Iterator + ?Sized>(iter: &mut I, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let (lower, upper) = iter.size_hint();
    if upper == Some(lower) {
        let k = n.min(lower as u64);
        if k > 0 {
            iter.nth((k - 1) as usize);
        }
        return k;
    }
    let mut skipped = 0;
    while skipped < n && iter.next().is_some() {
        skipped += 1;
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_numbering_sends_the_pending_positions_then_all_from_the_frontier() {
        let state = ResumeState::new("s".into(), 0, 6, vec![2, 3, 5]);
        let mut numbering = Numbering::resumed(&state);
        let mut items = 0..10u64;
        let mut sent = Vec::new();
        loop {
            let skip = numbering.to_skip();
            let skipped = skip_items(&mut items, skip);
            numbering.skipped(skipped);
            if skipped < skip {
                break;
            }
            let Some(item) = items.next() else { break };
            assert_eq!(numbering.take(), item, "the position is the item's place");
            sent.push(item);
        }
        assert_eq!(sent, [2, 3, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn skipping_stops_at_the_end_of_an_iterator_of_unknown_length() {
        let mut items = (0..5).filter(|_| true);
        assert_eq!(skip_items(&mut items, 8), 5);
        let mut exact = 0..5;
        assert_eq!(skip_items(&mut exact, 8), 5);
        assert_eq!(exact.next(), None);
    }
}
