//! The per-pipeline ledger of resume tracking: which source positions are still carried by
//! a message somewhere in the pipeline.
//!
//! Every tag is counted in *tokens*: the source gives a position one token as it sends it; a
//! one-to-many stage adds one per output and gives back its input's at the end; an
//! `aggregate` puts a batch's tokens into a group, itself one token; delivery to the
//! consumer, a failure or a drop gives a token back. A position with no token left is
//! resolved and leaves the ledger, so the ledger holds only positions in flight.
//!
//! Each token given back says what became of its message ([`Outcome`]); a position (and a
//! group) keeps the best outcome of its tokens, and tells the [`Accounts`] once resolved.
//!
//! With resume tracking on, a one-to-many stage's outputs are not plain tokens of their
//! input but outputs of their own, so that the state can say which of an input's outputs
//! were resolved (see [`fanout`](super::fanout)).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use super::accounts::{Accounts, Counts, Outcome};
use super::fanout::{FanOutState, IndexSet};
use super::merge::{MergeBook, MergeCursor};
use super::{source_key, ResumeState, SourceCursor, Tag, SOURCE_SPAN};
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
    /// Tokens of each live group (by its tag), the best outcome of those given back, and
    /// the tags it stands for.
    groups: HashMap<u64, (u32, Outcome, Vec<Tag>)>,
    /// The outputs of one-to-many stages, one by one (resume tracking only).
    fan_outs: FanOuts,
    next_group: u64,
    /// Each source's numbering (one, unless a merge has several inputs), by source index.
    lines: Vec<Line>,
    /// Positions resolved by the current call (memory limit only).
    resolved: Vec<u64>,
    collect: bool,
    /// Positions resolved and their outcomes, kept until taken (a process region's worker
    /// reports them to its parent).
    journal: Option<Vec<(u64, Outcome)>>,
    /// The accounts' tallies of the newest epoch, and its first position.
    newest: Option<(u64, std::sync::Arc<Counts>)>,
    /// The merge's record (resume tracking through a merge).
    merge: Option<MergeBook>,
}

/// One source's positions, as keys (its positions plus its `base`; see [`source_key`]).
#[derive(Debug)]
struct Line {
    base: u64,
    /// The key the source numbers next: every key below it (from `base`) was taken.
    frontier: u64,
    /// (pass, first key) of the passes the source began, oldest first; only those at or
    /// after the pass of the lowest open position are kept.
    passes: VecDeque<(u64, u64)>,
    /// The state this run resumed from: until the source is back at its frontier, a
    /// snapshot keeps what it knew beyond (its pending positions there; the rest resolved).
    resumed: Option<Resumed>,
}

