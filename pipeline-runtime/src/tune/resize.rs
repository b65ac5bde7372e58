//! Resizing a running stage: its bounds, and how it starts a lane (its spawner, made by the
//! stage's launch with everything a lane needs, held weakly so that it never keeps a
//! finished stage's queues open).

use std::sync::Arc;

use super::TuneError;
use crate::stage::StageCtx;
use crate::sync::lock;

/// Starts a lane in a slot; false when the stage has ended.
pub(crate) type SpawnLane = Box<dyn Fn(usize) -> bool + Send + Sync>;

/// One resizable `pipe` stage.
pub(crate) struct StageResizer {
    pub(crate) ctx: Arc<StageCtx>,
    /// The most lanes it may have (1 for a stage that must keep one lane, e.g. a
    /// one-to-many stage in input order, or an ungated one in input order).
    pub(crate) max: usize,
    /// Why `max` is 1, said when a resize above it is refused.
    pub(crate) why_fixed: Option<&'static str>,
    /// Autotune's bounds for it, when autotune tunes it.
    pub(crate) auto: Option<(usize, usize)>,
    /// Its lanes run on the pipeline's default pool (so more lanes may need more threads).
    pub(crate) on_default_pool: bool,
    /// Its lanes run on the async runtime.
    pub(crate) is_async: bool,
    pub(crate) spawn: SpawnLane,
    /// Serialises resizes of this stage (the user's and autotune's).
    lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for StageResizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageResizer")
            .field("stage", &self.ctx.name)
            .field("max", &self.max)
            .field("auto", &self.auto)
            .finish_non_exhaustive()
    }
}

impl StageResizer {
    pub(crate) fn new(
        ctx: Arc<StageCtx>,
        max: usize,
        why_fixed: Option<&'static str>,
        auto: Option<(usize, usize)>,
        (on_default_pool, is_async): (bool, bool),
        spawn: SpawnLane,
    ) -> Self {
        Self {
            ctx,
            max,
            why_fixed,
            auto,
            on_default_pool,
            is_async,
            spawn,
            lock: std::sync::Mutex::new(()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.ctx.name
    }

    /// The concurrency asked for now.
    pub(crate) fn concurrency(&self) -> usize {
        self.ctx.lanes.target()
    }

    /// Sets the stage's concurrency to `n`: lanes start now, or retire at their next item
    /// boundary.
    pub(crate) fn resize(&self, n: usize) -> Result<(), TuneError> {
        let name = &self.ctx.name;
        if n == 0 {
            return Err(TuneError::new(format!(
                "stage `{name}`: concurrency must be at least 1"
            )));
        }
        if n > self.max {
            let why = self
                .why_fixed
                .unwrap_or("that is the most lanes it can have");
            return Err(TuneError::new(format!(
                "stage `{name}` cannot have {n} lanes, at most {} ({why})",
                self.max
            )));
        }
        let _one_at_a_time = lock(&self.lock);
        for slot in self.ctx.lanes.set_target(n) {
            if !(self.spawn)(slot) {
                self.ctx.lanes.lane_ended(slot);
            }
        }
        Ok(())
    }
}
