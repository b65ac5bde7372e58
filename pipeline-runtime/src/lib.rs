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
//! processes of a [`process::ProcessPool`]. Programs with process stages or
//! subprocesses put `#[pipeline_runtime::main]` on `fn main`. A [`Pipeline`] is an
//! `Iterator`; [`into_stream`](Pipeline::into_stream) gives a `Stream` for async consumers.
//!
//! # Where things are
//!
//! The crate root holds the common path: the builders ([`PipelineBuilder`],
//! [`StageBuilder`], [`SinkBuilder`]), the running [`Pipeline`] (with [`PipelineStream`]
//! and [`Epoch`]), a stage's [`Order`], an [`Aggregator`] of your own, the failure budget
//! [`MaxFailures`], the errors a consumer meets ([`PipelineError`], and [`BoxError`] for a
//! stage function's), [`ResumeState`], and the macros. Each concept beyond it is a module:
//!
//! | module | what it holds |
//! |---|---|
//! | [`error`] | the other errors: an invalid definition, one failed item, a stage's terminal failure |
//! | [`executor`] | where synchronous stages run: the default pool, thread pools, rayon |
//! | [`structure`] | pipelines that are not a chain: merge, mix and route |
//! | [`hook`] | code run around every stage task |
//! | [`stats`] | statistics of a running pipeline, and their `tracing` target |
//! | [`tune`] | resizing, autotune, the memory limit, stall detection |
//! | [`distributed`] | ranks, sharded shuffles, per-item randomness, resume across ranks |
//! | [`resume_check`] | the resume check: a pipeline run straight and with preemptions, compared |
//! | [`process`] | worker processes: process stages and process regions (Unix) |
//! | [`subprocess`] | whole pipelines in a child process (Unix) |
//! | `storage` | object stores, WebDataset shards, Parquet (feature `storage`) |
//! | `images` | decode, crop and augment images under limits, batches (feature `images`) |
//! | `cuda` | batches to a CUDA device (feature `cuda`) |
//!
//! The guide in `docs/` has a chapter per concept: stages and their shapes, the macro,
//! parallelism and executors, process regions, failures, epochs, merge and route,
//! backpressure, the lifecycle, distributed training and resume, GPU transfer, subprocesses,
//! performance analysis, tuning and storage.
//!
//! Worker processes ([`process`], [`subprocess`]) need a Unix system: they re-execute the
//! program, talk over pipes and share memory through `/dev/shm`. Elsewhere those items are
//! absent and the rest of the crate (threads, async stages, the macro) works the same.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod async_runtime;
mod block_on;
mod builder;
mod clock;
#[cfg(feature = "cuda")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
pub mod cuda;
pub mod distributed;
pub mod error;
pub mod executor;
mod failure;
#[cfg(test)]
mod fuzz;
pub mod hook;
#[cfg(feature = "images")]
#[cfg_attr(docsrs, doc(cfg(feature = "images")))]
pub mod images;
mod launch;
mod memory;
mod pipeline;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod process;
mod queue;
#[cfg(all(unix, feature = "remote"))]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub mod remote;
mod resume;
mod run_state;
mod stage;
pub mod stats;
#[cfg(feature = "storage")]
#[cfg_attr(docsrs, doc(cfg(feature = "storage")))]
pub mod storage;
pub mod structure;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod subprocess;
mod sync;
pub mod tune;

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;

/// `pipeline!` and `#[pipeline_runtime::main]` (feature `macros`, on by default).
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
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
    #[cfg(all(unix, feature = "remote"))]
    #[doc = include_str!("../../docs/src/remote.md")]
    mod remote {}
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

pub use builder::{PipelineBuilder, SinkBuilder, StageBuilder};
pub use failure::{BoxError, MaxFailures, PipelineError};
pub use pipeline::{Epoch, Pipeline, PipelineStream};
pub use resume::check as resume_check;
pub use resume::ResumeState;
pub use stage::aggregate::Aggregator;
pub use stage::pipe::Order;