impl Line {
    fn new(index: usize, pass: u64) -> Self {
        let base = source_key(index, 0);
        Self {
            base,
            frontier: base,
            passes: VecDeque::from([(pass, base)]),
            resumed: None,
        }
    }
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

/// What a resumed run's state knew: its frontier and pending positions (as keys, counted
/// from the start of the run), and whether its accounts counted those as sourced already.
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
                lines: vec![Line::new(0, epoch)],
                resolved: Vec::new(),
                collect: false,
                journal: None,
                newest: None,
                merge: None,
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
        inner.lines[0].resumed = Some(Resumed {
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
            let epoch = inner.lines[0].passes[0].0;
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

    /// Source `index` (the next one; 0 is known from the start) starts at pass `pass`,
    /// resuming from `state` (its own part of the pipeline's) if given.
    pub(crate) fn add_source(&self, index: usize, pass: u64, state: Option<&ResumeState>) {
        let mut inner = lock(&self.inner);
        while inner.lines.len() <= index {
            let next = inner.lines.len();
            inner.lines.push(Line::new(next, pass));
        }
        let line = &mut inner.lines[index];
        if line.passes.len() == 1 && line.passes[0].0 != pass {
            line.passes[0].0 = pass;
        }
        if let Some(c) = state {
            let base = line.base;
            let sourced_before = line.resumed.as_ref().is_some_and(|r| r.sourced_before);
            line.resumed = Some(Resumed {
                frontier: base + c.frontier(),
                pending: c.pending().iter().map(|&p| base + p).collect(),
                sourced_before,
            });
        }
    }

    /// A merge records its state here (resume tracking through a merge).
    pub(crate) fn merge_started(&self, book: MergeBook) {
        lock(&self.inner).merge = Some(book);
    }

    /// The merge sends on an item of `input` carrying `tag`, after which its state is
    /// `cursor` (`again`: an item of the resumed state taken again). Returns the tag to send
    /// it with: a group standing for `tag`, so that the merge knows when it is resolved.
    pub(crate) fn merge_took(
        &self,
        input: u32,
        tag: Tag,
        cursor: &MergeCursor,
        again: bool,
    ) -> Tag {
        let mut inner = lock(&self.inner);
        let group = inner.new_group(vec![tag]);
        let Inner { merge, groups, .. } = &mut *inner;
        if let Some(book) = merge {
            book.took(input, group, cursor, again);
            book.prune(|g| groups.contains_key(&g.raw()));
        }
        group
    }

    /// The merge's state changed without an item (`epoch_end`: it ends a merged epoch).
    pub(crate) fn merge_moved(&self, cursor: &MergeCursor, epoch_end: bool) {
        if let Some(book) = &mut lock(&self.inner).merge {
            book.moved(cursor, epoch_end);
        }
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

    /// A source took the position of key `pos` (its keys ascend) and is about to send it.
    pub(crate) fn taken(&self, pos: u64) {
        let mut inner = lock(&self.inner);
        let best = match inner.fan_outs.resumed.is_empty() {
            true => Outcome::Passed,
            false => inner.fan_outs.met_again(&[Tag::pos(pos)], Tag::pos(pos)),
        };
        inner.open.insert(pos, (1, best));
        let line = inner.line(pos);
        line.frontier = pos + 1;
        // A pending position taken again was counted by the run that took it first.
        let again = line
            .resumed
            .as_ref()
            .is_some_and(|r| r.sourced_before && pos < r.frontier);
        if let (Some((first, counts)), false) = (&inner.newest, again) {
            Accounts::sourced(counts, *first, pos);
        }
    }

    /// A source begins pass `pass` at key `first` (its first pass too).
    pub(crate) fn pass_started(&self, pass: u64, first: u64) {
        let mut inner = lock(&self.inner);
        if let Some(accounts) = &self.accounts {
            inner.newest = Some((first, accounts.epoch_started(pass, first)));
        }
        let line = inner.line(first);
        if line.passes.back().is_some_and(|&(p, _)| p == pass) {
            return; // the first pass, known from the start
        }
        line.passes.push_back((pass, first));
        let lowest = inner.lowest(line_index(first));
        let line = inner.line(first);
        while line.passes.len() > 1 && line.passes[1].1 <= lowest {
            line.passes.pop_front();
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
        inner.new_group(members)
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
            } else if let Some((_, _, members)) = inner.groups.get(&tag.raw()) {
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
        let taken: u64 = inner.lines.iter().map(|l| l.frontier - l.base).sum();
        taken - inner.open.len() as u64
    }

    /// The state: for each source, the pass of its lowest open position (or of its
    /// frontier), and its frontier and open positions counted from that pass's start; and
    /// the merge's, if there is one.
    pub(crate) fn snapshot(&self, shape: &str) -> ResumeState {
        let mut inner = lock(&self.inner);
        let cursors: Vec<(SourceCursor, u64)> =
            (0..inner.lines.len()).map(|i| inner.cursor(i)).collect();
        let Inner { merge, groups, .. } = &mut *inner;
        if let Some(book) = merge {
            let live = |g: Tag| groups.contains_key(&g.raw());
            book.prune(live);
            let (epoch, state) = book.state(live);
            let sources = cursors.into_iter().map(|(c, _)| c).collect();
            return ResumeState::merged(shape.to_owned(), epoch, sources, state);
        }
        let (c, first) = cursors.into_iter().next().expect("source 0 is known");
        // Fan-outs are tracked with one source only (refused through a merge).
        let fan_outs = inner.fan_out_states(first);
        let state = ResumeState::new(shape.to_owned(), c.epoch, c.frontier, c.positions())
            .with_fan_outs(fan_outs);
        match &self.accounts {
            // Under the ledger's lock: consistent with the pending positions.
            Some(accounts) => state.with_accounts(accounts.carried(c.epoch, first)),
            None => state,
        }
    }
}

/// The index of the source whose key `key` is.
fn line_index(key: u64) -> usize {
    (key / SOURCE_SPAN) as usize
}

impl Inner {
    /// The lowest open key of source `index`, or its frontier.
    fn lowest(&self, index: usize) -> u64 {
        let line = &self.lines[index];
        self.open
            .range(line.base..line.base + SOURCE_SPAN)
            .next()
            .map_or(line.frontier, |(&k, _)| k)
    }

    /// The line of the source of key `key`.
    fn line(&mut self, key: u64) -> &mut Line {
        let index = line_index(key).min(self.lines.len() - 1);
        &mut self.lines[index]
    }

    fn new_group(&mut self, members: Vec<Tag>) -> Tag {
        let id = self.next_group;
        self.next_group += 1;
        let tag = Tag::group(id);
        // A batch rebuilt after a resume may be an input whose outputs were partly resolved.
        let best = match self.fan_outs.resumed.is_empty() {
            true => Outcome::Passed,
            false => self.fan_outs.met_again(&members, tag),
        };
        self.groups.insert(tag.raw(), (1, best, members));
        tag
    }

    /// Source `index`'s cursor (positions counted from the start of its pass), and the key
    /// that pass starts at.
    fn cursor(&self, index: usize) -> (SourceCursor, u64) {
        let line = &self.lines[index];
        // Behind the resumed state's frontier, what it knew beyond ours still holds: its
        // pending positions there are still to deliver, the others were resolved.
        let (frontier, beyond) = match &line.resumed {
            Some(r) if r.frontier > line.frontier => {
                let from = r.pending.partition_point(|&p| p < line.frontier);
                (r.frontier, &r.pending[from..])
            }
            _ => (line.frontier, &[][..]),
        };
        let lowest = self
            .lowest(index)
            .min(beyond.first().copied().unwrap_or(u64::MAX));
        let &(pass, first) = line
            .passes
            .iter()
            .rev()
            .find(|&&(_, first)| first <= lowest)
            .unwrap_or(&line.passes[0]);
        let pending: Vec<u64> = self
            .open
            .range(line.base..line.base + SOURCE_SPAN)
            .map(|(k, _)| k)
            .chain(beyond)
            .map(|&p| p - first)
            .collect();
        (SourceCursor::new(pass, frontier - first, &pending), first)
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
            group.1 = group.1.max(outcome);
            if group.0 == 0 {
                // The best outcome of the group's messages is its members' (a batch
                // delivered, or one of its fanned-out outputs), as for a position.
                let (_, best, members) = self.groups.remove(&id).expect("present");
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
                let Some((_, best, members)) = self.groups.get(&key) else {
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
            (self.open.contains_key(p) || *p >= self.lines[0].frontier)
                && live.binary_search(p).is_err()
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
