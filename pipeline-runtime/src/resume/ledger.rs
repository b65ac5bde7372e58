//! The per-pipeline ledger of resume tracking: which source positions are still carried by
//! a message somewhere in the pipeline.
//!
//! Every tag is counted in *tokens*: the source gives a position one token as it sends it; a
//! one-to-many stage adds one per output and gives back its input's at the end; an
//! `aggregate` puts a batch's tokens into a group, itself one token; delivery to the
//! consumer, a failure or a drop gives a token back. A position with no token left is
//! resolved and leaves the ledger, so the ledger holds only positions in flight.
//!
//! Each token given back says what became of its message ([`Outcome`]); a position keeps
//! the best outcome of its tokens, and tells the [`Accounts`] once resolved.
//!
//! With resume tracking on, a one-to-many stage's outputs are not plain tokens of their
//! input but outputs of their own, so that the state can say which of an input's outputs
//! were resolved (see [`fanout`](super::fanout)).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use super::accounts::{Accounts, Counts, Outcome};
use super::fanout::{FanOutState, IndexSet};
use super::{ResumeState, Tag};
use crate::memory::MemoryLimit;
use crate::sync::lock;

#[derive(Debug)]
pub(crate) struct Ledger {
    inner: Mutex<Inner>,
    /// The memory limit, whose bytes a position gives back once resolved.
    memory: Option<std::sync::Arc<MemoryLimit>>,
    /// Told of every position taken and resolved, under the lock.
    accounts: Option<std::sync::Arc<Accounts>>,
}

#[derive(Debug)]
struct Inner {
    /// Tokens of each position taken by the source and not yet resolved, and the best
    /// outcome of those given back.
    open: BTreeMap<u64, (u32, Outcome)>,
    /// Tokens of each live group (by its tag), the tags it stands for, and the best outcome
    /// of the tokens given back.
    groups: HashMap<u64, (u32, Vec<Tag>, Outcome)>,
    /// The outputs of one-to-many stages, one by one (resume tracking only).
    fan_outs: FanOuts,
    next_group: u64,
    /// The position the source numbers next: every position below it was taken.
    frontier: u64,
    /// (pass, first position) of the passes the source began, oldest first; only those at
    /// or after the pass of the lowest open position are kept.
    passes: VecDeque<(u64, u64)>,
    /// Positions resolved by the current call (memory limit only).
    resolved: Vec<u64>,
    collect: bool,
    /// Positions resolved and their outcomes, kept until taken (a process region's worker
    /// reports them to its parent).
    journal: Option<Vec<(u64, Outcome)>>,
    /// The accounts' tallies of the newest epoch, and its first position.
    newest: Option<(u64, std::sync::Arc<Counts>)>,
    /// The state this run resumed from: until the source is back at its frontier, a
    /// snapshot keeps what it knew beyond (its pending positions there; the rest resolved).
    resumed: Option<Resumed>,
}

/// A one-to-many stage's outputs, each its own tag (resume tracking only).
#[derive(Debug, Default)]
struct FanOuts {
    /// Outputs are tracked one by one (resume tracking is on).
    on: bool,
    /// Each live output (by its tag's key): its input's tag, its index among the input's
    /// outputs, and its own tokens (more than one after a process region copies it). Its
    /// input holds one token for it.
    outputs: HashMap<u64, (Tag, u64, u32)>,
    /// For inputs still open (by their tag's key), the indices of their resolved outputs.
    done: HashMap<u64, IndexSet>,
    /// The resumed state's records not yet met again, by their input's first position
    /// (counted from the run's start).
    resumed: BTreeMap<u64, FanOutState>,
}

/// What a resumed run's state knew: its frontier and pending positions (counted from the
/// start of the run), and whether its accounts counted those as sourced already.
#[derive(Debug)]
struct Resumed {
    frontier: u64,
    pending: Vec<u64>,
    sourced_before: bool,
}

