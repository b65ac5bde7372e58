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
//! (each with an id, and epoch boundaries) and then an end; the worker answers once that it
//! is ready, then sends outputs (each with how many inputs it is done with and, when the
//! parent keeps a ledger, the ids of the inputs it stands for), the ids of the inputs it
//! resolved and how, acknowledgements of the inputs its nested pipeline took, its
//! boundaries, its stages' counters now and then, and at the end its last counters (or its
//! pipeline's failure).
//!
//! The ids let the parent's ledger (resume tracking, the memory budget, the accounts)
//! follow its positions through the region: an output holds a token of each input it
//! stands for, and an input's own token goes when the worker says it is resolved, which it
//! says after every output of it.

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use crate::resume::accounts::Outcome;
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
    /// The parent keeps a ledger: outputs name their inputs, and resolved inputs are
    /// reported ([`FROM_RESOLVED`]).
    #[serde(default)]
    pub(crate) trace: bool,
    /// The parent tracks a one-to-many stage's outputs one by one (resume tracking): so
    /// does the worker, naming them in an output's sources, and skipping those resolved.
    #[serde(default)]
    pub(crate) outputs: bool,
}

/// Parent to worker: an input item (after 8 bytes: its id, little endian; then the outputs
/// of it already resolved before a resume, see [`write_pairs`]).
pub(crate) const TO_ITEM: u8 = 0;
/// Parent to worker: no more inputs.
pub(crate) const TO_END: u8 = 1;
/// Parent to worker: an epoch boundary (continuous mode).
pub(crate) const TO_EPOCH: u8 = 2;

/// Worker to parent: the nested pipeline is built and running.
pub(crate) const FROM_READY: u8 = 0;
/// Worker to parent: an output (after 8 bytes: inputs resolved so far, little endian; then
/// the inputs it stands for, see [`write_pairs`], and the inputs resolved since
/// the last report, see [`write_resolved`]: in the same frame, so that an input whose last
/// output this is is resolved before the output can reach the consumer).
pub(crate) const FROM_ITEM: u8 = 1;
/// Worker to parent: a [`Progress`].
pub(crate) const FROM_STATS: u8 = 2;
/// Worker to parent: the last [`Progress`]; the region is over on this worker.
pub(crate) const FROM_DONE: u8 = 3;
/// Worker to parent: the nested pipeline failed (a `RemotePipelineError`), or could not
/// be built (a message); the worker drains the inputs until their end.
pub(crate) const FROM_FAILED: u8 = 4;
pub(crate) const FROM_REFUSED: u8 = 5;
/// Worker to parent: an output that could not be encoded (the inputs it stands for, see
/// [`write_pairs`], then a message); it fails.
pub(crate) const FROM_LOST: u8 = 6;
/// Worker to parent: how many inputs its nested pipeline has taken (u64 little endian),
/// every [`CREDIT_EVERY`] inputs: the parent keeps at most [`WINDOW`] inputs on the way.
pub(crate) const FROM_TAKEN: u8 = 7;
/// Worker to parent: its nested pipeline passed an epoch boundary on (every output of the
/// epoch came before).
pub(crate) const FROM_EPOCH: u8 = 8;
/// Worker to parent: inputs resolved in the region (see [`write_resolved`]).
pub(crate) const FROM_RESOLVED: u8 = 9;

/// Inputs resolved in a worker: their ids and outcomes.
pub(crate) type Resolved = Vec<(u64, Outcome)>;

/// Appends resolved inputs to `frame`: their count (4 bytes little endian), then each as
/// its id (8 bytes little endian) and how it ended for the parent's ledger (one byte, see
/// [`outcome_byte`]).
pub(crate) fn write_resolved(frame: &mut Vec<u8>, resolved: &[(u64, u8)]) {
    frame.extend_from_slice(&(resolved.len() as u32).to_le_bytes());
    for (id, outcome) in resolved {
        frame.extend_from_slice(&id.to_le_bytes());
        frame.push(*outcome);
    }
}

