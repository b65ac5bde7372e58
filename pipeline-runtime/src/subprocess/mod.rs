//! Pipelines and iterators in a child process: [`run_pipeline_in_subprocess`] and
//! [`iterate_in_subprocess`].
//!
//! The whole pipeline runs in a child (this program's executable run again, see
//! [`process`](crate::process)), and its output streams to the parent, so that the parent's
//! CPU stays free for other work, e.g. launching GPU kernels. Items cross with serde: small
//! ones batched through a pipe, large ones (`>=` [`DEFAULT_SHM_THRESHOLD`] bytes encoded)
//! through shared-memory slots, with one copy into the slot in the child and one out of it
//! in the parent. A failed stage in the child arrives as a structured
//! [`RemotePipelineError`]; a child that crashes or exits arrives as
//! [`SubprocessError::ChildEnded`] with its [`ExitReport`](crate::process::ExitReport).
//!
//! For fast transfer of byte buffers, give them a serde form that writes them as one block
//! ([`Bytes`] does; a plain `Vec<u8>` is written byte by byte).

mod bytes;
mod error;
pub(crate) mod factory;
pub(crate) mod output;
mod parent;
mod shm;
mod wire;
mod worker;

pub use bytes::Bytes;
pub use error::{RemoteFailureKind, RemotePipelineError, RemoteStageFailure, SubprocessError};
pub use parent::{
    iterate_in_subprocess, run_pipeline_in_subprocess, IntoIter, Iter, Subprocess,
    SubprocessOptions, SubprocessStream, DEFAULT_BUFFER_SIZE, DEFAULT_SHM_THRESHOLD,
    DEFAULT_SLOT_SIZE,
};
