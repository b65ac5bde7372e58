//! The sink: where the consumer reads, and the pipeline-wide settings chosen with it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::StageBuilder;
use crate::error::BuildError;
use crate::failure::MaxFailures;
use crate::hook::{StageInfo, TaskHook};
use crate::launch::{LaunchFn, Settings};
use crate::pipeline::Pipeline;
use crate::resume::ResumeState;

/// Capacity of the sink (output) queue unless set otherwise.
pub const DEFAULT_SINK_BUFFER: usize = 3;

/// A complete pipeline definition; set pipeline-wide options, then [`build`](Self::build).
pub struct SinkBuilder<T> {
    launch: LaunchFn<T>,
    errors: Vec<BuildError>,
    buffer: usize,
    settings: Settings,
    /// The stages, one word each (see [`ResumeState::shape`]).
    shape: String,
    continuous: bool,
}

impl<T: Send + 'static> StageBuilder<T> {
    /// Ends the definition: the consumer reads from a queue of
    /// [`DEFAULT_SINK_BUFFER`] items (see [`SinkBuilder::buffer`]).
    pub fn sink(self) -> SinkBuilder<T> {
        let (launch, chain) = self.seal();
        SinkBuilder {
            launch,
            errors: chain.errors,
            buffer: DEFAULT_SINK_BUFFER,
            settings: Settings::default(),
            shape: chain.shape.join(" -> "),
            continuous: chain.continuous,
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

impl<T: Send + 'static> SinkBuilder<T> {
    /// Capacity of the output queue that the consumer reads (at least 1; default
    /// [`DEFAULT_SINK_BUFFER`]). Like SPDL's `buffer_size`.
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

    /// Capacity of each queue between stages (default [`DEFAULT_QUEUE_CAPACITY`](crate::DEFAULT_QUEUE_CAPACITY)).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.settings.queue_capacity = capacity;
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
    /// (target `pipeline_runtime::stats`, level `INFO`). They are logged once when the
    /// pipeline ends either way.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.settings.report_interval = Some(interval);
        self
    }

    /// Adds `hook` to every stage (see [`TaskHook`]).
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

    /// Checks the definition and returns the pipeline, not yet started.
    pub fn build(mut self) -> Result<Pipeline<T>, BuildError> {
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
