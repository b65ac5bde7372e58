//! Example programs live beside this file; see `examples/*.rs`. This library holds what
//! several of them share: a progress bar that follows a running pipeline
//! ([`progress`]), and `tracing` set up with an optional Chrome/Perfetto trace file
//! ([`trace`]).

pub mod progress;
pub mod trace;
