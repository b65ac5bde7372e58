//! The books of a `remote_region`: which tickets exist, who holds each, which are answered
//! and which are delivered. Exactly once lives here: a ticket is answered once (the first
//! answer wins; a later one is dropped and counted), a ticket a lane loses is queued again
//! (replayed), and delivery follows ticket numbers where input order is asked for.
//!
//! Lanes are numbered local first, then one per remote worker. Local lanes take any queued
//! ticket; a remote lane takes one only in a deficit: there are no local lanes, or none is
//! waiting for work and the consumer has nothing to read.
//!
//! Each ticket keeps its inputs' tags (resume tracking, the accounts) here, not in what
//! lanes see: they go with the first answer to the delivering thread, so a replayed
//! ticket resolves its positions once, and a late answer never reaches the ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::runner::Ticket;
use crate::resume::Tag;
use crate::sync::lock;

/// Tickets a lane holds at once (sent and not answered): one being worked on, one on its way.
pub(crate) const WINDOW: usize = 2;
/// How long a wait lasts before its caller looks whether to quit.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// A ticket replayed this many times is a failure, not bad luck (a region that fails on it).
const MAX_REPLAYS: u32 = 4;

/// Counters of one lane, read by [`RemoteStats`](super::RemoteStats).
#[derive(Debug, Default)]
pub(crate) struct LaneCounts {
    pub(crate) items: AtomicU64,
    pub(crate) tickets: AtomicU64,
}

/// Counters of the whole tier.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) delivered: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) late_dropped: AtomicU64,
}

struct Entry {
    ticket: Arc<Ticket>,
    tags: Vec<Tag>,
    /// In `pending` now.
    queued: bool,
    replays: u32,
}

struct LaneState {
    remote: bool,
    /// Tickets sent to it and not answered by it, with when.
    held: Vec<(u64, Instant)>,
    /// It held a ticket past the timeout: its tickets were replayed, and it takes no more
    /// until it has answered or lost those.
    suspect: bool,
    /// Can work (connected, or not yet given up on).
    alive: bool,
    why_not: String,
}

struct State {
    next_id: u64,
    /// Created and not answered yet.
    open: HashMap<u64, Entry>,
    /// Answered, not delivered yet.
    answered: BTreeMap<u64, Answered>,
    undelivered: BTreeSet<u64>,
    pending: VecDeque<u64>,
    /// An epoch boundary before ticket `b`: after every ticket numbered below it.
    boundaries: VecDeque<u64>,
    input_ended: bool,
    lanes: Vec<LaneState>,
    local_waiting: usize,
    failure: Option<String>,
    finished: bool,
}

/// A ticket's answer, as the delivering thread takes it.
#[derive(Default)]
pub(crate) struct Answered {
    /// The lane that made it.
    pub(crate) lane: usize,
    /// The encoded outputs.
    pub(crate) items: Vec<Bytes>,
    /// Per output, the index in the ticket of its input (see [`Answer`](super::runner::Answer)).
    pub(crate) sources: Vec<u64>,
    /// The ticket's inputs' tags.
    pub(crate) tags: Vec<Tag>,
}

/// What the delivering thread does next.
pub(crate) enum Delivery {
    Items(Answered),
    Boundary,
    End,
    Failed(String),
    Nothing,
}

pub(crate) struct Schedule {
    state: Mutex<State>,
    moved: Condvar,
    /// Undelivered tickets at most (bounds what the tier holds).
    capacity: usize,
    input_order: bool,
    pub(crate) counts: Arc<Counts>,
    pub(crate) lane_counts: Vec<Arc<LaneCounts>>,
}

