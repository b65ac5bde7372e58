//! Shared code of the example programs (`examples/*.rs`), the benchmark driver and their
//! tests: a progress bar that follows a running pipeline ([`progress`]), `tracing` set up with
//! an optional Chrome/Perfetto trace file ([`trace`]), the image-loading stages
//! ([`image_pipeline`], over `pipeline_runtime::images`), generated JPEG datasets
//! ([`datasets`]), generated data and temporary directories ([`scratch`]), one rank
//! of a multi-process training job ([`distributed`]), and a real S3-compatible server on the
//! loopback interface for the S3 tests and benchmarks ([`s3_server`]).
//!
//! With feature `candle`: batches as candle tensors (`candle`) and a small training run on
//! the pipeline (`training`), for `examples/train.rs`. With feature `burn`: a pipeline as
//! burn's `DataLoader` (`burn_loader`) and the same training run on burn
//! (`burn_training`), for `examples/train_burn.rs`.

#[cfg(feature = "burn")]
pub mod burn_loader;
#[cfg(feature = "burn")]
pub mod burn_training;
#[cfg(feature = "candle")]
pub mod candle;
pub mod datasets;
pub mod distributed;
pub mod image_pipeline;
pub mod progress;
pub mod remote;
pub mod s3_server;
pub mod scratch;
pub mod shard_job;
pub mod shards;
pub mod trace;
#[cfg(feature = "candle")]
pub mod training;

/// The guide's chapters that use this crate, compiled as doctests.
#[doc(hidden)]
pub mod __guide {
    #[doc = include_str!("../../docs/src/image-loading.md")]
    pub mod image_loading {}
    #[cfg(feature = "candle")]
    #[doc = include_str!("../../docs/src/training.md")]
    pub mod training {}
    /// The section "With burn" of the chapter above, which mdBook includes there.
    #[cfg(feature = "burn")]
    #[doc = include_str!("../../docs/src/training-burn.md")]
    pub mod training_burn {}
}
