//! The always-on accounts of the ledger: per epoch, how many source positions were sourced,
//! delivered, failed and filtered, and an order-independent checksum of each set, so that an
//! epoch's end can check that every item came out exactly once.
//!
//! Two ways feed them. A pipeline of one-to-one `pipe`s and `aggregate`s carries each
//! position in exactly one message (an item, or a batch standing for its members), so a
//! message's resolution is its positions': the source and the consumer count directly, with
//! plain loads and stores (one writer each), and a batch's members are summed by the
//! aggregate stage into a [`BatchAccount`] that the consumer settles with one lock per batch; the
//! cost per item is a few nanoseconds. Any other pipeline has the token
//! [`Ledger`](super::ledger::Ledger), which tells the accounts when a position's last token
//! goes and what became of it; it calls in under its own lock, so a snapshot it takes is
//! consistent with its open positions.
//!
//! A checksum is the wrapping sum of a mixed hash of each position, counted from its epoch's
//! start: equal sums over the same counts mean the same set of positions (up to a 2^-64
//! chance), whatever the order, and a position delivered twice while another is lost
//! changes the sum even though the counts agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Tag;
use crate::sync::lock;

/// What became of a message: the best outcome over a position's messages is the position's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Neither delivered nor dropped: a one-to-many stage's input, replaced by its outputs
    /// (a position none of whose outputs came out counts as filtered).
    Passed,
    /// Dropped on purpose: a filter, `drop_last`.
    Filtered,
    /// Failed in a stage.
    Failed,
    /// Received by the consumer.
    Delivered,
}

/// A count of positions and the checksum of the set. On a cache line of its own: the
/// source writes `sourced` and the consumer `delivered` for every item.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Tally {
    n: AtomicU64,
    sum: AtomicU64,
}

