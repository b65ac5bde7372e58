//! Hooks: code of yours run around each stage and each task (SPDL's `TaskHook`), to count,
//! time or trace what the pipeline does beyond its own [statistics](crate::stats).
//!
//! A [`TaskHook`] given to [`SinkBuilder::task_hook`](crate::SinkBuilder::task_hook) runs in
//! every stage; a [`HookFactory`] set with [`hook_factory`](crate::SinkBuilder::hook_factory)
//! is called once per stage when the pipeline starts, and the hooks it returns are called by
//! that stage's lanes. Hooks run inline on the lane's thread, so they should be quick (count, record, send to a channel). A panicking hook is
//! logged and otherwise ignored: it neither fails the item nor stops the stage.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::failure::{BoxError, ItemError};
use crate::stats::StageKind;

/// Which stage a hook is called for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageInfo {
    /// Position in the pipeline; the source is 0.
    pub index: usize,
    /// Stage name (as in the statistics).
    pub name: String,
    /// Stage kind.
    pub kind: StageKind,
    /// Items the stage may have in flight.
    pub concurrency: usize,
}

/// How one task (one call of a stage function) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The function returned a value (or a `None` that drops the item).
    Succeeded,
    /// The function returned an `Err` (the item counts as failed).
    Failed,
    /// The function panicked (the item counts as failed).
    Panicked,
}

impl TaskOutcome {
    /// The outcome of a task that failed with `failure` (`None`: it succeeded); a panic
    /// arrives as an [`ItemError`](crate::error::ItemError) that says so.
    pub(crate) fn of(failure: Option<&BoxError>) -> Self {
        match failure {
            None => TaskOutcome::Succeeded,
            Some(e)
                if e.downcast_ref::<ItemError>()
                    .is_some_and(ItemError::is_panic) =>
            {
                TaskOutcome::Panicked
            }
            Some(_) => TaskOutcome::Failed,
        }
    }
}

/// Instrumentation around a stage and its tasks. Every method has an empty default.
///
/// * `stage_started` / `stage_ended`: once per stage, when its lanes start and after the
///   last one has finished (also when the pipeline is stopped early).
/// * `task_started` / `task_ended`: around every call of the stage function (for an
///   aggregate: every item added to a batch), failed and panicked calls included, with the
///   time the call took. The source has stage hooks only.
///
/// With several lanes, calls for different tasks of one stage interleave and may come from
/// different threads; `task_started` and the matching `task_ended` of a synchronous stage
/// run on the same thread.
pub trait TaskHook: Send + Sync + 'static {
    /// The stage is starting.
    fn stage_started(&self, stage: &StageInfo) {
        let _ = stage;
    }
    /// The stage has ended: all its lanes have finished.
    fn stage_ended(&self, stage: &StageInfo) {
        let _ = stage;
    }
    /// A task is about to call the stage function.
    fn task_started(&self, stage: &StageInfo) {
        let _ = stage;
    }
    /// A task has ended; `elapsed` is the time spent in the stage function.
    fn task_ended(&self, stage: &StageInfo, outcome: TaskOutcome, elapsed: Duration) {
        let _ = (stage, outcome, elapsed);
    }
}

/// Makes the hooks of one stage; called once per stage when the pipeline starts.
pub type HookFactory = Arc<dyn Fn(&StageInfo) -> Vec<Arc<dyn TaskHook>> + Send + Sync>;

/// The hooks of one stage.
#[derive(Default)]
pub(crate) struct StageHooks {
    hooks: Box<[Arc<dyn TaskHook>]>,
}

impl std::fmt::Debug for StageHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHooks")
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl StageHooks {
    pub(crate) fn new(hooks: Vec<Arc<dyn TaskHook>>) -> Self {
        Self {
            hooks: hooks.into(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Calls `f` on every hook, logging (not propagating) a panic.
    pub(crate) fn each(&self, stage: &StageInfo, f: impl Fn(&dyn TaskHook)) {
        for hook in self.hooks.iter() {
            if catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))).is_err() {
                tracing::error!(stage = %stage.name, "a task hook panicked; the panic is ignored");
            }
        }
    }
}

/// The hook factories set on a builder, called in order for each stage.
#[derive(Clone, Default)]
pub(crate) struct HookFactories(pub(crate) Vec<HookFactory>);

impl std::fmt::Debug for HookFactories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hook factories", self.0.len())
    }
}

impl HookFactories {
    pub(crate) fn hooks_for(&self, stage: &StageInfo) -> StageHooks {
        StageHooks::new(self.0.iter().flat_map(|factory| factory(stage)).collect())
    }
}
