//! State shared by every part of one running pipeline: the stop flag, terminal failures,
//! the queues to close on stop and the threads to join.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::failure::{PipelineError, StageFailure, StageFailureKind};
use crate::queue::Tx;
use crate::sync::lock;

type Closer = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
pub(crate) struct RunState {
    stop: AtomicBool,
    failures: Mutex<Vec<StageFailure>>,
    closers: Mutex<Vec<Closer>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("stop", &self.stop.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RunState {
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sets the stop flag and closes every queue, waking whatever waits on one.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for close in lock(&self.closers).iter() {
            close();
        }
    }

    /// Remembers a queue so that stop can close it (weakly: the queue still closes by itself
    /// when its stage ends).
    pub(crate) fn register_queue<T: Send + 'static>(&self, tx: &Tx<T>) {
        let weak = tx.downgrade();
        lock(&self.closers).push(Box::new(move || {
            if let Some(tx) = weak.upgrade() {
                tx.close();
            }
        }));
    }

    /// Runs `hook` when the pipeline is asked to stop (e.g. to release a process pool).
    pub(crate) fn on_stop(&self, hook: Closer) {
        lock(&self.closers).push(hook);
    }

    pub(crate) fn register_thread(&self, handle: JoinHandle<()>) {
        lock(&self.threads).push(handle);
    }

    pub(crate) fn take_threads(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.threads))
    }

    pub(crate) fn fail(&self, stage: &str, kind: StageFailureKind) {
        let failure = StageFailure {
            stage: stage.to_owned(),
            kind,
        };
        tracing::error!(stage, "{failure}");
        lock(&self.failures).push(failure);
    }

    /// Takes the failures recorded so far, leaving none.
    pub(crate) fn take_error(&self) -> Option<PipelineError> {
        let failures = std::mem::take(&mut *lock(&self.failures));
        (!failures.is_empty()).then(|| PipelineError::new(failures))
    }
}
