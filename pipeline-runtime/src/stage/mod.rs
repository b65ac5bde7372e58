//! Stage kinds, one home each, and what they share: the per-stage context that counts
//! tasks, applies the failure budget and knows when to stop; the start of a one-lane stage
//! ([`OneLane`]); and the lanes' turns ([`LaneTurns`]).
//!
//! A kind's home holds everything of it: its builder methods (an `impl` block of
//! `StageBuilder`), its options and their checks, its start-up and its lanes. Adding a kind
//! is a new module here (and its descriptor in `pipeline-macros/src/stages/`).

// The kinds of stage, in the order the guide lists them.
pub(crate) mod aggregate;
pub(crate) mod aggregate_by;
pub(crate) mod merge;
pub(crate) mod pipe;
#[cfg(unix)]
pub(crate) mod region;
pub(crate) mod route;
pub(crate) mod source;

pub(crate) mod lanes;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::clock;
use crate::failure::ItemError;
use crate::failure::{FailureScope, RecentErrors, StageFailureKind};
use crate::hook::{StageHooks, StageInfo, TaskOutcome};
use crate::resume::accounts::{Accounts, Outcome};
use crate::resume::ledger::Ledger;
use crate::resume::Tag;
use crate::run_state::RunState;
use crate::stats::{StageCounters, StageEntry, StageKind, TaskSampler};
use crate::sync::lock;
use lanes::LaneSet;

/// How a stage is observed: statistics on or off, and the user's hooks.
#[derive(Debug, Default)]
pub(crate) struct Observe {
    pub(crate) stats: bool,
    pub(crate) hooks: StageHooks,
}

/// One stage's identity, counters and failure accounting, shared by its lanes.
#[derive(Debug)]
pub(crate) struct StageCtx {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    /// Its lanes while it runs: target concurrency, slots, calls under way.
    pub(crate) lanes: LaneSet,
    /// Shared with the statistics, which read them (see [`stats_entry`](Self::stats_entry)).
    pub(crate) counters: Arc<StageCounters>,
    pub(crate) info: StageInfo,
    /// Statistics are on: lanes time their tasks.
    pub(crate) stats: bool,
    pub(crate) hooks: StageHooks,
    /// Parent of the stage's task spans (for trace export); closed when the stage ends.
    span: Mutex<Option<tracing::Span>>,
    span_id: Option<tracing::Id>,
    live_lanes: AtomicUsize,
    scope: Arc<FailureScope>,
    recent: RecentErrors,
    tripped: AtomicBool,
    /// Run when the stage trips (a process stage kills the calls it has in flight, which
    /// would otherwise keep the tripped stage, and so the pipeline, from ending).
    on_trip: OnceLock<TripHook>,
    pub(crate) run: Arc<RunState>,
    /// The pipeline's resume ledger, when resume tracking is on.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// The ledger's accounts (absent in structures they do not cover yet).
    pub(crate) accounts: Option<Arc<Accounts>>,
}

impl StageCtx {
    pub(crate) fn new(
        info: StageInfo,
        observe: Observe,
        scope: Arc<FailureScope>,
        run: Arc<RunState>,
        (ledger, accounts): (Option<Arc<Ledger>>, Option<Arc<Accounts>>),
        lanes: LaneSet,
    ) -> Self {
        let span = tracing::debug_span!("stage", stage = %info.name, index = info.index);
        Self {
            name: info.name.clone(),
            kind: info.kind,
            // Built for the most lanes the stage may be tuned to; a lane resized beyond
            // records into a shared overflow shard.
            counters: Arc::new(StageCounters::new(lanes.planned())),
            lanes,
            info,
            stats: observe.stats,
            hooks: observe.hooks,
            span_id: span.id(),
            span: Mutex::new(Some(span)),
            live_lanes: AtomicUsize::new(0),
            scope,
            recent: RecentErrors::default(),
            tripped: AtomicBool::new(false),
            on_trip: OnceLock::new(),
            run,
            ledger,
            accounts,
        }
    }

