//! Starting a pipeline: the pipeline-wide settings, and the state handed down the chain of
//! launch functions that the builder composes (one per stage, each starting the stages
//! before it first).

use std::sync::Arc;
use std::time::Duration;

use crate::async_runtime::AsyncRuntime;
use crate::executor::ThreadPool;
use crate::failure::{BudgetScope, BuildError};
use crate::failure::{FailureScope, MaxFailures};
use crate::hook::{HookFactories, StageInfo};
use crate::memory::MemoryLimit;
use crate::queue::{bounded, Rx, Tx};
use crate::resume::accounts::Accounts;
use crate::resume::ledger::Ledger;
use crate::resume::{source_key, ResumeState, MAX_SOURCES};
use crate::run_state::RunState;
use crate::stage::lanes::{LaneSet, DEFAULT_MAX_LANES};
use crate::stage::{Observe, OneLane, StageCtx};
use crate::stats::{QueueCounters, QueueEntry, StageKind};
use crate::tune::resize::StageResizer;
use crate::tune::TuneSettings;

/// Capacity of each queue between two stages unless set otherwise; its public name is
/// [`SinkBuilder::DEFAULT_QUEUE_CAPACITY`](crate::SinkBuilder::DEFAULT_QUEUE_CAPACITY).
pub(crate) const QUEUE_CAPACITY: usize = 64;

/// Pipeline-wide settings chosen on the [`SinkBuilder`](crate::SinkBuilder).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) num_threads: usize,
    pub(crate) max_failures: MaxFailures,
    pub(crate) queue_capacity: usize,
    /// `queue_capacity` was chosen by the user (then no stage's input exceeds it).
    pub(crate) queue_capacity_chosen: bool,
    pub(crate) stop_timeout: Duration,
    pub(crate) stats: bool,
    pub(crate) report_interval: Option<Duration>,
    pub(crate) hooks: HookFactories,
    /// Resume tracking is on (a ledger records which source positions are resolved).
    pub(crate) track_resume: bool,
    /// The state to resume from: the source skips what it resolved.
    pub(crate) resume_from: Option<ResumeState>,
    /// The nested pipeline of a process region's worker: its consumer learns which
    /// positions each output stands for, and its ledger keeps a journal of the resolved
    /// ones, for the parent's ledger.
    pub(crate) in_region: bool,
    /// In a region's worker: the parent tracks a one-to-many stage's outputs one by one,
    /// so this pipeline does too.
    pub(crate) region_outputs: bool,
    /// Autotune, memory limit and stall detection.
    pub(crate) tune: TuneSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            num_threads: std::thread::available_parallelism().map_or(4, |n| n.get()),
            max_failures: MaxFailures::Unlimited,
            queue_capacity: QUEUE_CAPACITY,
            queue_capacity_chosen: false,
            stop_timeout: Duration::from_secs(1),
            stats: true,
            report_interval: None,
            hooks: HookFactories::default(),
            track_resume: false,
            resume_from: None,
            in_region: false,
            region_outputs: false,
            tune: TuneSettings::default(),
        }
    }
}

/// What starting a pipeline needs, handed down the chain of launch functions.
pub(crate) struct Launch {
    pub(crate) run: Arc<RunState>,
    pub(crate) default_pool: ThreadPool,
    pub(crate) runtime: Option<AsyncRuntime>,
    pub(crate) pipeline_scope: Arc<FailureScope>,
    pub(crate) stages: Vec<Arc<StageCtx>>,
    pub(crate) queues: Vec<QueueEntry>,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_capacity_chosen: bool,
    pub(crate) stats: bool,
    pub(crate) hooks: HookFactories,
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// The ledger's accounts (see [`Accounts`]).
    pub(crate) accounts: Option<Arc<Accounts>>,
    /// The state the sources resume from (each takes its part; see
    /// [`next_source`](Self::next_source)).
    pub(crate) resume_from: Option<ResumeState>,
    /// Resume tracking is on.
    pub(crate) track_resume: bool,
    /// Sources started so far: each numbers its positions in a key space of its own.
    pub(crate) sources: usize,
    /// Merges started so far.
    pub(crate) merges: usize,
    /// Put before the names of the stages started now (a merge input's, a route branch's).
    pub(crate) prefix: String,
    /// The queue made last whose reader is not known yet: the next stage made reads it.
    unread: Option<usize>,
    /// Stages record their calls under way (stall detection or autotune is on).
    pub(crate) supervised: bool,
    /// Autotune is on: stages without a fixed concurrency are tuned.
    pub(crate) autotune: bool,
    /// How to resize each `pipe` stage, in pipeline order.
    pub(crate) resizers: Vec<StageResizer>,
    /// The memory limit of items in flight, when `memory_limit` is set.
    pub(crate) memory: Option<Arc<MemoryLimit>>,
    /// A one-to-many stage was started on the way to the stage started now.
    pub(crate) fanned_out: bool,
}

