//! Shared code of the example programs (`examples/*.rs`), the benchmark driver and their
//! tests: a progress bar that follows a running pipeline ([`progress`]), `tracing` set up with
//! an optional Chrome/Perfetto trace file ([`trace`]), the image-loading stages ([`images`],
//! [`image_pipeline`]), generated data and temporary directories ([`scratch`]), and a real
//! S3-compatible server on the loopback interface for the S3 tests and benchmarks
//! ([`s3_server`]).

pub mod image_pipeline;
pub mod images;
pub mod progress;
pub mod s3_server;
pub mod scratch;
pub mod shards;
pub mod trace;

/// The guide's chapters that use this crate, compiled as doctests.
#[doc(hidden)]
pub mod __guide {
    #[doc = include_str!("../../docs/src/image-loading.md")]
    pub mod image_loading {}
}
