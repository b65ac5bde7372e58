//! What a running pipeline offers for resizing and watching, shared by the pipeline handle
//! (its `resize` methods) and the supervisor thread that runs autotune and stall detection.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::resize::StageResizer;
use super::{TuneError, TuneLog};
use crate::executor::ThreadPool;
use crate::memory::MemoryLimit;
use crate::run_state::RunState;
use crate::stage::StageCtx;
use crate::stats::{StatsRegistry, TuneDecision, TuneTarget};
use crate::sync::lock;

/// A running pipeline's resizable parts.
pub(crate) struct Supervised {
    pub(crate) resizers: Vec<StageResizer>,
    /// Every stage, source first (for progress and stalls).
    pub(crate) stages: Vec<Arc<StageCtx>>,
    pub(crate) pool: ThreadPool,
    /// Serialises resizes of the pool.
    pool_lock: Mutex<()>,
    pub(crate) log: TuneLog,
    pub(crate) memory: Option<Arc<MemoryLimit>>,
    pub(crate) run: Arc<RunState>,
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) started: Instant,
}

impl Supervised {
    pub(crate) fn new(
        resizers: Vec<StageResizer>,
        stages: Vec<Arc<StageCtx>>,
        pool: ThreadPool,
        memory: Option<Arc<MemoryLimit>>,
        run: Arc<RunState>,
        stats: Arc<StatsRegistry>,
    ) -> Self {
        Self {
            resizers,
            stages,
            pool,
            pool_lock: Mutex::new(()),
            log: TuneLog::default(),
            memory,
            run,
            stats,
            started: Instant::now(),
        }
    }

    fn decision(&self, target: TuneTarget, (from, to): (usize, usize), reason: String, tp: f64) {
        self.log.record(TuneDecision {
            at: self.started.elapsed(),
            target,
            from,
            to,
            reason,
            throughput: tp,
        });
    }

    /// Resizes stage `index` of the resizers, logging why.
    pub(crate) fn resize_stage(
        &self,
        index: usize,
        to: usize,
        reason: String,
        throughput: f64,
    ) -> Result<(), TuneError> {
        let r = &self.resizers[index];
        let from = r.concurrency();
        r.resize(to)?;
        if from != to {
            self.decision(
                TuneTarget::Stage(r.name().to_owned()),
                (from, to),
                reason,
                throughput,
            );
        }
        Ok(())
    }

    /// Resizes the default pool, logging why.
    pub(crate) fn resize_pool(
        &self,
        to: usize,
        reason: String,
        throughput: f64,
    ) -> Result<(), TuneError> {
        let _one_at_a_time = lock(&self.pool_lock);
        let from = self.pool.num_threads();
        self.pool
            .resize(to)
            .map_err(|e| TuneError::new(e.to_string()))?;
        if from != to {
            self.decision(TuneTarget::Pool, (from, to), reason, throughput);
        }
        Ok(())
    }

    /// The user's resize of the stage named `name`.
    pub(crate) fn resize_by_name(&self, name: &str, to: usize) -> Result<(), TuneError> {
        let Some(index) = self.resizers.iter().position(|r| r.name() == name) else {
            let names: Vec<_> = self.resizers.iter().map(|r| r.name().to_owned()).collect();
            return Err(TuneError::new(format!(
                "no resizable stage is named `{name}` (the `pipe` stages are: {})",
                names.join(", ")
            )));
        };
        self.resize_stage(index, to, "user".to_owned(), 0.0)
    }
}