impl Tally {
    /// Adds `hash`, for a tally that one thread writes at a time (the source's, the
    /// consumer's, or any under the token ledger's lock): a load and a store, no atomic
    /// read-modify-write.
    #[inline]
    fn add_one_writer(&self, hash: u64) {
        self.n
            .store(self.n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.sum.store(
            self.sum.load(Ordering::Relaxed).wrapping_add(hash),
            Ordering::Relaxed,
        );
    }

    /// Adds `n` positions whose hashes sum to `sum`, for a tally several stage lanes write.
    fn add(&self, n: u64, sum: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
        self.sum.fetch_add(sum, Ordering::Relaxed);
    }

    /// Adds `n` positions whose hashes sum to `sum`, one writer at a time.
    fn add_many_one_writer(&self, n: u64, sum: u64) {
        self.n
            .store(self.n.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        self.sum.store(
            self.sum.load(Ordering::Relaxed).wrapping_add(sum),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> (u64, u64) {
        (
            self.n.load(Ordering::Relaxed),
            self.sum.load(Ordering::Relaxed),
        )
    }

    fn set(&self, (n, sum): (u64, u64)) {
        self.n.store(n, Ordering::Relaxed);
        self.sum.store(sum, Ordering::Relaxed);
    }
}

/// One epoch's tallies.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    sourced: Tally,
    delivered: Tally,
    failed: Tally,
    filtered: Tally,
}

/// The hash a checksum adds for the position `pos_in_epoch` (splitmix64's finaliser).
#[inline]
pub(crate) fn mix(pos_in_epoch: u64) -> u64 {
    let mut z = pos_in_epoch.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An epoch of the run: its number, the position it starts at, its tallies.
#[derive(Debug, Clone)]
struct Slot {
    epoch: u64,
    first: u64,
    counts: Arc<Counts>,
    closed: bool,
}

/// The members of a batch (without a token ledger): their count, checksum and epoch.
#[derive(Debug, Default)]
pub(crate) struct BatchAccount {
    n: u64,
    sum: u64,
    counts: Option<Arc<Counts>>,
}

impl BatchAccount {
    /// One more member, at `pos`.
    #[inline]
    pub(crate) fn add(&mut self, cursor: &mut Cursor, accounts: &Accounts, pos: u64) {
        let (counts, hash) = cursor.locate(accounts, pos);
        self.n += 1;
        self.sum = self.sum.wrapping_add(hash);
        if self.counts.is_none() {
            // No batch spans two epochs: its first member's is every member's.
            self.counts = Some(counts.clone());
        }
    }
}

/// The accounts of one pipeline (one rank).
#[derive(Debug)]
pub(crate) struct Accounts {
    /// Every epoch the source began (or a resumed state carried), oldest first.
    slots: Mutex<Vec<Slot>>,
    /// The first position of the newest epoch: the consumer's cursor compares with it to
    /// notice a new epoch without taking the lock. Read for every item, so on a cache line
    /// apart from the locks that other threads take.
    newest_first: Padded<AtomicU64>,
    /// Batches sent on and not yet settled, by the key of their tag (no token ledger), and
    /// the key of the next.
    batches: Mutex<(u64, BTreeMap<u64, BatchAccount>)>,
}

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);

/// Epochs kept after they close, for `stats()`.
const CLOSED_KEPT: usize = 16;

impl Accounts {
    /// Accounts whose source starts at epoch `epoch`, position 0, carrying `carried` (the
    /// accounts of a resume state, already checked against it).
    pub(crate) fn new(epoch: u64, carried: &[EpochAccountState]) -> Self {
        let mut slots: Vec<Slot> = carried
            .iter()
            .map(|c| {
                // The resumed ledger does not count again the pending positions it takes.
                let counts = Counts::default();
                counts.sourced.set(c.sourced);
                counts.delivered.set(c.delivered);
                counts.failed.set(c.failed);
                counts.filtered.set(c.filtered);
                Slot {
                    epoch: c.epoch,
                    first: c.first,
                    counts: Arc::new(counts),
                    closed: false,
                }
            })
            .collect();
        if slots.first().is_none_or(|s| s.epoch != epoch) {
            slots.insert(
                0,
                Slot {
                    epoch,
                    first: 0,
                    counts: Arc::default(),
                    closed: false,
                },
            );
        }
        let newest_first = slots.last().map_or(0, |s| s.first);
        Self {
            slots: Mutex::new(slots),
            newest_first: Padded(AtomicU64::new(newest_first)),
            batches: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// The source begins epoch `epoch` at position `first`; returns its tallies.
    pub(crate) fn epoch_started(&self, epoch: u64, first: u64) -> Arc<Counts> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.iter_mut().find(|s| s.epoch == epoch) {
            slot.first = first; // carried by a resume state: the same place
            return slot.counts.clone();
        }
        let counts = Arc::new(Counts::default());
        slots.push(Slot {
            epoch,
            first,
            counts: counts.clone(),
            closed: false,
        });
        self.newest_first.0.store(first, Ordering::Relaxed);
        counts
    }

    /// The epoch holding `pos`: (first, end, counts), `end` being the next epoch's first
    /// or `u64::MAX`.
    fn find(&self, pos: u64) -> (u64, u64, Arc<Counts>) {
        let slots = lock(&self.slots);
        let i = slots
            .iter()
            .rposition(|s| s.first <= pos)
            .unwrap_or_default();
        let end = slots.get(i + 1).map_or(u64::MAX, |s| s.first);
        (slots[i].first, end, slots[i].counts.clone())
    }

    /// The source took `pos`, counted in `counts` (its epoch's, from
    /// [`epoch_started`](Self::epoch_started)); one writer: the source, or the token
    /// ledger under its lock.
    #[inline]
    pub(crate) fn sourced(counts: &Counts, first: u64, pos: u64) {
        counts.sourced.add_one_writer(mix(pos - first));
    }

    /// Position `pos` is resolved with `outcome` (the token ledger, under its lock: one
    /// writer at a time).
    pub(crate) fn resolved_one_writer(&self, pos: u64, outcome: Outcome) {
        let (first, _, counts) = self.find(pos);
        let hash = mix(pos - first);
        match outcome {
            Outcome::Delivered => counts.delivered.add_one_writer(hash),
            Outcome::Failed => counts.failed.add_one_writer(hash),
            Outcome::Filtered | Outcome::Passed => counts.filtered.add_one_writer(hash),
        }
    }

    /// A stage lane failed or filtered the message tagged `tag`, a position or a batch
    /// (no token ledger: several lanes write).
    pub(crate) fn dropped(&self, tag: Tag, outcome: Outcome) {
        let (n, sum, counts) = if tag.is_group() {
            let Some(batch) = lock(&self.batches).1.remove(&tag.raw()) else {
                return;
            };
            let Some(counts) = batch.counts else {
                return;
            };
            (batch.n, batch.sum, counts)
        } else {
            let pos = tag.raw();
            let (first, _, counts) = self.find(pos);
            (1, mix(pos - first), counts)
        };
        match outcome {
            Outcome::Failed => counts.failed.add(n, sum),
            _ => counts.filtered.add(n, sum),
        }
    }

    /// The members of `batch` left the pipeline without an output (`drop_last`, an
    /// aggregator that kept nothing of them).
    pub(crate) fn batch_filtered(&self, batch: BatchAccount) {
        if let Some(counts) = batch.counts {
            counts.filtered.add(batch.n, batch.sum);
        }
    }

    /// The tag of an output standing for `batch`, settled when it is delivered or dropped.
    pub(crate) fn batch_sent(&self, batch: BatchAccount) -> Tag {
        let mut batches = lock(&self.batches);
        let tag = Tag::group(batches.0);
        batches.0 += 1;
        batches.1.insert(tag.raw(), batch);
        tag
    }

    /// The consumer received the batch tagged `tag`.
    fn batch_delivered(&self, tag: Tag) {
        let batch = lock(&self.batches).1.remove(&tag.raw());
        if let Some(BatchAccount {
            n,
            sum,
            counts: Some(counts),
        }) = batch
        {
            counts.delivered.add_many_one_writer(n, sum);
        }
    }

    /// Every epoch's account now, oldest first (the last few closed ones and all open).
    pub(crate) fn snapshot(&self) -> Vec<EpochAccount> {
        lock(&self.slots).iter().map(account).collect()
    }

    /// The open epochs' states, from `epoch` on, positions counted from `base` (the start
    /// of `epoch`): what a resume state carries.
    pub(crate) fn carried(&self, epoch: u64, base: u64) -> Vec<EpochAccountState> {
        lock(&self.slots)
            .iter()
            .filter(|s| s.epoch >= epoch)
            .map(|s| EpochAccountState {
                epoch: s.epoch,
                // (A carried epoch not begun again may hold a stranger's value.)
                first: s.first.saturating_sub(base),
                sourced: s.counts.sourced.get(),
                delivered: s.counts.delivered.get(),
                failed: s.counts.failed.get(),
                filtered: s.counts.filtered.get(),
            })
            .collect()
    }

    /// Epoch `epoch` ended at the consumer: its account must balance. Returns it if it does
    /// not. Closed epochs beyond the last few are forgotten.
    pub(crate) fn close(&self, epoch: u64) -> Result<(), EpochAccount> {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.iter_mut().find(|s| s.epoch == epoch) else {
            return Ok(());
        };
        slot.closed = true;
        let account = account(slot);
        let closed = slots.iter().filter(|s| s.closed).count();
        if closed > CLOSED_KEPT && slots.len() > 1 {
            if let Some(i) = slots.iter().position(|s| s.closed) {
                slots.remove(i);
            }
        }
        if account.balanced() {
            Ok(())
        } else {
            Err(account)
        }
    }
}

fn account(slot: &Slot) -> EpochAccount {
    let c = &slot.counts;
    let (sourced, sourced_sum) = c.sourced.get();
    let (delivered, checksum) = c.delivered.get();
    let (failed, failed_sum) = c.failed.get();
    let (filtered, filtered_sum) = c.filtered.get();
    let resolved = delivered + failed + filtered;
    let resolved_sum = checksum.wrapping_add(failed_sum).wrapping_add(filtered_sum);
    EpochAccount {
        epoch: slot.epoch,
        sourced,
        delivered,
        failed,
        filtered,
        in_flight: sourced.saturating_sub(resolved),
        checksum,
        ended: slot.closed,
        // With items in flight, the sets can only be compared once they are resolved.
        sets_agree: resolved != sourced || sourced_sum == resolved_sum,
        surplus: resolved.saturating_sub(sourced),
    }
}

/// The consumer's place in the accounts: the epoch of the last position it received, so
/// that a delivery costs no lock while the epoch does not change.
#[derive(Debug)]
pub(crate) struct Cursor {
    first: u64,
    end: u64,
    counts: Arc<Counts>,
}

impl Cursor {
    pub(crate) fn new(accounts: &Accounts) -> Self {
        let (first, end, counts) = accounts.find(0);
        Self { first, end, counts }
    }

    /// The tallies of `pos`'s epoch, and `pos`'s hash.
    #[inline]
    fn locate(&mut self, accounts: &Accounts, pos: u64) -> (&Arc<Counts>, u64) {
        // An open end while the source has begun a later epoch: learn where this one ends.
        let newer =
            self.end == u64::MAX && accounts.newest_first.0.load(Ordering::Relaxed) > self.first;
        if pos < self.first || pos >= self.end || newer {
            (self.first, self.end, self.counts) = accounts.find(pos);
        }
        (&self.counts, mix(pos - self.first))
    }

    /// The consumer received the message tagged `tag`: a position, or a batch (no token
    /// ledger).
    #[inline]
    pub(crate) fn delivered(&mut self, accounts: &Accounts, tag: Tag) {
        if tag.is_group() {
            return accounts.batch_delivered(tag);
        }
        let (counts, hash) = self.locate(accounts, tag.raw());
        counts.delivered.add_one_writer(hash);
    }
}

/// One epoch's account (one rank's): what [`Pipeline::stats`](crate::Pipeline::stats)
/// reports and what an epoch's end checks.
///
/// `sourced = delivered + failed + filtered + in_flight` holds by construction while the
/// pipeline runs; at the epoch's end `in_flight` must be 0 and the positions delivered,
/// failed and filtered must be exactly those sourced (checked through their checksums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EpochAccount {
    /// The epoch (pass of the source).
    pub epoch: u64,
    /// Positions the source took (an item of a resumed pipeline's carried part counts once).
    pub sourced: u64,
    /// Positions whose items reached the consumer (a position fanned out into several
    /// items counts once, if any of them reached it).
    pub delivered: u64,
    /// Positions whose items failed in a stage (and none was delivered).
    pub failed: u64,
    /// Positions dropped on purpose: a filter, `drop_last`, a one-to-many stage that gave
    /// nothing.
    pub filtered: u64,
    /// Positions sourced but not yet resolved (received, failed or filtered).
    pub in_flight: u64,
    /// An order-independent checksum of the delivered positions (counted from the epoch's
    /// start): equal in two runs that delivered the same positions, whatever the order.
    pub checksum: u64,
    /// The epoch ended at the consumer (its account was checked).
    pub ended: bool,
    sets_agree: bool,
    surplus: u64,
}

impl EpochAccount {
    /// Whether the account balances: nothing resolved twice, the resolved positions the
    /// sourced ones, and (once the epoch ended) nothing left in flight.
    pub fn balanced(&self) -> bool {
        self.surplus == 0 && self.sets_agree && !(self.ended && self.in_flight > 0)
    }
}

impl std::fmt::Display for EpochAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {}: sourced {} = delivered {} + failed {} + filtered {} + in flight {}; \
             checksum {:016x}",
            self.epoch,
            self.sourced,
            self.delivered,
            self.failed,
            self.filtered,
            self.in_flight,
            self.checksum
        )?;
        if self.surplus > 0 {
            write!(
                f,
                " (mismatch: {} more resolved than sourced: duplicated items)",
                self.surplus
            )?;
        } else if self.ended && self.in_flight > 0 {
            write!(
                f,
                " (mismatch: {} sourced but never delivered, failed or filtered: lost items)",
                self.in_flight
            )?;
        } else if !self.sets_agree {
            write!(
                f,
                " (mismatch: the counts agree but not the positions: an item duplicated and \
                 another lost)"
            )?;
        }
        Ok(())
    }
}

