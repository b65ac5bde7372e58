//! Shared code of the example programs (`examples/*.rs`), the benchmark driver and their
//! tests.

pub mod image_pipeline;
pub mod images;