    /// A message carrying `tag` ends here without reaching the consumer (`outcome`: failed,
    /// filtered, or replaced by a one-to-many stage's outputs): the ledger learns of it.
    pub(crate) fn resolve(&self, tag: Tag, outcome: Outcome) {
        if let Some(ledger) = &self.ledger {
            ledger.resolve(tag, outcome);
        } else if let Some(accounts) = &self.accounts {
            // Each position in one message here (no ledger): its positions are resolved.
            accounts.dropped(tag, outcome);
        }
    }

    /// Whether tasks are timed (for the statistics or for a hook).
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.stats || !self.hooks.is_empty()
    }

    /// The span of one task, child of the stage's span (disabled unless a subscriber wants
    /// `TRACE` spans of this crate).
    #[inline]
    pub(crate) fn task_span(&self) -> tracing::Span {
        tracing::trace_span!(parent: self.span_id.clone(), "task", stage = %self.name)
    }

    /// Registers `n` lanes about to start; the first call starts the stage (stage hooks).
    pub(crate) fn lanes_starting(&self, n: usize) {
        if self.live_lanes.fetch_add(n, Ordering::AcqRel) == 0 {
            self.counters.mark_started();
            self.hooks.each(&self.info, |h| h.stage_started(&self.info));
        }
    }

    /// Registers one more lane of a running stage (a resize); false once the stage has
    /// ended (then no lane may start: its output is closed or closing).
    pub(crate) fn lane_joining(&self) -> bool {
        self.live_lanes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then_some(n + 1)
            })
            .is_ok()
    }

    /// A guard whose drop ends one lane; the last lane to end ends the stage. One per lane
    /// counted by [`lanes_starting`](Self::lanes_starting).
    pub(crate) fn lane_guard(self: &Arc<Self>) -> LaneGuard {
        LaneGuard(self.clone())
    }

    /// Starts a task: calls the hooks, returns the start tick if tasks are timed.
    #[inline]
    pub(crate) fn task_started(&self) -> Option<u64> {
        if !self.hooks.is_empty() {
            self.hooks.each(&self.info, |h| h.task_started(&self.info));
        }
        self.timed().then(clock::now)
    }

    /// As [`task_started`](Self::task_started) for a lane that times its short tasks one
    /// in several (see [`TaskSampler`]): `None` for a task left untimed.
    #[inline]
    pub(crate) fn sampled_task_started(&self, sampler: &TaskSampler) -> Option<u64> {
        if !self.hooks.is_empty() {
            return self.task_started();
        }
        (self.stats && sampler.due()).then(clock::now)
    }

    /// As [`task_ended`](Self::task_ended), counting through the lane's `sampler`.
    #[inline]
    pub(crate) fn sampled_task_ended(
        &self,
        lane: usize,
        ticks: Option<u64>,
        outcome: TaskOutcome,
        sampler: &mut TaskSampler,
    ) {
        let failed = outcome != TaskOutcome::Succeeded;
        let counters = self.counters.lane(lane);
        if self.stats {
            sampler.record(counters, ticks, failed);
        } else {
            counters.record_task(None, failed);
        }
        if !self.hooks.is_empty() {
            let elapsed = ticks.map_or(Duration::ZERO, clock::ticks_to_duration);
            self.hooks
                .each(&self.info, |h| h.task_ended(&self.info, outcome, elapsed));
        }
    }

    /// A lane using `sampler` ends: its untimed tasks are recorded.
    pub(crate) fn sampled_lane_ended(&self, lane: usize, sampler: &mut TaskSampler) {
        if self.stats {
            sampler.finish(self.counters.lane(lane));
        }
    }

    /// Ticks since `started` (a value of [`task_started`](Self::task_started)).
    #[inline]
    pub(crate) fn elapsed(started: Option<u64>) -> Option<u64> {
        started.map(|s| clock::now().saturating_sub(s))
    }

    /// Ends a task that took `ticks`: counts it into lane `lane` and calls the hooks.
    #[inline]
    pub(crate) fn task_ended(&self, lane: usize, ticks: Option<u64>, outcome: TaskOutcome) {
        let failed = outcome != TaskOutcome::Succeeded;
        self.counters
            .lane(lane)
            .record_task(if self.stats { ticks } else { None }, failed);
        if !self.hooks.is_empty() {
            let elapsed = ticks.map_or(Duration::ZERO, clock::ticks_to_duration);
            self.hooks
                .each(&self.info, |h| h.task_ended(&self.info, outcome, elapsed));
        }
    }

    /// True once the pipeline is stopping or this stage has ended on a failure.
    pub(crate) fn should_stop(&self) -> bool {
        self.run.stop_requested() || self.tripped.load(Ordering::Relaxed)
    }

    /// Counts a successful invocation. Returns false if the stage must stop (a rate budget
    /// can trip on a success, once the probation is over).
    pub(crate) fn on_success(&self) -> bool {
        match self.scope.record_success() {
            None => true,
            Some(state) => {
                self.trip(state);
                false
            }
        }
    }

    /// Counts, logs and keeps a failed item. Returns false if the stage must stop.
    pub(crate) fn on_failure(&self, error: ItemError) -> bool {
        tracing::warn!(stage = %self.name, "item failed: {error}");
        self.recent.push(error);
        match self.scope.record_failure() {
            None => true,
            Some(state) => {
                self.trip(state);
                false
            }
        }
    }

    /// Sets what runs when the stage trips (once).
    pub(crate) fn on_trip(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.on_trip.set(TripHook(hook));
    }

    fn trip(&self, (failures, invocations): (u64, u64)) {
        if !self.tripped.swap(true, Ordering::Relaxed) {
            // A count budget does not count invocations on the hot path; report this
            // stage's own tasks instead.
            let invocations = if self.scope.counts_invocations() {
                invocations
            } else {
                self.counters.tasks()
            };
            let kind = self
                .scope
                .tripped_kind((failures, invocations), self.recent.take());
            self.run.fail(&self.name, kind);
            if let Some(hook) = self.on_trip.get() {
                (hook.0)();
            }
        }
    }

    /// Ends the stage with a terminal failure that is not a budget (aggregator, source).
    pub(crate) fn fail_stage(&self, kind: StageFailureKind) {
        if !self.tripped.swap(true, Ordering::Relaxed) {
            self.run.fail(&self.name, kind);
        }
    }

    /// What the statistics read of this stage: its identity and its counters.
    pub(crate) fn stats_entry(&self) -> StageEntry {
        StageEntry {
            name: self.name.clone(),
            kind: self.kind,
            concurrency: self.lanes.shared_target(),
            counters: self.counters.clone(),
        }
    }
}