impl Ledger {
    /// A ledger whose source starts at pass `epoch`, numbering from 0.
    pub(crate) fn new(epoch: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                open: BTreeMap::new(),
                groups: HashMap::new(),
                fan_outs: FanOuts::default(),
                next_group: 0,
                frontier: 0,
                passes: VecDeque::from([(epoch, 0)]),
                resolved: Vec::new(),
                collect: false,
                journal: None,
                newest: None,
                resumed: None,
            }),
            memory: None,
            accounts: None,
        }
    }

    /// A one-to-many stage's outputs are tracked one by one (resume tracking is on).
    pub(crate) fn tracking_outputs(mut self) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .fan_outs
            .on = true;
        self
    }

    /// Whether outputs are tracked one by one: then a one-to-many stage after another is
    /// refused (an output's own outputs are not).
    pub(crate) fn tracks_outputs(&self) -> bool {
        lock(&self.inner).fan_outs.on
    }

    /// The run resumes from `state` (whose epoch is this ledger's first pass).
    pub(crate) fn resuming(mut self, state: &ResumeState) -> Self {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.fan_outs.resumed = state
            .fan_outs()
            .iter()
            .map(|r| (r.input[0], r.clone()))
            .collect();
        inner.resumed = Some(Resumed {
            frontier: state.frontier(),
            pending: state.pending().to_vec(),
            sourced_before: !state.accounts().is_empty(),
        });
        self
    }

    /// Positions taken and resolved are counted in `accounts`.
    pub(crate) fn with_accounts(mut self, accounts: std::sync::Arc<Accounts>) -> Self {
        {
            let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
            let epoch = inner.passes[0].0;
            inner.newest = Some((0, accounts.epoch_started(epoch, 0)));
        }
        self.accounts = Some(accounts);
        self
    }

    /// Resolved positions give their bytes back to `memory`.
    pub(crate) fn with_memory_limit(mut self, memory: std::sync::Arc<MemoryLimit>) -> Self {
        self.memory = Some(memory);
        lock(&self.inner).collect = true;
        self
    }

    /// Hands the positions resolved under `inner` to the memory, after the ledger's lock.
    fn give_back(&self, mut inner: std::sync::MutexGuard<'_, Inner>) {
        let Some(memory) = &self.memory else {
            return;
        };
        let resolved = std::mem::take(&mut inner.resolved);
        drop(inner);
        for pos in resolved {
            memory.release(pos);
        }
    }

    /// The source took position `pos` (its positions ascend) and is about to send it.
    pub(crate) fn taken(&self, pos: u64) {
        let mut inner = lock(&self.inner);
        let best = match inner.fan_outs.resumed.is_empty() {
            true => Outcome::Passed,
            false => inner.fan_outs.met_again(&[Tag::pos(pos)], Tag::pos(pos)),
        };
        inner.open.insert(pos, (1, best));
        inner.frontier = pos + 1;
        // A pending position taken again was counted by the run that took it first.
        let again = inner
            .resumed
            .as_ref()
            .is_some_and(|r| r.sourced_before && pos < r.frontier);
        if let (Some((first, counts)), false) = (&inner.newest, again) {
            Accounts::sourced(counts, *first, pos);
        }
    }

    /// The source begins pass `pass` at position `first` (its first pass too).
    pub(crate) fn pass_started(&self, pass: u64, first: u64) {
        let mut inner = lock(&self.inner);
        if let Some(accounts) = &self.accounts {
            inner.newest = Some((first, accounts.epoch_started(pass, first)));
        }
        if inner.passes.back().is_some_and(|&(p, _)| p == pass) {
            return; // the first pass, known from the start
        }
        inner.passes.push_back((pass, first));
        let lowest = inner.lowest();
        while inner.passes.len() > 1 && inner.passes[1].1 <= lowest {
            inner.passes.pop_front();
        }
    }

    /// One more message carries `tag` (an output of a one-to-many stage).
    pub(crate) fn add_token(&self, tag: Tag) {
        let mut inner = lock(&self.inner);
        inner.add_token(tag);
    }

    /// The outputs of `input` in a one-to-many stage: `None` unless they are tracked one by
    /// one; else the indices of those already resolved (before a stop), which the stage
    /// skips.
    pub(crate) fn fan_out(&self, input: Tag) -> Option<IndexSet> {
        let inner = lock(&self.inner);
        let fan_outs = &inner.fan_outs;
        fan_outs
            .on
            .then(|| fan_outs.done.get(&input.raw()).cloned().unwrap_or_default())
    }

    /// Output `k` of `input` (of a one-to-many stage) is about to be sent: returns its tag,
    /// one token, for which `input` holds one of its own.
    pub(crate) fn output(&self, input: Tag, k: u64) -> Tag {
        let mut inner = lock(&self.inner);
        let id = inner.next_group;
        inner.next_group += 1;
        let tag = Tag::group(id);
        inner.fan_outs.outputs.insert(tag.raw(), (input, k, 1));
        inner.add_token(input);
        tag
    }

    /// Puts `members` (one token each) into a new group holding one token; returns its tag.
    pub(crate) fn group(&self, members: Vec<Tag>) -> Tag {
        let mut inner = lock(&self.inner);
        let id = inner.next_group;
        inner.next_group += 1;
        let tag = Tag::group(id);
        let best = match inner.fan_outs.resumed.is_empty() {
            true => Outcome::Passed,
            false => inner.fan_outs.met_again(&members, tag),
        };
        inner.groups.insert(tag.raw(), (1, members, best));
        tag
    }

    /// A message carrying `tag` was delivered, failed or dropped (`outcome`): gives its
    /// token back.
    pub(crate) fn resolve(&self, tag: Tag, outcome: Outcome) {
        let mut inner = lock(&self.inner);
        inner.release(tag, outcome, self.accounts.as_deref());
        self.give_back(inner);
    }

    /// Gives back one token of each of `tags`.
    pub(crate) fn resolve_all(&self, tags: &[Tag], outcome: Outcome) {
        let mut inner = lock(&self.inner);
        for &tag in tags {
            inner.release(tag, outcome, self.accounts.as_deref());
        }
        self.give_back(inner);
    }

    /// Resolved positions are kept, with their outcomes, until
    /// [`take_journal`](Self::take_journal) (a process region's worker).
    #[cfg(unix)]
    pub(crate) fn journaling(mut self) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .journal = Some(Vec::new());
        self
    }

    /// The positions resolved since the last call, with their outcomes.
    #[cfg(unix)]
    pub(crate) fn take_journal(&self) -> Vec<(u64, Outcome)> {
        let mut inner = lock(&self.inner);
        inner
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Appends to `out` what a message tagged `tag` stands for, once per token it holds:
    /// positions (a batch's members), and output `k` of a position (`(pos, Some(k))`) for a
    /// one-to-many stage's output tracked one by one.
    #[cfg(unix)]
    pub(crate) fn sources(&self, tag: Tag, out: &mut Vec<(u64, Option<u64>)>) {
        let inner = lock(&self.inner);
        let mut todo = vec![tag];
        while let Some(tag) = todo.pop() {
            if !tag.is_group() {
                out.push((tag.raw(), None));
            } else if let Some((_, members, _)) = inner.groups.get(&tag.raw()) {
                todo.extend(members.iter().rev());
            } else if let Some(&(input, k, _)) = inner.fan_outs.outputs.get(&tag.raw()) {
                match input.is_group() {
                    false => out.push((input.raw(), Some(k))),
                    true => todo.push(input),
                }
            }
        }
    }

    /// The outputs `done` of the input at `pos` were resolved before a resume (a region's
    /// worker learns it from its parent): its one-to-many stage skips them.
    #[cfg(unix)]
    pub(crate) fn seed_fan_out(&self, pos: u64, done: IndexSet) {
        if !done.is_empty() {
            lock(&self.inner).fan_outs.done.insert(pos, done);
        }
    }

    /// How many positions the source has taken that are resolved (delivered, failed or
    /// dropped): what a process region's worker reports as done with.
    #[cfg(unix)]
    pub(crate) fn resolved(&self) -> u64 {
        let inner = lock(&self.inner);
        inner.frontier - inner.open.len() as u64
    }

    /// The state: the pass of the lowest open position (or of the frontier), and the
    /// frontier and open positions counted from that pass's start.
    pub(crate) fn snapshot(&self, shape: &str) -> ResumeState {
        let inner = lock(&self.inner);
        // Behind the resumed state's frontier, what it knew beyond ours still holds: its
        // pending positions there are still to deliver, the others were resolved.
        let (frontier, beyond) = match &inner.resumed {
            Some(r) if r.frontier > inner.frontier => {
                let from = r.pending.partition_point(|&p| p < inner.frontier);
                (r.frontier, &r.pending[from..])
            }
            _ => (inner.frontier, &[][..]),
        };
        let lowest = inner
            .lowest()
            .min(beyond.first().copied().unwrap_or(u64::MAX));
        let &(pass, first) = inner
            .passes
            .iter()
            .rev()
            .find(|&&(_, first)| first <= lowest)
            .unwrap_or(&inner.passes[0]);
        let pending = inner
            .open
            .keys()
            .chain(beyond)
            .map(|&p| p - first)
            .collect();
        let fan_outs = inner.fan_out_states(first);
        let state = ResumeState::new(shape.to_owned(), pass, frontier - first, pending)
            .with_fan_outs(fan_outs);
        match &self.accounts {
            // Under the ledger's lock: consistent with the pending positions.
            Some(accounts) => state.with_accounts(accounts.carried(pass, first)),
            None => state,
        }
    }
}

