//! Process regions: consecutive stages that run, as a whole, inside each worker of a
//! [`ProcessPool`](super::ProcessPool), as a nested pipeline; only the values entering and
//! leaving the region cross the process boundary (with serde).
//!
//! A worker is this program run again, so the region must be found there by name: it is a
//! named `fn` that adds the region's stages to a builder of its input
//! (`fn(StageBuilder<In>) -> StageBuilder<Out>`), registered with
//! [`process_region!`](crate::process_region). The parent keeps one thread per worker (the
//! region's stage side, `stage::region::lane`): it sends the region's inputs to its worker as
//! they come and reads the worker's outputs back; the worker
//! ([`region_worker`](super::region_worker)) runs the nested pipeline between the two. This
//! file holds what both sides share: the wire below, the registered form of a region
//! ([`RegionFn`]) and the macro that registers one.
//!
//! The wire, after the stage worker's request naming the region: the parent sends items
//! (and epoch boundaries) and then an end; the worker answers once that it is ready, then
//! sends outputs (each with how many inputs it is done with), acknowledgements of the inputs
//! its nested pipeline took, its boundaries, its stages' counters now and then, and at the
//! end its last counters (or its pipeline's failure).

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use crate::stats::RemoteCounts;

/// The channel a region runs over, as the registry hands it to a region (opaque).
#[doc(hidden)]
pub struct RegionIo<'a>(pub(crate) &'a mut Channel);

impl std::fmt::Debug for RegionIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionIo")
    }
}

/// A process region as the registry keeps it: runs the region's nested pipeline over the
/// channel, with its start arguments (see [`run_region`](super::region_worker::run_region)).
#[doc(hidden)]
pub type RegionFn = fn(RegionIo<'_>, &[u8]) -> Result<(), String>;

/// What the worker's nested pipeline is built with: the parent's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RegionStart {
    pub(crate) num_threads: usize,
    pub(crate) queue_capacity: usize,
    /// The chain carries epoch boundaries (a continuous source).
    pub(crate) continuous: bool,
}

/// Parent to worker: an input item.
pub(crate) const TO_ITEM: u8 = 0;
/// Parent to worker: no more inputs.
pub(crate) const TO_END: u8 = 1;
/// Parent to worker: an epoch boundary (continuous mode).
pub(crate) const TO_EPOCH: u8 = 2;

/// Worker to parent: the nested pipeline is built and running.
pub(crate) const FROM_READY: u8 = 0;
/// Worker to parent: an output (after 8 bytes: inputs resolved so far, little endian).
pub(crate) const FROM_ITEM: u8 = 1;
/// Worker to parent: a [`Progress`].
pub(crate) const FROM_STATS: u8 = 2;
/// Worker to parent: the last [`Progress`]; the region is over on this worker.
pub(crate) const FROM_DONE: u8 = 3;
/// Worker to parent: the nested pipeline failed (a `RemotePipelineError`), or could not
/// be built (a message); the worker drains the inputs until their end.
pub(crate) const FROM_FAILED: u8 = 4;
pub(crate) const FROM_REFUSED: u8 = 5;
/// Worker to parent: an output that could not be encoded (a message); it fails.
pub(crate) const FROM_LOST: u8 = 6;
/// Worker to parent: how many inputs its nested pipeline has taken (u64 little endian),
/// every [`CREDIT_EVERY`] inputs: the parent keeps at most [`WINDOW`] inputs on the way.
pub(crate) const FROM_TAKEN: u8 = 7;
/// Worker to parent: its nested pipeline passed an epoch boundary on (every output of the
/// epoch came before).
pub(crate) const FROM_EPOCH: u8 = 8;

/// Inputs a worker acknowledges at once.
pub(crate) const CREDIT_EVERY: u64 = 8;
/// Inputs sent to a worker that its nested pipeline has not taken yet, at most: bounds what
/// waits in the pipe (so that a worker that dies holds little, and a slow worker does not
/// hoard inputs that a faster one could take).
pub(crate) const WINDOW: u64 = 4 * CREDIT_EVERY;

/// How far a worker is: inputs it is done with (delivered, failed or dropped), and its
/// stages' totals (the region's stages, without the worker's own source).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) resolved: u64,
    pub(crate) stages: Vec<RemoteCounts>,
}

/// Registers functions as process regions, so that worker processes can build them:
///
/// ```
/// use pipeline_runtime::StageBuilder;
///
/// fn parse(line: String) -> usize {
///     line.len()
/// }
/// fn lengths(lines: StageBuilder<String>) -> StageBuilder<Vec<usize>> {
///     lines.pipe(parse).concurrency(2).aggregate(4)
/// }
/// pipeline_runtime::process_region!(lengths);
/// ```
///
/// Write it at module level, next to the functions. Only the region's input and output
/// cross the process boundary, so the input must be `Deserialize` and the output
/// `Serialize` (checked here, at compile time); the values between its stages stay in the
/// worker.
#[macro_export]
macro_rules! process_region {
    ($($f:path),+ $(,)?) => {
        $( $crate::__private::register!(region $f); )+
    };
}