/// What runs when a stage trips its failure budget.
struct TripHook(Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for TripHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TripHook")
    }
}

/// One running lane of a stage; see [`StageCtx::lane_guard`]. Owned by the lane, so it is
/// dropped also when the lane's future is dropped unfinished (a stop) and the stage always
/// ends.
pub(crate) struct LaneGuard(Arc<StageCtx>);

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let ctx = &self.0;
        if ctx.live_lanes.fetch_sub(1, Ordering::AcqRel) == 1 {
            ctx.counters.mark_ended();
            ctx.hooks.each(&ctx.info, |h| h.stage_ended(&ctx.info));
            drop(lock(&ctx.span).take());
        }
    }
}

/// What a one-lane stage (a source, an aggregate, a merge, ...) starts with: its context,
/// its lane's guard and its output queue; see [`Launch::one_lane_stage`].
///
/// [`Launch::one_lane_stage`]: crate::launch::Launch::one_lane_stage
pub(crate) struct OneLane<U> {
    /// First, so that a lane holding the whole struct ends its stage before its output closes.
    pub(crate) guard: LaneGuard,
    pub(crate) ctx: Arc<StageCtx>,
    pub(crate) output: crate::queue::Tx<U>,
}

/// How many items a lane handles in a row before it yields its thread to other lanes.
pub(crate) const LANE_TURN: u32 = 128;

/// Counts a lane's items so that it yields its thread every [`LANE_TURN`] items: lanes of
/// several stages share a pool's threads, and a lane whose input never runs dry would keep
/// its thread forever.
#[derive(Debug, Default)]
pub(crate) struct LaneTurns {
    handled: u32,
}

impl LaneTurns {
    /// One item handled; yields the thread at the end of a turn.
    #[inline]
    pub(crate) async fn handled_one(&mut self) {
        self.handled += 1;
        if self.handled == LANE_TURN {
            self.handled = 0;
            crate::executor::task::yield_now().await;
        }
    }
}
