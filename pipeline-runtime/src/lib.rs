//! A data-loading pipeline engine: a source, concurrent stages, batches and a sink, with
//! bounded queues between stages so that memory stays bounded and a slow consumer slows
//! the source instead of filling memory.
//!
//! ```
//! use pipeline_runtime::pipeline;
//!
//! async fn fetch(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! let pipeline = pipeline! {
//!     source(0..100u64)
//!     -> pipe(async fetch, concurrency = 8)
//!     -> pipe(|x: u64| x + 1, concurrency = 4, name = "inc")
//!     -> aggregate(10)
//!     -> sink(buffer = 4, num_threads = 2)
//! }?;
//!
//! let mut total = 0;
//! for batch in pipeline {
//!     total += batch?.iter().sum::<u64>();
//! }
//! assert_eq!(total, 10000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`pipeline!`] macro writes a pipeline as its data flow and checks it at compile time;
//! it expands into the typed builder, which can also be used directly, e.g. for pipelines
//! assembled at run time. A stage's options follow it, and the pipeline-wide settings
//! follow [`sink`](StageBuilder::sink):
//!
//! ```
//! use pipeline_runtime::PipelineBuilder;
//!
//! let pipeline = PipelineBuilder::new()
//!     .source(0..100u64)
//!     .pipe(|x| x * 2)
//!     .concurrency(4)
//!     .name("double")
//!     .aggregate(10)
//!     .sink()
//!     .buffer(4)
//!     .num_threads(2)
//!     .build()?;
//!
//! let mut total = 0;
//! for batch in pipeline {
//!     total += batch?.iter().sum::<u64>();
//! }
//! assert_eq!(total, 9900);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A word before `pipe` says what the stage function returns, in the same order and with the
//! same words as the macro's modifiers: [`try_pipe`](StageBuilder::try_pipe) (a `Result`:
//! `Err` fails the item), [`opt_pipe`](StageBuilder::opt_pipe) (an `Option`: `None` drops it),
//! [`flat_pipe`](StageBuilder::flat_pipe) (an iterator: any number of outputs), with
//! `async_` for an async function ([`async_try_flat_pipe`](StageBuilder::async_try_flat_pipe)
//! is `pipe(async try flat f)`) and `process_` for a registered `fn` run in the worker
//! processes of a [`ProcessPool`]. Programs with process stages or subprocesses put
//! `#[pipeline_runtime::main]` on `fn main`. A [`Pipeline`] is an `Iterator`;
//! [`into_stream`](Pipeline::into_stream) gives a `Stream` for async consumers.
//!
//! The guide in `docs/` explains stages and their shapes, the macro, concurrency, executors,
//! failures, epochs and backpressure, and (module [`distributed`]) multi-GPU training with
//! exact resume.
//!
//! With the `storage` feature, the `storage` module reads training data from object stores
//! (local, in memory, and with their features S3, GCS, Azure), as WebDataset tar shards or
//! (feature `parquet`) Parquet files.
//!
//! Worker processes ([`ProcessPool`], process stages, the [`process`] and [`subprocess`]
//! modules) need a Unix system: they re-execute the program, talk over pipes and share
//! memory through `/dev/shm`. Elsewhere those items are absent and the rest of the crate
//! (threads, async stages, the macro) works the same.

mod async_runtime;
mod block_on;
mod budget;
mod builder;
mod clock;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod distributed;
mod error;
pub mod executor;
mod failure;
mod hook;
mod launch;
mod pipeline;
#[cfg(unix)]
pub mod process;
mod queue;
mod resume;
mod run_state;
mod stage;
mod stats;
#[cfg(feature = "storage")]
pub mod storage;
#[cfg(unix)]
pub mod subprocess;
mod sync;
mod tune;

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;

/// The macros (feature `macros`, on by default).
#[cfg(feature = "macros")]
pub use pipeline_macros::{main, pipeline};

/// The guide's chapters and the README, included here so that every example in them is
/// compiled and run as a doctest (`cargo test --doc -p pipeline-runtime`). Only rustdoc's
/// doctest pass sees it (`cfg(doctest)`): it is no part of the crate.
#[cfg(doctest)]
mod __guide {
    #[doc = include_str!("../../README.md")]
    mod readme {}
    #[doc = include_str!("../../docs/src/getting-started.md")]
    mod getting_started {}
    #[doc = include_str!("../../docs/src/stages.md")]
    mod stages {}
    #[doc = include_str!("../../docs/src/macro.md")]
    mod macro_chapter {}
    #[doc = include_str!("../../docs/src/failures.md")]
    mod failures {}
    #[doc = include_str!("../../docs/src/epochs.md")]
    mod epochs {}
    #[doc = include_str!("../../docs/src/structures.md")]
    mod structures {}
    #[doc = include_str!("../../docs/src/backpressure.md")]
    mod backpressure {}
    #[doc = include_str!("../../docs/src/lifecycle.md")]
    mod lifecycle {}
    #[doc = include_str!("../../docs/src/distributed.md")]
    mod distributed {}
    #[cfg(feature = "cuda")]
    #[doc = include_str!("../../docs/src/gpu.md")]
    mod gpu {}
    #[cfg(unix)]
    #[doc = include_str!("../../docs/src/parallelism.md")]
    mod parallelism {}
    #[cfg(unix)]
    #[doc = include_str!("../../docs/src/process-regions.md")]
    mod process_regions {}
    #[cfg(unix)]
    #[doc = include_str!("../../docs/src/subprocess.md")]
    mod subprocess {}
    #[doc = include_str!("../../docs/src/performance.md")]
    mod performance {}
    #[doc = include_str!("../../docs/src/tuning.md")]
    mod tuning {}
    #[doc = include_str!("../../docs/src/migration.md")]
    mod migration {}
    #[cfg(feature = "storage")]
    #[doc = include_str!("../../docs/src/storage.md")]
    mod storage {}
    // "Image loading" and "In a training loop" use the examples' library (and candle), so
    // `pipeline-examples` compiles them (its `__guide` module).
}

pub use budget::{ItemBytes, MemoryStats};
pub use builder::{PipelineBuilder, SinkBuilder, StageBuilder, DEFAULT_SINK_BUFFER};
pub use error::{BoxError, BudgetScope, BuildError, ItemError};
pub use executor::{Executor, ThreadPool, ThreadPoolBuilder};
pub use failure::{MaxFailures, PipelineError, StageFailure, StageFailureKind};
pub use hook::{HookFactory, StageInfo, TaskHook, TaskOutcome};
pub use launch::DEFAULT_QUEUE_CAPACITY;
pub use pipeline::{Epoch, GetError, Pipeline, PipelineStream};
#[cfg(unix)]
pub use process::{ProcessPool, ProcessPoolBuilder};
/// The rayon this crate is built with, so that a pool for [`Executor::Rayon`] needs no
/// dependency of your own.
pub use rayon;
pub use resume::ResumeState;
pub use stage::aggregate::{Aggregator, Batch};
pub use stage::merge::{MergeChooser, MergePolicy, OnEnd};
pub use stage::pipe::Order;
pub use stage::route::{BatchedBranches, BatchedRoute, Branches, Route};
pub use stats::report::TARGET as STATS_TARGET;
pub use stats::{
    ConsumerSeries, ConsumerStats, DurationStats, PipelineStats, QueueSeries, QueueStats,
    StageKind, StageSeries, StageStats, StatsSeries, TuneDecision, TuneTarget,
};
pub use tune::{TuneError, TUNE_TARGET};