/// Reads what [`write_resolved`] wrote at the start of `body`; returns the inputs and the
/// rest. `None` if the frame is cut short or an outcome is unknown.
pub(crate) fn read_resolved(body: &[u8]) -> Option<(Resolved, &[u8])> {
    let (count, rest) = body.split_at_checked(4)?;
    let n = u32::from_le_bytes(count.try_into().ok()?) as usize;
    let (entries, rest) = rest.split_at_checked(n.checked_mul(9)?)?;
    let resolved = entries
        .chunks_exact(9)
        .map(|e| {
            let id = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            byte_outcome(e[8]).map(|outcome| (id, outcome))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((resolved, rest))
}

/// In an output's sources: the output stands for its input as a whole (not for output `k`
/// of a one-to-many stage's outputs of it).
pub(crate) const WHOLE: u64 = u64::MAX;

/// Appends `pairs` to `frame`: their count (4 bytes little endian), then each as two
/// numbers of 8 bytes little endian. An output's sources are pairs (an input's id, and
/// which output of a one-to-many stage's outputs of it this is, or [`WHOLE`]); an input's
/// outputs already resolved (after a resume) are `[start, end)` pairs.
pub(crate) fn write_pairs(frame: &mut Vec<u8>, pairs: &[[u64; 2]]) {
    frame.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for [a, b] in pairs {
        frame.extend_from_slice(&a.to_le_bytes());
        frame.extend_from_slice(&b.to_le_bytes());
    }
}

/// Reads what [`write_pairs`] wrote at the start of `body`; returns the pairs and the rest.
/// `None` if the frame is cut short (a count larger than the frame never allocates).
pub(crate) fn read_pairs(body: &[u8]) -> Option<(Vec<[u64; 2]>, &[u8])> {
    let (count, rest) = body.split_at_checked(4)?;
    let n = u32::from_le_bytes(count.try_into().ok()?) as usize;
    let (pairs, rest) = rest.split_at_checked(n.checked_mul(16)?)?;
    let number = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let pairs = pairs
        .chunks_exact(16)
        .map(|c| [number(&c[..8]), number(&c[8..])])
        .collect();
    Some((pairs, rest))
}

/// The byte of a region input's end, as the parent's ledger takes it: an input whose
/// outputs left the region is passed on (its outputs decide), else filtered or failed.
pub(crate) fn outcome_byte(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Delivered => 0,
        Outcome::Passed | Outcome::Filtered => 1,
        Outcome::Failed => 2,
    }
}

/// The outcome of [`outcome_byte`]'s byte; `None` for any other byte.
pub(crate) fn byte_outcome(byte: u8) -> Option<Outcome> {
    match byte {
        0 => Some(Outcome::Passed),
        1 => Some(Outcome::Filtered),
        2 => Some(Outcome::Failed),
        _ => None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_resolved_inputs_read_back_and_a_cut_frame_is_refused() {
        let mut frame = Vec::new();
        write_pairs(&mut frame, &[[3, WHOLE], [9, 2]]);
        write_resolved(&mut frame, &[(9, outcome_byte(Outcome::Failed))]);
        frame.extend_from_slice(b"rest");
        let (ids, rest) = read_pairs(&frame).unwrap();
        let (resolved, rest) = read_resolved(rest).unwrap();
        assert_eq!(
            (ids, resolved, rest),
            (
                vec![[3, WHOLE], [9, 2]],
                vec![(9, Outcome::Failed)],
                &b"rest"[..]
            )
        );
        // Cut anywhere inside the counted parts: refused, not read past the end.
        for cut in 0..frame.len() - 4 {
            let short = &frame[..cut];
            assert!(
                read_pairs(short)
                    .and_then(|(_, r)| read_resolved(r))
                    .is_none(),
                "{cut}"
            );
        }
        // A count beyond the frame allocates nothing and is refused.
        assert!(read_pairs(&u32::MAX.to_le_bytes()).is_none());
        assert!(read_resolved(&u32::MAX.to_le_bytes()).is_none());
        // An unknown outcome byte.
        let mut bad = Vec::new();
        write_resolved(&mut bad, &[(1, 7)]);
        assert!(read_resolved(&bad).is_none());
        for outcome in [
            Outcome::Delivered,
            Outcome::Passed,
            Outcome::Filtered,
            Outcome::Failed,
        ] {
            assert!(byte_outcome(outcome_byte(outcome)).is_some());
        }
    }
}
