//! What the macros' expansions name (`pipeline!`, `#[main]`, `process_fn!`, `subprocess_fn!`,
//! `process_region!`),
//! and nothing else. Not a public API: it may change
//! in any release.

#[cfg(unix)]
/// The one registration path of a function a child runs (`process_fn!`, `subprocess_fn!`).
pub use crate::__pipeline_runtime_register as register;
pub use crate::builder::{
    BatchedBranches, Branches, PipelineBuilder, StageBuilder, DEFAULT_SINK_BUFFER,
};
#[cfg(unix)]
pub use crate::executor::process_fn::call_process_fn;
#[cfg(unix)]
pub use crate::executor::region::worker::run_region;
#[cfg(unix)]
pub use crate::executor::region::RegionIo;
pub use crate::failure::MaxFailures;
#[cfg(unix)]
/// What `#[pipeline_runtime::main]` calls first.
pub use crate::process::init as process_init;
#[cfg(unix)]
pub use crate::registry::{fn_type_name, Registration};
pub use crate::stage::merge::{MergePolicy, OnEnd};
pub use crate::stage::pipe::Order;
#[cfg(unix)]
pub use crate::subprocess::factory::{run_init, start_iter, start_pipeline};
pub use crate::BoxError;
pub use futures::Stream;
pub use inventory;
pub use serde;

/// What `#[pipeline_runtime::main]` calls first: nothing where there are no worker processes.
#[cfg(not(unix))]
pub fn process_init() {}

/// A stage function: called from the pipeline's threads, concurrently, for as long as the
/// pipeline runs.
#[diagnostic::on_unimplemented(
    message = "a stage function must be `Send + Sync + 'static`, and `{Self}` is not",
    label = "this stage function cannot be sent to the pipeline's threads",
    note = "the pipeline calls a stage function from its worker threads, on several items at \
            once, for as long as the pipeline runs, which can outlive the scope that built it; \
            capture `Arc`s rather than `Rc`s or references, and use `move` closures"
)]
pub trait StageFn: Send + Sync + 'static {}

#[diagnostic::do_not_recommend]
impl<F: Send + Sync + 'static> StageFn for F {}

/// An item passed from one stage to the next.
#[diagnostic::on_unimplemented(
    message = "the items passed between stages must be `Send + 'static`, and `{Self}` is not",
    label = "this stage produces `{Self}`",
    note = "stages run on different threads and items wait in queues between them"
)]
pub trait Item: Send + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Send + 'static> Item for T {}

/// What a process stage takes: it is encoded and sent to a worker process.
#[diagnostic::on_unimplemented(
    message = "a process stage's input must be `serde::Serialize`, and `{Self}` is not",
    label = "this stage's input is sent to a worker process",
    note = "items cross the process boundary with serde: derive `serde::Serialize` and \
            `serde::Deserialize` for `{Self}`, or send something that does (e.g. bytes, a path)"
)]
pub trait ProcessInput: serde::Serialize {}

#[diagnostic::do_not_recommend]
impl<T: serde::Serialize> ProcessInput for T {}

/// What a process stage produces: it is decoded from the worker's reply.
#[diagnostic::on_unimplemented(
    message = "a process stage's output must be `serde::Deserialize`, and `{Self}` is not",
    label = "this stage's output comes back from a worker process",
    note = "items cross the process boundary with serde: derive `serde::Serialize` and \
            `serde::Deserialize` for `{Self}`; a handle to a resource (a file, a socket, a GPU \
            buffer) cannot cross it"
)]
pub trait ProcessOutput: serde::de::DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: serde::de::DeserializeOwned> ProcessOutput for T {}

/// The previous stage, unchanged; spans a guard's argument over the user's stage tokens.
pub fn stage_input<T>(stage: StageBuilder<T>) -> StageBuilder<T> {
    stage
}

/// Stands in for a source the macro input lacks (an error says so), so that the rest of the
/// pipeline is still checked.
pub fn missing_source<T: Send + 'static>() -> StageBuilder<T> {
    PipelineBuilder::new().source(std::iter::empty())
}