impl Inner {
    fn lowest(&self) -> u64 {
        self.open.keys().next().copied().unwrap_or(self.frontier)
    }

    fn add_token(&mut self, tag: Tag) {
        if tag.is_group() {
            if let Some(group) = self.groups.get_mut(&tag.raw()) {
                group.0 += 1;
            } else if let Some(output) = self.fan_outs.outputs.get_mut(&tag.raw()) {
                output.2 += 1;
            }
        } else if let Some((tokens, _)) = self.open.get_mut(&tag.raw()) {
            *tokens += 1;
        }
    }

    fn release(&mut self, tag: Tag, outcome: Outcome, accounts: Option<&Accounts>) {
        if tag.is_group() {
            let id = tag.raw();
            let Some(group) = self.groups.get_mut(&id) else {
                let Some((input, k, tokens)) = self.fan_outs.outputs.get_mut(&id) else {
                    return;
                };
                *tokens -= 1;
                if *tokens == 0 {
                    // An output of a one-to-many stage: done, and its input's token back.
                    let (input, k) = (*input, *k);
                    self.fan_outs.outputs.remove(&id);
                    self.fan_outs.done.entry(input.raw()).or_default().insert(k);
                    self.release(input, outcome, accounts);
                }
                return;
            };
            group.0 -= 1;
            group.2 = group.2.max(outcome);
            if group.0 == 0 {
                // The best outcome of the group's messages is its members' (a batch
                // delivered, or one of its fanned-out outputs).
                let (_, members, best) = self.groups.remove(&id).expect("present");
                self.fan_outs.input_resolved(id);
                for member in members {
                    self.release(member, best, accounts);
                }
            }
        } else if let Some((tokens, best)) = self.open.get_mut(&tag.raw()) {
            *tokens -= 1;
            *best = (*best).max(outcome);
            if *tokens == 0 {
                let best = *best;
                self.open.remove(&tag.raw());
                self.fan_outs.input_resolved(tag.raw());
                if self.collect {
                    self.resolved.push(tag.raw());
                }
                if let Some(journal) = &mut self.journal {
                    journal.push((tag.raw(), best));
                }
                if let Some(accounts) = accounts {
                    accounts.resolved_one_writer(tag.raw(), best);
                }
            }
        }
    }
}