/// Starts the stages up to here; takes the capacity of the queue the caller reads from.
pub(crate) type LaunchFn<T> =
    Box<dyn FnOnce(&mut Launch, usize) -> Result<Rx<T>, BuildError> + Send>;

impl Launch {
    /// A one-to-many stage named `name` starts here. With resume tracking on, one after
    /// another is refused: the ledger tracks the outputs of an input one by one, not the
    /// outputs of an output.
    pub(crate) fn fan_out(&mut self, name: &str) -> Result<(), BuildError> {
        let tracked = self.ledger.as_ref().is_some_and(|l| l.tracks_outputs());
        if self.fanned_out && tracked {
            return Err(BuildError::new(format!(
                "stage `{name}`: resume tracking follows the outputs of one one-to-many stage \
                 (`flat_pipe`, `disaggregate`) per path, and this is the second on its path; \
                 join the two into one stage (a shuffle buffer over a shard's samples: \
                 give the `ShardSampler` a `shuffle_buffer`, which resumes exactly), or turn \
                 `track_resume`/`resume_from` off"
            )));
        }
        if self.merges > 0 && tracked {
            // A partly resolved input's record names positions of one source only.
            return Err(BuildError::new(format!(
                "stage `{name}`: resume tracking does not follow the outputs of a one-to-many \
                 stage (`flat_pipe`, `disaggregate`) in a pipeline with a merge yet; put the \
                 fan-out before the pipeline (in each source's items), or turn \
                 `track_resume`/`resume_from` off"
            )));
        }
        self.fanned_out = true;
        Ok(())
    }

    pub(crate) fn new(
        run: Arc<RunState>,
        settings: &Settings,
        default_pool: ThreadPool,
        (ledger, accounts): (Option<Arc<Ledger>>, Option<Arc<Accounts>>),
    ) -> Self {
        Self {
            run,
            default_pool,
            runtime: None,
            pipeline_scope: Arc::new(FailureScope::new(
                settings.max_failures,
                BudgetScope::Pipeline,
            )),
            stages: Vec::new(),
            queues: Vec::new(),
            queue_capacity: settings.queue_capacity,
            queue_capacity_chosen: settings.queue_capacity_chosen,
            stats: settings.stats,
            hooks: settings.hooks.clone(),
            ledger,
            accounts,
            resume_from: settings.resume_from.clone(),
            track_resume: settings.track_resume,
            sources: 0,
            merges: 0,
            prefix: String::new(),
            unread: None,
            supervised: settings.tune.supervised(),
            autotune: settings.tune.autotune,
            resizers: Vec::new(),
            memory: None,
            fanned_out: false,
        }
    }

    /// A source starts: the first key of its positions, and the state it resumes from.
    pub(crate) fn next_source(&mut self) -> Result<(u64, Option<ResumeState>), BuildError> {
        let index = self.sources;
        if self.ledger.is_some() && index >= MAX_SOURCES {
            return Err(BuildError::new(format!(
                "resume tracking and the memory budget follow at most {MAX_SOURCES} sources \
                 in a pipeline"
            )));
        }
        self.sources += 1;
        let state = match &self.resume_from {
            Some(state) => Some(state.source_state(index)?),
            None => None,
        };
        let Some(ledger) = &self.ledger else {
            return Ok((0, state));
        };
        let pass = state.as_ref().map_or(0, ResumeState::epoch);
        ledger.add_source(index, pass, state.as_ref());
        Ok((source_key(index, 0), state))
    }

    /// Every source has started: a state of several must have had as many.
    pub(crate) fn check_sources(&self) -> Result<(), BuildError> {
        match &self.resume_from {
            Some(state) if state.source_count() > 0 && state.source_count() != self.sources => {
                Err(BuildError::new(format!(
                    "cannot resume: the state has {} source(s) but this pipeline has {}",
                    state.source_count(),
                    self.sources
                )))
            }
            _ => Ok(()),
        }
    }

    /// Creates a stage's context (statistics, hooks) and records it in pipeline order.
    pub(crate) fn stage(
        &mut self,
        name: String,
        kind: StageKind,
        concurrency: usize,
        scope: Arc<FailureScope>,
    ) -> Arc<StageCtx> {
        self.resizable_stage(name, kind, (concurrency, concurrency), scope)
    }

