//! The sink: where the consumer reads, and the pipeline-wide settings chosen with it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::StageBuilder;
use crate::failure::BuildError;
use crate::failure::MaxFailures;
use crate::hook::{StageInfo, TaskHook};
use crate::launch::{LaunchFn, Settings};
use crate::pipeline::Pipeline;
use crate::resume::ResumeState;

/// A complete pipeline definition; set pipeline-wide options, then [`build`](Self::build).
pub struct SinkBuilder<T> {
    launch: LaunchFn<T>,
    errors: Vec<BuildError>,
    buffer: usize,
    settings: Settings,
    /// The stages, one word each (see [`ResumeState::shape`]).
    shape: String,
    continuous: bool,
    /// The source was given its items' sizes (`item_bytes`).
    sized_source: bool,
    /// Stages given `concurrency_auto` bounds.
    auto_bounds: Vec<String>,
}

impl<T: Send + 'static> StageBuilder<T> {
    /// Ends the definition: the consumer reads from a queue of
    /// [`SinkBuilder::DEFAULT_BUFFER`] items (see [`SinkBuilder::buffer`]).
    pub fn sink(self) -> SinkBuilder<T> {
        let (launch, chain) = self.seal();
        SinkBuilder {
            launch,
            errors: chain.errors,
            buffer: SinkBuilder::DEFAULT_BUFFER,
            settings: Settings::default(),
            shape: chain.shape.join(" -> "),
            continuous: chain.continuous,
            sized_source: chain.sized_source,
            auto_bounds: chain.auto_bounds,
        }
    }
}

impl<T> fmt::Debug for SinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("buffer", &self.buffer)
            .field("settings", &self.settings)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// The defaults, as constants. They are defined for `SinkBuilder<()>` only so that
/// `SinkBuilder::DEFAULT_BUFFER` names them without a type argument; they hold for every
/// pipeline.
impl SinkBuilder<()> {
    /// Capacity of the sink (output) queue, the one the consumer reads, unless
    /// [`buffer`](Self::buffer) sets another (items).
    pub const DEFAULT_BUFFER: usize = 3;

    /// Capacity of each queue between two stages unless
    /// [`queue_capacity`](Self::queue_capacity) sets another (items).
    ///
    /// Larger than SPDL's 2: a hand-off between threads costs a wake-up when a queue runs
    /// empty or full, and a deeper queue lets one wake-up cover many items. See the guide's
    /// chapter on backpressure for the bound on items in flight that follows.
    pub const DEFAULT_QUEUE_CAPACITY: usize = crate::launch::QUEUE_CAPACITY;
}

