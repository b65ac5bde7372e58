//! Executors: where a synchronous stage runs.
//!
//! A stage keeps `concurrency` *lanes*; each lane takes an item, calls the stage function and
//! passes the result on. The executor decides which threads run the lanes:
//!
//! * [`Executor::Default`]: the pipeline's own pool of `num_threads` threads.
//! * [`Executor::Threads`]: a [`ThreadPool`] of yours, e.g. one dedicated thread that owns a
//!   CUDA stream. A pool can serve several stages and pipelines.
//! * [`Executor::Rayon`]: a [`rayon::ThreadPool`] of yours; the stage may use rayon inside.
//! * `Executor::Processes`: a [pool of worker processes](crate::process::ProcessPool)
//!   (Unix), for process stages (a registered `fn` whose items cross with serde;
//!   see [`process_fn!`](crate::process_fn)).
//!
//! `concurrency` caps the items a stage has in flight; the executor's thread count caps how
//! many stage calls truly run at once. A lane waiting on a queue does not hold a thread.
//! Async stages run on the pipeline's async runtime and take no executor.

mod rayon_pool;
pub(crate) mod task;
mod thread_pool;

use std::fmt;
use std::sync::Arc;

#[cfg(unix)]
use crate::process::ProcessPool;
pub(crate) use task::drop_deferred;
pub(crate) use thread_pool::join_all_until;
pub use thread_pool::{ThreadPool, ThreadPoolBuilder};

/// The rayon this crate is built with: [`Executor::Rayon`] takes an
/// `Arc<rayon::ThreadPool>`, and with this one you build it without a rayon dependency of
/// your own (or a second copy of rayon in your build).
pub use ::rayon;

use task::LaneFuture;

/// Which threads run a synchronous stage. See the [module docs](self).
#[derive(Clone, Default)]
pub enum Executor {
    /// The pipeline's default pool (`num_threads` threads).
    #[default]
    Default,
    /// A thread pool of your own.
    Threads(ThreadPool),
    /// A rayon pool of your own.
    Rayon(Arc<::rayon::ThreadPool>),
    /// Worker processes of your own, for process stages only (Unix).
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    Processes(ProcessPool),
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Executor::Default => f.write_str("Executor::Default"),
            Executor::Threads(pool) => write!(f, "Executor::Threads({pool:?})"),
            Executor::Rayon(pool) => {
                write!(f, "Executor::Rayon({} threads)", pool.current_num_threads())
            }
            #[cfg(unix)]
            Executor::Processes(pool) => write!(f, "Executor::Processes({pool:?})"),
        }
    }
}

impl From<ThreadPool> for Executor {
    fn from(pool: ThreadPool) -> Self {
        Executor::Threads(pool)
    }
}

impl From<&ThreadPool> for Executor {
    fn from(pool: &ThreadPool) -> Self {
        Executor::Threads(pool.clone())
    }
}

impl From<Arc<::rayon::ThreadPool>> for Executor {
    fn from(pool: Arc<::rayon::ThreadPool>) -> Self {
        Executor::Rayon(pool)
    }
}

impl From<&Arc<::rayon::ThreadPool>> for Executor {
    fn from(pool: &Arc<::rayon::ThreadPool>) -> Self {
        Executor::Rayon(pool.clone())
    }
}

#[cfg(unix)]
impl From<ProcessPool> for Executor {
    fn from(pool: ProcessPool) -> Self {
        Executor::Processes(pool)
    }
}

#[cfg(unix)]
impl From<&ProcessPool> for Executor {
    fn from(pool: &ProcessPool) -> Self {
        Executor::Processes(pool.clone())
    }
}

impl Executor {
    pub(crate) fn spawn_lane(&self, default_pool: &ThreadPool, lane: LaneFuture) {
        match self {
            Executor::Default => default_pool.spawn_lane(lane),
            Executor::Threads(pool) => {
                // The lane keeps a handle: a pool given by value (the pipeline holding the
                // only handle) must not shut down while its lanes still run.
                let handle = pool.clone();
                pool.spawn_lane(Box::pin(async move {
                    let _handle = handle;
                    lane.await
                }))
            }
            Executor::Rayon(pool) => rayon_pool::spawn_lane(pool, lane),
            // On the pool's caller threads, each of which talks to its own worker.
            #[cfg(unix)]
            Executor::Processes(pool) => pool.spawn_lane(default_pool, lane),
        }
    }
}
