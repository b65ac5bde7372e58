//! Shared code of the example programs (`examples/*.rs`), the benchmark driver and their
//! tests.

pub mod image_pipeline;
pub mod images;

/// The guide's chapters that use this crate, compiled as doctests.
#[doc(hidden)]
pub mod __guide {
    #[doc = include_str!("../../docs/src/image-loading.md")]
    pub mod image_loading {}
}