impl Inner {
    /// The records of the inputs with outputs resolved, positions counted from `first`:
    /// the live ones, and those of the resumed state not met again whose positions are all
    /// still unresolved.
    fn fan_out_states(&self, first: u64) -> Vec<FanOutState> {
        let fan_outs = &self.fan_outs;
        let mut records: Vec<FanOutState> = Vec::new();
        for (&key, done) in &fan_outs.done {
            let (input, outcome) = if key & super::GROUP != 0 {
                let Some((_, members, best)) = self.groups.get(&key) else {
                    continue;
                };
                // Only a batch of source positions is met again (nested fan-outs are
                // refused when the pipeline is built).
                if members.iter().any(|m| m.is_group()) {
                    continue;
                }
                (members.iter().map(|m| m.raw()).collect(), *best)
            } else {
                let Some(&(_, best)) = self.open.get(&key) else {
                    continue;
                };
                (vec![key], best)
            };
            records.push(FanOutState {
                input,
                done: done.clone(),
                outcome,
            });
        }
        // A record not met again stays while its positions are unresolved and in no live
        // record (a batch made again of them in another order or grouping is not the
        // same input: its outputs are redone).
        let mut live: Vec<u64> = records
            .iter()
            .flat_map(|r| r.input.iter().copied())
            .collect();
        live.sort_unstable();
        let unresolved = |p: &u64| {
            (self.open.contains_key(p) || *p >= self.frontier) && live.binary_search(p).is_err()
        };
        records.extend(
            fan_outs
                .resumed
                .values()
                .filter(|r| r.input.iter().all(unresolved))
                .cloned(),
        );
        for r in &mut records {
            for p in &mut r.input {
                *p -= first;
            }
        }
        records.sort_unstable_by_key(|r| r.input[0]);
        records
    }
}

