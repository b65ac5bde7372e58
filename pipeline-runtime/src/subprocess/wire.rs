//! What crosses the pipe between the parent and a subprocess, besides the plumbing's own
//! handshake: the setup the child runs, and the records of the frames the child sends.
//!
//! A frame from the child holds one or more records, each a tag byte then its payload:
//! an item encoded inline, a reference to an item in a shared-memory slot, an epoch end,
//! the end of the output, or the pipeline's failure. Small items are batched, several
//! records to a frame, so that they cost a fraction of a write each.

use serde::{Deserialize, Serialize};

use super::shm::ShmSpec;

/// Name of the worker entry point that runs subprocess pipelines and iterators.
pub(crate) const ENTRY: &str = "pipeline_runtime::subprocess";

/// The child's arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub(crate) factory: String,
    pub(crate) factory_args: Vec<u8>,
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    pub(crate) shm: Option<ShmSpec>,
    pub(crate) shm_threshold: usize,
    pub(crate) batch_bytes: usize,
}

/// The child is ready: the initialiser and the factory succeeded (frame on its own).
pub(crate) const READY: u8 = 1;
/// The initialiser or the factory failed: `(step, message)` follows (frame on its own).
pub(crate) const INIT_FAILED: u8 = 2;
/// An item, encoded, follows.
pub(crate) const ITEM: u8 = 3;
/// An item in a shared-memory slot: slot number and length follow (`u32` LE each).
pub(crate) const SHM_ITEM: u8 = 4;
/// An epoch of a continuous pipeline ended.
pub(crate) const EPOCH_END: u8 = 5;
/// The output is complete.
pub(crate) const FINISHED: u8 = 6;
/// The pipeline failed: a `RemotePipelineError` follows, to the end of the frame.
pub(crate) const FAILED: u8 = 7;
