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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use super::accounts::{Accounts, Counts, Outcome};
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
    next_group: u64,
    /// Each source's numbering (one, unless a merge has several inputs), by source index.
    lines: Vec<Line>,
    /// Positions resolved by the current call (memory limit only).
    resolved: Vec<u64>,
    collect: bool,
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
                next_group: 0,
                lines: vec![Line::new(0, epoch)],
                resolved: Vec::new(),
                collect: false,
                newest: None,
                merge: None,
            }),
            memory: None,
            accounts: None,
        }
    }

    /// The run resumes from `state` (whose epoch is this ledger's first pass).
    pub(crate) fn resuming(mut self, state: &ResumeState) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .lines[0]
            .resumed = Some(Resumed {
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
        inner.open.insert(pos, (1, Outcome::Passed));
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
        if tag.is_group() {
            if let Some(group) = inner.groups.get_mut(&tag.raw()) {
                group.0 += 1;
            }
        } else if let Some((tokens, _)) = inner.open.get_mut(&tag.raw()) {
            *tokens += 1;
        }
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
        let state = ResumeState::new(shape.to_owned(), c.epoch, c.frontier, c.positions());
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
        self.groups.insert(tag.raw(), (1, Outcome::Passed, members));
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

    fn release(&mut self, tag: Tag, outcome: Outcome, accounts: Option<&Accounts>) {
        if tag.is_group() {
            let id = tag.raw();
            let Some(group) = self.groups.get_mut(&id) else {
                return;
            };
            group.0 -= 1;
            group.1 = group.1.max(outcome);
            if group.0 == 0 {
                // Its best outcome is its members' (a batch delivered), as for a position.
                let (_, best, members) = self.groups.remove(&id).expect("present");
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
                if self.collect {
                    self.resolved.push(tag.raw());
                }
                if let Some(accounts) = accounts {
                    accounts.resolved_one_writer(tag.raw(), best);
                }
            }
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