impl FanOuts {
    /// A message standing for `input` (source positions) is made again, tagged `tag`: if
    /// the resumed state had outputs of it resolved, they are done for `tag`. Returns the
    /// best outcome they had.
    fn met_again(&mut self, input: &[Tag], tag: Tag) -> Outcome {
        let Some(first) = input.first().filter(|t| !t.is_group()) else {
            return Outcome::Passed;
        };
        let same = |r: &FanOutState| {
            r.input.len() == input.len() && r.input.iter().zip(input).all(|(&p, t)| p == t.raw())
        };
        match self.resumed.get(&first.raw()) {
            Some(r) if same(r) => {
                let r = self.resumed.remove(&first.raw()).expect("present");
                self.done.insert(tag.raw(), r.done);
                r.outcome
            }
            _ => Outcome::Passed,
        }
    }

    /// The input keyed `key` is resolved: its outputs' record goes.
    #[inline]
    fn input_resolved(&mut self, key: u64) {
        if !self.done.is_empty() {
            self.done.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_resolved_with_its_last_token() {
        let ledger = Ledger::new(0);
        for p in 0..4 {
            ledger.taken(p);
        }
        // Position 1 fans out into three outputs, then gives its input token back.
        for _ in 0..3 {
            ledger.add_token(Tag::pos(1));
        }
        ledger.resolve(Tag::pos(1), Outcome::Passed);
        let batch = ledger.group(vec![Tag::pos(0), Tag::pos(1), Tag::pos(1)]);
        ledger.resolve(Tag::pos(2), Outcome::Failed);
        assert_eq!(ledger.snapshot("s").pending(), [0, 1, 3]);
        ledger.resolve(batch, Outcome::Delivered);
        assert_eq!(
            ledger.snapshot("s").pending(),
            [1, 3],
            "one output of 1 still out"
        );
        ledger.resolve(Tag::pos(1), Outcome::Delivered);
        let state = ledger.snapshot("s");
        assert_eq!((state.frontier(), state.pending()), (4, &[3][..]));
    }

    #[test]
    fn resolved_outputs_of_an_input_in_flight_are_skipped_after_a_resume() {
        let ledger = Ledger::new(0).tracking_outputs();
        for p in 0..6 {
            ledger.taken(p);
        }
        // Position 1 fans out into three outputs; 0 and 2 are resolved, 1 is in flight.
        assert_eq!(ledger.fan_out(Tag::pos(1)), Some(IndexSet::default()));
        let outs: Vec<Tag> = (0..3).map(|k| ledger.output(Tag::pos(1), k)).collect();
        ledger.resolve(Tag::pos(1), Outcome::Passed);
        ledger.resolve(outs[0], Outcome::Filtered);
        ledger.resolve(outs[2], Outcome::Delivered);
        // A batch of 3, 4, 5 taken apart; its first output delivered.
        let batch = ledger.group(vec![Tag::pos(3), Tag::pos(4), Tag::pos(5)]);
        let first = ledger.output(batch, 0);
        let _second = ledger.output(batch, 1);
        ledger.resolve(batch, Outcome::Passed);
        ledger.resolve(first, Outcome::Delivered);
        for p in [0, 2] {
            ledger.resolve(Tag::pos(p), Outcome::Delivered);
        }
        let state = ledger.snapshot("s");
        assert_eq!(state.pending(), [1, 3, 4, 5]);
        let records: Vec<(Vec<u64>, Vec<u64>)> = state
            .fan_outs()
            .iter()
            .map(|r| {
                (
                    r.input.clone(),
                    (0..4).filter(|&k| r.done.contains(k)).collect(),
                )
            })
            .collect();
        assert_eq!(records, [(vec![1], vec![0, 2]), (vec![3, 4, 5], vec![0])]);
        assert!(state
            .fan_outs()
            .iter()
            .all(|r| r.outcome == Outcome::Delivered));
        state.check("s", false).unwrap();

        // Resumed: the same inputs skip what was resolved; a stop before they are met
        // again keeps their records.
        let again = Ledger::new(0).tracking_outputs().resuming(&state);
        assert_eq!(again.snapshot("s").fan_outs(), state.fan_outs());
        again.taken(1);
        let done = again.fan_out(Tag::pos(1)).unwrap();
        assert!(done.contains(0) && !done.contains(1) && done.contains(2));
        for p in [3, 4, 5] {
            again.taken(p);
        }
        // The batch made again in another order is another input: its outputs are redone.
        let other = again.group(vec![Tag::pos(4), Tag::pos(3), Tag::pos(5)]);
        assert_eq!(again.fan_out(other), Some(IndexSet::default()));
        let out = again.output(other, 0);
        let _in_flight = again.output(other, 1);
        again.resolve(other, Outcome::Passed);
        again.resolve(out, Outcome::Delivered);
        let later = again.snapshot("s");
        later.check("s", false).unwrap();
        assert_eq!(later.fan_outs().len(), 2, "{:?}", later.fan_outs());
        assert_eq!(later.fan_outs()[1].input, [4, 3, 5]);
    }

    #[test]
    fn a_resumed_ledger_behind_its_states_frontier_keeps_what_the_state_knew_beyond() {
        let state = ResumeState::new("s".into(), 0, 10, vec![2, 5, 8]);
        let ledger = Ledger::new(0).resuming(&state);
        ledger.taken(2);
        ledger.taken(5);
        ledger.resolve(Tag::pos(2), Outcome::Delivered);
        let again = ledger.snapshot("s");
        // 6, 7 and 9 were resolved before the first stop: they stay so.
        assert_eq!((again.frontier(), again.pending()), (10, &[5, 8][..]));
        for p in [8, 10] {
            ledger.taken(p);
        }
        let later = ledger.snapshot("s");
        assert_eq!((later.frontier(), later.pending()), (11, &[5, 8, 10][..]));
    }

    #[test]
    fn the_state_is_counted_from_the_pass_of_the_lowest_open_position() {
        let ledger = Ledger::new(5);
        for p in 0..10 {
            ledger.taken(p);
        }
        ledger.pass_started(6, 10);
        ledger.taken(10);
        ledger.taken(11);
        for p in 0..9 {
            ledger.resolve(Tag::pos(p), Outcome::Delivered);
        }
        let state = ledger.snapshot("s");
        assert_eq!(state.epoch(), 5);
        assert_eq!((state.frontier(), state.pending()), (12, &[9, 10, 11][..]));
        ledger.resolve(Tag::pos(9), Outcome::Delivered);
        ledger.resolve(Tag::pos(11), Outcome::Delivered);
        let state = ledger.snapshot("s");
        assert_eq!(state.epoch(), 6);
        assert_eq!((state.frontier(), state.pending()), (2, &[0][..]));
    }
}