/// An open epoch's tallies in a resume state: counts and checksums, positions counted from
/// the start of the state's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochAccountState {
    pub(crate) epoch: u64,
    /// Where the epoch starts, counted from the start of the state's epoch.
    pub(crate) first: u64,
    pub(crate) sourced: (u64, u64),
    pub(crate) delivered: (u64, u64),
    pub(crate) failed: (u64, u64),
    pub(crate) filtered: (u64, u64),
}

impl EpochAccountState {
    /// Count and checksum of the positions resolved (counts checked not to overflow).
    fn resolved(&self) -> (u64, u64) {
        let n = self.delivered.0 + self.failed.0 + self.filtered.0;
        let sum = self
            .delivered
            .1
            .wrapping_add(self.failed.1)
            .wrapping_add(self.filtered.1);
        (n, sum)
    }

    /// Checks the carried accounts of a state against its pending positions: the positions
    /// sourced and not resolved must be exactly those.
    pub(crate) fn check_all(
        accounts: &[Self],
        epoch: u64,
        frontier: u64,
        pending: &[u64],
    ) -> Result<(), String> {
        if accounts.is_empty() {
            return Ok(());
        }
        let in_order = accounts
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].first <= w[1].first);
        if !in_order || accounts[0].epoch != epoch || accounts[0].first != 0 {
            return Err("its accounts are not in epoch order from the state's epoch".into());
        }
        // Every position below the frontier was sourced (more may be: a resumed run carries
        // positions resolved beyond the frontier it has reached again).
        let sourced = accounts
            .iter()
            .try_fold(0u64, |acc, a| acc.checked_add(a.sourced.0))
            .ok_or("its accounts overflow")?;
        if sourced < frontier {
            return Err(format!(
                "its accounts sourced {sourced} item(s) but its frontier is {frontier}"
            ));
        }
        let mut open = 0u64;
        let mut open_sum = 0u64;
        for a in accounts {
            let counts = [a.delivered.0, a.failed.0, a.filtered.0];
            let resolved = counts
                .iter()
                .try_fold(0u64, |acc, &n| acc.checked_add(n))
                .ok_or("its accounts overflow")?;
            if resolved > a.sourced.0 {
                return Err(format!(
                    "its account of epoch {} resolved {resolved} of {} sourced",
                    a.epoch, a.sourced.0
                ));
            }
            open = open
                .checked_add(a.sourced.0 - resolved)
                .ok_or("its accounts overflow")?;
            open_sum = open_sum.wrapping_add(a.sourced.1.wrapping_sub(a.resolved().1));
        }
        if open != pending.len() as u64 {
            return Err(format!(
                "its accounts leave {open} item(s) in flight but it has {} pending",
                pending.len()
            ));
        }
        let pending_sum = pending.iter().fold(0u64, |sum, &p| {
            let first = accounts
                .iter()
                .rev()
                .find(|a| a.first <= p)
                .map_or(0, |a| a.first);
            sum.wrapping_add(mix(p - first))
        });
        if pending_sum != open_sum {
            return Err("its accounts' checksums do not match its pending positions".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_balances_when_every_position_is_resolved_once() {
        let accounts = Accounts::new(0, &[]);
        let counts = accounts.epoch_started(0, 0);
        for p in 0..5 {
            Accounts::sourced(&counts, 0, p);
        }
        let mut cursor = Cursor::new(&accounts);
        for p in [0, 2, 3] {
            cursor.delivered(&accounts, Tag::pos(p));
        }
        accounts.dropped(Tag::pos(1), Outcome::Failed);
        let open = &accounts.snapshot()[0];
        assert_eq!((open.in_flight, open.balanced()), (1, true));
        accounts.dropped(Tag::pos(4), Outcome::Filtered);
        assert_eq!(accounts.close(0), Ok(()));
    }

    #[test]
    fn a_lost_item_and_a_duplicate_are_mismatches_naming_the_counts() {
        let accounts = Accounts::new(0, &[]);
        let counts = accounts.epoch_started(0, 0);
        for p in 0..3 {
            Accounts::sourced(&counts, 0, p);
        }
        let mut cursor = Cursor::new(&accounts);
        cursor.delivered(&accounts, Tag::pos(0));
        cursor.delivered(&accounts, Tag::pos(1));
        let lost = accounts.close(0).unwrap_err();
        assert!(lost.to_string().contains("1 sourced but never"), "{lost}");

        let accounts = Accounts::new(0, &[]);
        let counts = accounts.epoch_started(0, 0);
        for p in 0..3 {
            Accounts::sourced(&counts, 0, p);
        }
        let mut cursor = Cursor::new(&accounts);
        for p in [0, 1, 1] {
            cursor.delivered(&accounts, Tag::pos(p));
        }
        let swapped = accounts.close(0).unwrap_err();
        assert!(
            swapped.to_string().contains("the counts agree but not"),
            "{swapped}"
        );
    }

    #[test]
    fn the_cursor_follows_the_source_into_the_next_epoch() {
        let accounts = Accounts::new(3, &[]);
        let first = accounts.epoch_started(3, 0);
        let mut cursor = Cursor::new(&accounts);
        for p in 0..4 {
            Accounts::sourced(&first, 0, p);
        }
        let second = accounts.epoch_started(4, 4);
        for p in 4..6 {
            Accounts::sourced(&second, 4, p);
        }
        // The source is an epoch further before the consumer reads epoch 4.
        let third = accounts.epoch_started(5, 6);
        Accounts::sourced(&third, 6, 6);
        for p in 0..7 {
            cursor.delivered(&accounts, Tag::pos(p));
        }
        assert_eq!(accounts.close(3), Ok(()));
        assert_eq!(accounts.close(4), Ok(()));
        assert_eq!(accounts.close(5), Ok(()));
        let epochs: Vec<_> = accounts
            .snapshot()
            .iter()
            .map(|a| (a.epoch, a.delivered))
            .collect();
        assert_eq!(epochs, [(3, 4), (4, 2), (5, 1)]);
        // The same positions of epoch 4, counted from its start, give epoch 3's first two
        // checksums: positions are relative to their epoch.
        let again = Accounts::new(0, &[]);
        let c = again.epoch_started(0, 0);
        Accounts::sourced(&c, 0, 0);
        Accounts::sourced(&c, 0, 1);
        let mut cur = Cursor::new(&again);
        cur.delivered(&again, Tag::pos(0));
        cur.delivered(&again, Tag::pos(1));
        assert_eq!(
            again.snapshot()[0].checksum,
            accounts.snapshot()[1].checksum
        );
    }

    #[test]
    fn carried_accounts_must_match_the_pending_positions() {
        let accounts = Accounts::new(0, &[]);
        let counts = accounts.epoch_started(0, 0);
        for p in 0..4 {
            Accounts::sourced(&counts, 0, p);
        }
        accounts.resolved_one_writer(0, Outcome::Delivered);
        accounts.resolved_one_writer(2, Outcome::Delivered);
        let carried = accounts.carried(0, 0);
        assert_eq!(
            EpochAccountState::check_all(&carried, 0, 4, &[1, 3]),
            Ok(())
        );
        let err = EpochAccountState::check_all(&carried, 0, 4, &[1]).unwrap_err();
        assert!(err.contains("2 item(s) in flight but it has 1"), "{err}");
        let err = EpochAccountState::check_all(&carried, 0, 4, &[1, 2]).unwrap_err();
        assert!(err.contains("checksums"), "{err}");
        let err = EpochAccountState::check_all(&carried, 0, 5, &[1, 3]).unwrap_err();
        assert!(
            err.contains("sourced 4 item(s) but its frontier is 5"),
            "{err}"
        );

        // Counts a stranger made up are an error, never an overflow.
        let mut huge = carried.clone();
        huge[0].sourced.0 = u64::MAX;
        huge[0].delivered.0 = u64::MAX;
        huge[0].failed.0 = 2;
        let err = EpochAccountState::check_all(&huge, 0, 4, &[1, 3]).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
        let mut two = carried.clone();
        two.push(EpochAccountState {
            epoch: 1,
            first: 4,
            sourced: (u64::MAX, 0),
            ..carried[0].clone()
        });
        assert!(EpochAccountState::check_all(&two, 0, 4, &[1, 3]).is_err());

        // Resumed: the pending positions, taken again, were sourced already (the ledger does
        // not count them again); once resolved, the epoch balances.
        let resumed = Accounts::new(0, &carried);
        resumed.epoch_started(0, 0);
        assert_eq!(resumed.snapshot()[0].in_flight, 2);
        resumed.resolved_one_writer(1, Outcome::Delivered);
        resumed.resolved_one_writer(3, Outcome::Filtered);
        assert_eq!(resumed.close(0), Ok(()));
        assert_eq!(resumed.snapshot()[0].delivered, 3);
    }
}