impl Schedule {
    /// `remote` says, per lane, whether it is a remote worker's.
    pub(crate) fn new(
        remote: &[bool],
        input_order: bool,
        counts: Arc<Counts>,
        lane_counts: Vec<Arc<LaneCounts>>,
    ) -> Self {
        let lanes = remote
            .iter()
            .map(|&remote| LaneState {
                remote,
                held: Vec::new(),
                suspect: false,
                alive: true,
                why_not: String::new(),
            })
            .collect();
        Self {
            state: Mutex::new(State {
                next_id: 0,
                open: HashMap::new(),
                answered: BTreeMap::new(),
                undelivered: BTreeSet::new(),
                pending: VecDeque::new(),
                boundaries: VecDeque::new(),
                input_ended: false,
                lanes,
                local_waiting: 0,
                failure: None,
                finished: false,
            }),
            moved: Condvar::new(),
            capacity: 2 * WINDOW * remote.len().max(1) + 2,
            input_order,
            counts,
            lane_counts,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.moved
            .wait_timeout(state, POLL)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Whether lanes and the dispatcher should end: all delivered, failed or stopped.
    pub(crate) fn finished(&self) -> bool {
        self.state().finished
    }

    /// Ends everything (a stop, or the end of delivery).
    pub(crate) fn finish(&self) {
        self.state().finished = true;
        self.moved.notify_all();
    }

    /// Fails the tier: the delivering thread reports `why`.
    pub(crate) fn fail(&self, why: String) {
        let mut state = self.state();
        state.failure.get_or_insert(why);
        self.moved.notify_all();
    }

    /// A new ticket of `positions`, their encoded items and their tags, once there is
    /// room; false if the tier has finished.
    pub(crate) fn add_ticket(
        &self,
        positions: Vec<u64>,
        items: Vec<Vec<u8>>,
        tags: Vec<Tag>,
    ) -> bool {
        let mut state = self.state();
        while state.undelivered.len() >= self.capacity && !state.finished {
            state = self.wait(state);
        }
        if state.finished {
            return false;
        }
        let id = state.next_id;
        state.next_id += 1;
        let ticket = Arc::new(Ticket {
            id,
            positions,
            items,
        });
        state.open.insert(
            id,
            Entry {
                ticket,
                tags,
                queued: true,
                replays: 0,
            },
        );
        state.undelivered.insert(id);
        state.pending.push_back(id);
        self.moved.notify_all();
        true
    }

    /// An epoch boundary after every ticket added so far.
    pub(crate) fn add_boundary(&self) {
        let mut state = self.state();
        let at = state.next_id;
        state.boundaries.push_back(at);
        self.moved.notify_all();
    }

    pub(crate) fn end_input(&self) {
        self.state().input_ended = true;
        self.moved.notify_all();
    }

    /// The next ticket for `lane`, waiting up to [`POLL`]; `deficit` says whether the
    /// consumer is waiting for data (asked of remote lanes only).
    pub(crate) fn take(&self, lane: usize, deficit: &dyn Fn() -> bool) -> Option<Arc<Ticket>> {
        let mut state = self.state();
        if state.finished {
            return None;
        }
        if let Some(ticket) = self.try_take(&mut state, lane, deficit) {
            return Some(ticket);
        }
        // A local lane with room is waiting for work: no deficit while one is.
        let idle = !state.lanes[lane].remote && state.lanes[lane].held.len() < WINDOW;
        if idle {
            state.local_waiting += 1;
        }
        state = self.wait(state);
        if idle {
            state.local_waiting -= 1;
        }
        self.try_take(&mut state, lane, deficit)
    }

    fn try_take(
        &self,
        state: &mut State,
        lane: usize,
        deficit: &dyn Fn() -> bool,
    ) -> Option<Arc<Ticket>> {
        let has_local = state.lanes.iter().any(|l| !l.remote);
        let me = &state.lanes[lane];
        if state.finished || me.suspect || me.held.len() >= WINDOW || state.pending.is_empty() {
            return None;
        }
        if me.remote && has_local && (state.local_waiting > 0 || !deficit()) {
            return None;
        }
        let id = state.pending.pop_front()?;
        let entry = state.open.get_mut(&id)?;
        entry.queued = false;
        let ticket = entry.ticket.clone();
        state.lanes[lane].held.push((id, Instant::now()));
        Some(ticket)
    }

    /// `lane` answered ticket `id` with `items` and their `sources`: the first answer is
    /// kept, a later one dropped.
    pub(crate) fn answer(&self, lane: usize, id: u64, items: Vec<Bytes>, sources: Vec<u64>) {
        let mut state = self.state();
        let me = &mut state.lanes[lane];
        me.held.retain(|&(held, _)| held != id);
        if me.held.is_empty() {
            me.suspect = false;
        }
        match state.open.remove(&id) {
            Some(entry) => {
                if entry.queued {
                    state.pending.retain(|&p| p != id);
                }
                let answered = Answered {
                    lane,
                    items,
                    sources,
                    tags: entry.tags,
                };
                state.answered.insert(id, answered);
            }
            None => {
                // Answered already (by a lane it was replayed on), or never sent.
                self.counts
                    .late_dropped
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
            }
        }
        self.moved.notify_all();
    }

    /// Queues again, first, the tickets `ids` that are still unanswered and not queued.
    fn replay(&self, state: &mut State, ids: &[u64]) {
        let mut failure = None;
        for &id in ids.iter().rev() {
            if let Some(entry) = state.open.get_mut(&id) {
                if !entry.queued {
                    entry.queued = true;
                    entry.replays += 1;
                    if entry.replays > MAX_REPLAYS {
                        failure = Some(format!(
                            "a ticket of {} items was lost by {} lanes in a row (a region \
                             that fails or crashes on its items?)",
                            entry.ticket.items.len(),
                            entry.replays
                        ));
                    }
                    self.counts
                        .replayed
                        .fetch_add(entry.ticket.items.len() as u64, Ordering::Relaxed);
                    state.pending.push_front(id);
                }
            }
        }
        if let Some(why) = failure {
            state.failure.get_or_insert(why);
        }
    }

    /// `lane` lost its connection (or its region): its unanswered tickets are replayed.
    pub(crate) fn lane_failed(&self, lane: usize) {
        let mut state = self.state();
        let held: Vec<u64> = state.lanes[lane].held.drain(..).map(|(id, _)| id).collect();
        state.lanes[lane].suspect = false;
        self.replay(&mut state, &held);
        self.moved.notify_all();
    }

    /// Replays `lane`'s tickets if it has held one longer than `timeout` (the lane keeps
    /// them too: should it answer after all, the first answer wins).
    pub(crate) fn check_hang(&self, lane: usize, timeout: Duration) -> bool {
        let mut state = self.state();
        let me = &state.lanes[lane];
        let hung = !me.suspect && me.held.iter().any(|(_, at)| at.elapsed() > timeout);
        if hung {
            state.lanes[lane].suspect = true;
            let held: Vec<u64> = state.lanes[lane].held.iter().map(|&(id, _)| id).collect();
            self.replay(&mut state, &held);
            self.moved.notify_all();
        }
        hung
    }

    /// Whether `lane` held a ticket past the timeout and has not answered it yet.
    pub(crate) fn is_suspect(&self, lane: usize) -> bool {
        self.state().lanes[lane].suspect
    }

    /// Whether `lane` can work; when no lane can, the tier fails.
    pub(crate) fn set_alive(&self, lane: usize, alive: bool, why: &str) {
        let mut state = self.state();
        state.lanes[lane].alive = alive;
        if !alive {
            state.lanes[lane].why_not = why.to_owned();
            let held: Vec<u64> = state.lanes[lane].held.drain(..).map(|(id, _)| id).collect();
            self.replay(&mut state, &held);
            if state.lanes.iter().all(|l| !l.alive) {
                let whys: Vec<&str> = state.lanes.iter().map(|l| l.why_not.as_str()).collect();
                let why = format!(
                    "no worker can take its tickets and it has no local lanes: {}",
                    whys.join("; ")
                );
                state.failure.get_or_insert(why);
            }
        }
        self.moved.notify_all();
    }

    /// What to deliver next (waits up to [`POLL`]).
    pub(crate) fn next_delivery(&self) -> Delivery {
        let mut state = self.state();
        for round in 0..2 {
            if let Some(why) = state.failure.clone() {
                return Delivery::Failed(why);
            }
            if state.finished {
                return Delivery::End;
            }
            let first = state.undelivered.first().copied();
            if let Some(&b) = state.boundaries.front() {
                if first.is_none_or(|f| f >= b) {
                    state.boundaries.pop_front();
                    return Delivery::Boundary;
                }
            }
            let limit = state.boundaries.front().copied().unwrap_or(u64::MAX);
            let next = if self.input_order {
                first.filter(|f| state.answered.contains_key(f))
            } else {
                state.answered.keys().next().copied()
            };
            if let Some(id) = next.filter(|&id| id < limit) {
                let answered = state.answered.remove(&id).unwrap_or_default();
                state.undelivered.remove(&id);
                let items = answered.items.len() as u64;
                let counts = &self.lane_counts[answered.lane];
                counts.items.fetch_add(items, Ordering::Relaxed);
                counts.tickets.fetch_add(1, Ordering::Relaxed);
                self.counts.delivered.fetch_add(items, Ordering::Relaxed);
                self.moved.notify_all();
                return Delivery::Items(answered);
            }
            if state.input_ended && first.is_none() {
                return Delivery::End;
            }
            if round == 0 {
                state = self.wait(state);
            }
        }
        Delivery::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(remote: &[bool], input_order: bool) -> Schedule {
        let lanes = remote.iter().map(|_| Arc::default()).collect();
        Schedule::new(remote, input_order, Arc::default(), lanes)
    }

    fn items(n: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i]).collect()
    }

    fn outputs(n: u8) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(vec![i])).collect()
    }

    fn delivered(s: &Schedule) -> Vec<Bytes> {
        match s.next_delivery() {
            Delivery::Items(answered) => answered.items,
            _ => panic!("expected items"),
        }
    }

    #[test]
    fn a_late_answer_is_dropped_and_counted_and_the_first_one_delivered_once() {
        let s = schedule(&[true, true], false);
        assert!(s.add_ticket(vec![0, 1], items(2), Vec::new()));
        s.end_input();
        let yes = || true;
        let t = s.take(0, &yes).expect("lane 0 takes it");
        assert!(s.take(1, &yes).is_none(), "one ticket, taken");
        // Lane 0 hangs: its ticket goes to lane 1, which answers first.
        assert!(s.check_hang(0, Duration::ZERO));
        assert_eq!(s.counts.replayed.load(Ordering::Relaxed), 2);
        let again = s.take(1, &yes).expect("replayed");
        assert_eq!(again.id, t.id);
        assert!(s.take(0, &yes).is_none(), "a suspect lane takes no more");
        s.answer(1, t.id, outputs(2), Vec::new());
        s.answer(0, t.id, outputs(2), Vec::new());
        assert_eq!(s.counts.late_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(delivered(&s).len(), 2);
        assert!(matches!(s.next_delivery(), Delivery::End));
        assert_eq!(s.lane_counts[1].items.load(Ordering::Relaxed), 2);
        assert_eq!(s.lane_counts[0].items.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_lost_lane_replays_what_it_held_first() {
        let s = schedule(&[true, true], false);
        for i in 0..3 {
            assert!(s.add_ticket(vec![i], items(1), Vec::new()));
        }
        let yes = || true;
        let a = s.take(0, &yes).unwrap();
        let b = s.take(0, &yes).unwrap();
        assert!(
            s.take(0, &yes).is_none(),
            "a lane holds WINDOW tickets at most"
        );
        s.lane_failed(0);
        let order: Vec<u64> = (0..3)
            .map(|_| s.take(1, &yes).map(|t| t.id))
            .map(Option::unwrap)
            .take(2)
            .collect();
        assert_eq!(order, vec![a.id, b.id], "replayed tickets go first");
    }

    #[test]
    fn input_order_waits_for_the_oldest_and_boundaries_close_epochs() {
        let s = schedule(&[false], true);
        assert!(s.add_ticket(vec![0], vec![b"a".to_vec()], Vec::new()));
        s.add_boundary();
        assert!(s.add_ticket(vec![1], vec![b"b".to_vec()], Vec::new()));
        s.end_input();
        let no = || false;
        let first = s.take(0, &no).unwrap();
        let second = s.take(0, &no).unwrap();
        s.answer(0, second.id, vec![Bytes::from_static(b"b")], Vec::new());
        assert!(
            matches!(s.next_delivery(), Delivery::Nothing),
            "the oldest is not in"
        );
        s.answer(0, first.id, vec![Bytes::from_static(b"a")], Vec::new());
        assert_eq!(delivered(&s), vec![b"a".to_vec()]);
        assert!(matches!(s.next_delivery(), Delivery::Boundary));
        assert_eq!(delivered(&s), vec![b"b".to_vec()]);
        assert!(matches!(s.next_delivery(), Delivery::End));
    }

    #[test]
    fn a_remote_lane_takes_work_only_in_a_deficit_when_there_are_local_lanes() {
        let s = schedule(&[false, true], false);
        assert!(s.add_ticket(vec![0], items(1), Vec::new()));
        assert!(
            s.take(1, &|| false).is_none(),
            "the consumer is not waiting"
        );
        assert!(
            s.take(1, &|| true).is_some(),
            "the consumer waits, no local lane free"
        );
    }

    #[test]
    fn with_every_worker_gone_and_no_local_lane_the_tier_fails_saying_why() {
        let s = schedule(&[true, true], false);
        s.set_alive(0, false, "w0: refused");
        assert!(matches!(s.next_delivery(), Delivery::Nothing));
        s.set_alive(1, false, "w1: connection refused");
        match s.next_delivery() {
            Delivery::Failed(why) => {
                assert!(why.contains("w0: refused; w1: connection refused"), "{why}")
            }
            _ => panic!("expected a failure"),
        }
    }
}