    /// [`stage`](Self::stage) for a stage whose lanes may be resized: `(initial, planned)`
    /// lanes, `planned` being the most it is expected to be tuned to.
    pub(crate) fn resizable_stage(
        &mut self,
        name: String,
        kind: StageKind,
        (concurrency, planned): (usize, usize),
        scope: Arc<FailureScope>,
    ) -> Arc<StageCtx> {
        if let Some(q) = self.unread.take() {
            self.queues[q].reader = Some(self.stages.len());
        }
        let lanes = LaneSet::new(
            concurrency,
            planned,
            planned.max(DEFAULT_MAX_LANES),
            self.supervised,
        );
        let info = StageInfo {
            index: self.stages.len(),
            name: format!("{}{name}", self.prefix),
            kind,
            concurrency,
        };
        let observe = Observe {
            stats: self.stats,
            hooks: self.hooks.hooks_for(&info),
        };
        let ctx = Arc::new(StageCtx::new(
            info,
            observe,
            scope,
            self.run.clone(),
            (self.ledger.clone(), self.accounts.clone()),
            lanes,
        ));
        self.stages.push(ctx.clone());
        ctx
    }

    /// Starts a stage of one lane: its context (counting against the pipeline's failure
    /// budget), its output queue, and its lane, which `lane` runs (see
    /// [`spawn_lane`](Self::spawn_lane)).
    pub(crate) fn one_lane_stage<U: Send + 'static>(
        &mut self,
        name: String,
        kind: StageKind,
        out_cap: usize,
    ) -> (OneLane<U>, Rx<U>) {
        let scope = self.pipeline_scope.clone();
        let ctx = self.stage(name, kind, 1, scope);
        let (output, rx) = self.queue(&ctx.name, out_cap);
        ctx.lanes_starting(1);
        let lane = OneLane {
            guard: ctx.lane_guard(),
            ctx,
            output,
        };
        (lane, rx)
    }

    /// Runs a one-lane stage's lane on the pipeline's default pool.
    pub(crate) fn spawn_lane(&self, lane: impl std::future::Future<Output = ()> + Send + 'static) {
        self.default_pool.spawn_lane(Box::pin(lane));
    }

    /// Creates the queue after stage `after`, closed on stop, counted when stats are on.
    pub(crate) fn queue<T: Send + 'static>(
        &mut self,
        after: &str,
        capacity: usize,
    ) -> (Tx<T>, Rx<T>) {
        let writer = self.stages.len().checked_sub(1);
        self.queue_from(after, capacity, writer)
    }

    /// Like [`queue`](Self::queue), written by stage `writer`, or (`None`) by a stage that
    /// writes several queues (a route's router), whose puts are then its gets.
    pub(crate) fn queue_from<T: Send + 'static>(
        &mut self,
        after: &str,
        capacity: usize,
        writer: Option<usize>,
    ) -> (Tx<T>, Rx<T>) {
        let counters = self.stats.then(|| Arc::new(QueueCounters::new()));
        let (tx, rx) = bounded(capacity, counters.clone());
        if let Some(counters) = counters {
            let weak = tx.downgrade();
            self.unread = Some(self.queues.len());
            self.queues.push(QueueEntry {
                writer,
                reader: None,
                after: after.to_owned(),
                capacity,
                counters,
                len: Box::new(move || weak.upgrade().map(|tx| tx.len())),
            });
        }
        self.run.register_queue(&tx);
        (tx, rx)
    }

    /// The queue made last is read by a structure (a merge, a route's join) that counts the
    /// items it takes itself ([`Rx::set_consumer`]), not by the next stage made.
    pub(crate) fn read_by_structure(&mut self) {
        self.unread = None;
    }

    /// The relay running async stages' lanes, on the async runtime started on first use.
    pub(crate) fn relay(&mut self) -> Result<Arc<crate::async_runtime::Relay>, BuildError> {
        if self.runtime.is_none() {
            self.runtime = Some(AsyncRuntime::start()?);
        }
        Ok(self.runtime.as_ref().expect("just started").relay().clone())
    }

    /// The pipeline's async runtime, started on first use.
    pub(crate) fn runtime(&mut self) -> Result<&tokio::runtime::Handle, BuildError> {
        if self.runtime.is_none() {
            self.runtime = Some(AsyncRuntime::start()?);
        }
        Ok(self.runtime.as_ref().expect("just started").handle())
    }

    /// The failure budget a stage counts against: its own, or the pipeline's.
    pub(crate) fn scope(&self, own: Option<MaxFailures>) -> Arc<FailureScope> {
        match own {
            Some(budget) => Arc::new(FailureScope::new(budget, BudgetScope::Stage)),
            None => self.pipeline_scope.clone(),
        }
    }
}
