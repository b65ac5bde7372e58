//! What the macros' expansions name (`pipeline!`, `#[main]`, `process_fn!`, `subprocess_fn!`,
//! `process_region!`),
//! and nothing else. Not a public API: it may change
//! in any release.

#[cfg(unix)]
/// The one registration path of a function a child runs (`process_fn!`, `subprocess_fn!`).
pub use crate::__pipeline_runtime_register as register;
pub use crate::builder::{PipelineBuilder, StageBuilder};
pub use crate::failure::BoxError;
pub use crate::failure::MaxFailures;
#[cfg(unix)]
/// What `#[pipeline_runtime::main]` calls first.
pub use crate::process::init as process_init;
#[cfg(unix)]
pub use crate::process::region::{RegionFn, RegionIo};
#[cfg(unix)]
pub use crate::process::region_worker::run_region;
#[cfg(unix)]
pub use crate::process::registry::{fn_type_name, Kind as RegistrationKind, Registration};
#[cfg(unix)]
pub use crate::process::stage_worker::{call_process_fn, CallFn};
#[cfg(unix)]
pub(crate) use crate::process::worker::WorkerFn;
pub use crate::stage::merge::{MergePolicy, OnEnd};
// `remote_region(f, workers = w)`.
#[cfg(all(unix, feature = "remote"))]
pub use crate::remote;
pub use crate::stage::pipe::Order;
/// The bounds of each pipe shape's function, named by the macro's guards and by the
/// builder's methods alike.
pub use crate::stage::pipe::{
    AsyncFlatPipeFn, AsyncOptPipeFn, AsyncPipeFn, AsyncTryFlatPipeFn, AsyncTryPipeFn, FlatPipeFn,
    OptPipeFn, PipeFn, TryFlatPipeFn, TryPipeFn,
};
#[cfg(unix)]
pub use crate::stage::pipe::{
    ProcessFlatPipeFn, ProcessOptPipeFn, ProcessPipeFn, ProcessTryFlatPipeFn, ProcessTryPipeFn,
};
#[cfg(unix)]
pub use crate::stage::pipe::{ProcessInput, ProcessOutput};
/// What every stage function and item must be, with messages that say why.
pub use crate::stage::pipe::{StageFn, StageItem as Item};
pub use crate::stage::route::{BatchedBranches, Branches};
#[cfg(unix)]
pub use crate::subprocess::factory::{run_init, start_iter, start_pipeline, InitFn, StartFn};
pub use futures::Stream;
pub use inventory;
pub use serde;

/// What `#[pipeline_runtime::main]` calls first: nothing where there are no worker processes.
#[cfg(not(unix))]
pub fn process_init() {}

/// The previous stage, unchanged; spans a guard's argument over the user's stage tokens.
pub fn stage_input<T>(stage: StageBuilder<T>) -> StageBuilder<T> {
    stage
}

/// Stands in for a source the macro input lacks (an error says so), so that the rest of the
/// pipeline is still checked.
pub fn missing_source<T: Send + 'static>() -> StageBuilder<T> {
    PipelineBuilder::new().source(std::iter::empty())
}