impl<T: Send + 'static> SinkBuilder<T> {
    /// Capacity of the output queue that the consumer reads (at least 1; default
    /// [`DEFAULT_BUFFER`](SinkBuilder::DEFAULT_BUFFER)). Like SPDL's `buffer_size`.
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = capacity;
        self
    }

    /// Threads of the default pool that runs synchronous stages (default: the number of
    /// CPUs). Like SPDL's `num_threads`.
    pub fn num_threads(mut self, n: usize) -> Self {
        self.settings.num_threads = n;
        self
    }

    /// Pipeline-wide failure budget, shared by every stage without its own (default:
    /// unlimited; failures are still counted and logged).
    pub fn max_failures(mut self, budget: MaxFailures) -> Self {
        self.settings.max_failures = budget;
        self
    }

    /// Capacity of each queue between stages (default
    /// [`DEFAULT_QUEUE_CAPACITY`](SinkBuilder::DEFAULT_QUEUE_CAPACITY); by default an async
    /// stage's input holds at least one item per lane).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.settings.queue_capacity = capacity;
        self.settings.queue_capacity_chosen = true;
        self
    }

    /// How long stopping waits for the pipeline's threads before leaving behind one that is
    /// still inside a stage function (default 1 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop_timeout = timeout;
        self
    }

    /// Whether the pipeline keeps statistics (default: on). Off, stages do not time their
    /// tasks and queues do not count, [`Pipeline::stats`] has counts only, and nothing is
    /// reported; [hooks](Self::task_hook) still run, so they can replace the statistics.
    pub fn stats(mut self, enabled: bool) -> Self {
        self.settings.stats = enabled;
        self
    }

    /// Logs the statistics through `tracing` every `interval` while the pipeline runs
    /// (target [`stats::TARGET`](crate::stats::TARGET), level `INFO`). They are logged once when the
    /// pipeline ends either way.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.settings.report_interval = Some(interval);
        self
    }

    /// Adds `hook` to every stage (see [`TaskHook`] and the [`hook`](crate::hook) module).
    pub fn task_hook<H: TaskHook>(self, hook: H) -> Self {
        let hook: Arc<dyn TaskHook> = Arc::new(hook);
        self.hook_factory(move |_: &StageInfo| vec![hook.clone()])
    }

    /// Adds hooks made per stage: `factory` is called once for each stage when the pipeline
    /// starts and returns that stage's hooks (none to leave it alone).
    pub fn hook_factory<F>(mut self, factory: F) -> Self
    where
        F: Fn(&StageInfo) -> Vec<Arc<dyn TaskHook>> + Send + Sync + 'static,
    {
        self.settings.hooks.0.push(Arc::new(factory));
        self
    }

    /// Records which source positions the consumer has received (and which failed or were
    /// dropped), so that [`Pipeline::resume_state`] can say where it stands (default: off).
    /// Costs a lock per item at the source and at the consumer, and per failure; off, it
    /// costs nothing.
    pub fn track_resume(mut self, enabled: bool) -> Self {
        self.settings.track_resume = enabled;
        self
    }

    /// The nested pipeline of a process region's worker (see `Settings::in_region`).
    /// `outputs`: the parent tracks a one-to-many stage's outputs one by one.
    #[cfg(unix)]
    pub(crate) fn in_region(mut self, outputs: bool) -> Self {
        self.settings.track_resume = true;
        self.settings.in_region = true;
        self.settings.region_outputs = outputs;
        self
    }

    /// Resumes from `state` (taken with [`Pipeline::resume_state`] from a pipeline of the
    /// same shape): the source skips the epochs before the state's and the items the
    /// consumer had received or that failed, so the pipeline delivers exactly the rest.
    /// Implies [`track_resume`](Self::track_resume). `None` starts from the beginning (with
    /// tracking on), so one builder chain serves a fresh and a resumed run.
    pub fn resume_from(mut self, state: impl Into<Option<ResumeState>>) -> Self {
        self.settings.resume_from = state.into();
        self.settings.track_resume = true;
        self
    }

    /// Autotune (default: off): a controller moves the concurrency of every `pipe` stage
    /// whose concurrency is not fixed (see
    /// [`concurrency_auto`](crate::StageBuilder::concurrency_auto)) and the default pool's
    /// size towards the highest throughput, within the [thread limit](Self::thread_limit) and
    /// the [memory limit](Self::memory_limit). Its decisions are logged (target
    /// [`tune::TARGET`](crate::tune::TARGET)) and kept in
    /// [`PipelineStats::tuning`](crate::stats::PipelineStats::tuning).
    /// Needs statistics on. See the guide's chapter on tuning.
    pub fn autotune(mut self, enabled: bool) -> Self {
        self.settings.tune.autotune = enabled;
        self
    }

    /// The most threads autotune may give the default pool (at least 1; default: the number
    /// of CPUs, or `num_threads` if larger).
    pub fn thread_limit(mut self, threads: usize) -> Self {
        self.settings.tune.thread_limit = Some(threads);
        self
    }

    /// How often autotune looks at the statistics (default 50 ms; each decision is judged
    /// over about 200 ms).
    pub fn tune_interval(mut self, interval: Duration) -> Self {
        self.settings.tune.interval = Some(interval);
        self
    }

    /// A hard limit on the bytes of the items in flight: the source admits an item only
    /// when its size (see [`item_bytes`](crate::StageBuilder::item_bytes)) fits under
    /// `bytes` with every item admitted and not yet delivered, failed or dropped, and waits
    /// otherwise. An item larger than the limit ends the pipeline with a source error.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.settings.tune.memory_limit = Some(bytes);
        self
    }

    /// Warns (target [`tune::TARGET`](crate::tune::TARGET), level `WARN`) when no stage has completed
    /// an item for `after` while items are waiting, naming the stage that holds them.
    pub fn stall_timeout(mut self, after: Duration) -> Self {
        self.settings.tune.stall_warn = Some(after);
        self
    }

    /// Ends the pipeline with a [`StageFailureKind::Stalled`](crate::error::StageFailureKind::Stalled)
    /// error when it has stalled (as for [`stall_timeout`](Self::stall_timeout)) for
    /// `after`, which must be longer than the warning's limit.
    pub fn stall_fatal(mut self, after: Duration) -> Self {
        self.settings.tune.stall_fail = Some(after);
        self
    }

    /// Records every mistake in the tuning settings.
    fn check_tuning(&mut self) {
        let tune = &self.settings.tune;
        let mut errors = Vec::new();
        if tune.autotune && !self.settings.stats {
            errors.push("autotune needs statistics: remove `stats(false)` or autotune".to_owned());
        }
        if !tune.autotune && !self.auto_bounds.is_empty() {
            errors.push(format!(
                "stage `{}`: concurrency_auto needs autotune on: add `.autotune(true)` to the \
                 sink, or give a fixed `concurrency`",
                self.auto_bounds[0]
            ));
        }
        if tune.thread_limit == Some(0) {
            errors.push("thread_limit must be at least 1 thread".to_owned());
        }
        if tune.interval.is_some_and(|i| i.is_zero()) {
            errors.push("tune_interval must be greater than zero".to_owned());
        }
        match tune.memory_limit {
            Some(0) => errors.push("memory_limit must be at least 1 byte".to_owned()),
            Some(_) if !self.sized_source => errors.push(
                "memory_limit needs the size of the source's items: add `.item_bytes(|item| \
                 ..)` (or `.reported_bytes()` for items implementing `ItemBytes`) right after \
                 the source"
                    .to_owned(),
            ),
            None if self.sized_source => errors.push(
                "`item_bytes` is given but no `memory_limit`: add `.memory_limit(bytes)` to \
                 the sink, or remove `item_bytes`"
                    .to_owned(),
            ),
            _ => {}
        }
        for (what, limit) in [
            ("stall_timeout", tune.stall_warn),
            ("stall_fatal", tune.stall_fail),
        ] {
            if limit.is_some_and(|d| d.is_zero()) {
                errors.push(format!("{what} must be greater than zero"));
            }
        }
        if let (Some(warn), Some(fail)) = (tune.stall_warn, tune.stall_fail) {
            if fail <= warn {
                errors.push(format!(
                    "stall_fatal ({fail:?}) must be longer than stall_timeout ({warn:?}): the \
                     warning comes first"
                ));
            }
        }
        self.errors.extend(errors.into_iter().map(BuildError::new));
    }

    /// Checks the definition and returns the pipeline, not yet started.
    pub fn build(mut self) -> Result<Pipeline<T>, BuildError> {
        self.check_tuning();
        match self.settings.report_interval {
            Some(interval) if interval.is_zero() => self
                .errors
                .push(BuildError::new("report_interval must be greater than zero")),
            Some(_) if !self.settings.stats => self.errors.push(BuildError::new(
                "report_interval needs statistics: remove `stats(false)` or the interval",
            )),
            _ => {}
        }
        if self.buffer == 0 {
            self.errors.push(BuildError::new(
                "sink: the buffer must hold at least 1 item",
            ));
        }
        if self.settings.num_threads == 0 {
            self.errors
                .push(BuildError::new("num_threads must be at least 1"));
        }
        if self.settings.queue_capacity == 0 {
            self.errors
                .push(BuildError::new("queue_capacity must be at least 1"));
        }
        if let Err(e) = self.settings.max_failures.validate("max_failures") {
            self.errors.push(e);
        }
        if let Some(state) = &self.settings.resume_from {
            if let Err(e) = state.check(&self.shape, self.continuous) {
                self.errors.push(e);
            }
        }
        if let Some(error) = BuildError::all(self.errors) {
            return Err(error);
        }
        Ok(Pipeline::new(
            self.launch,
            self.buffer,
            self.settings,
            self.shape,
        ))
    }
}
