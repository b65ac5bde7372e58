//! Exact resume: which of the source's items the consumer has received, as a small state
//! that a new pipeline of the same shape resumes from.
//!
//! The source numbers its items (their *position* in the source's order, counted from the
//! start of the epoch); every message between stages carries a [`Tag`] beside its item: the
//! position it came from, or, after an `aggregate`, a group standing for the positions of
//! the batch. With tracking on ([`SinkBuilder::track_resume`](crate::SinkBuilder::track_resume)),
//! a per-pipeline [`Ledger`](ledger::Ledger) counts, for each position the source has taken,
//! the messages that still carry it; a position is *resolved* when the last of them is
//! delivered to the consumer, fails, or is dropped (a filter, `drop_last`). The state is
//! then the source's frontier plus the positions below it that are not yet resolved, which
//! are exactly the items in flight: its size is bounded by the pipeline's in-flight bound,
//! whatever the epoch length.
//!
//! A pipeline built with [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from)
//! skips, at its source, the epochs before the state's and every position below the
//! frontier that was resolved, so it delivers exactly what the consumer had not received.

pub(crate) mod accounts;
pub mod check;
pub(crate) mod fanout;
pub(crate) mod ledger;
pub(crate) mod merge;
pub(crate) mod numbering;

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::failure::BuildError;
use accounts::EpochAccountState;
use fanout::FanOutState;
use merge::MergeState;

/// Keys of one source: source `i` numbers its positions from `i * SOURCE_SPAN`, so that the
/// inputs of a merge, each numbering its own, share one ledger (and one memory limit).
pub(crate) const SOURCE_SPAN: u64 = 1 << 54;

/// The most sources a tracked pipeline may have (the keys stay below 2^62).
pub(crate) const MAX_SOURCES: usize = 256;

/// The ledger's key of position `pos` of source `index`.
#[inline]
pub(crate) fn source_key(index: usize, pos: u64) -> u64 {
    index as u64 * SOURCE_SPAN + pos
}

/// What travels beside an item between stages: a source position, or a group of them (a
/// batch). Copied with the item; the ledger gives it meaning only when tracking is on.
///
/// Stored plus one in a `NonZeroU64`, so that a queue message (`Msg::Item(T, Tag)` or
/// `Msg::EpochEnd`) is no larger than before tags existed: the end of an epoch uses the
/// niche.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tag(NonZeroU64);

const GROUP: u64 = 1 << 62;

impl Tag {
    /// The tag of source position `pos` (below 2^62).
    #[inline]
    pub(crate) fn pos(pos: u64) -> Self {
        Self::from_raw(pos & (GROUP - 1))
    }

    /// A tag that stands for nothing (a message of a pipeline without tracking).
    pub(crate) const NONE: Tag = Tag(NonZeroU64::MIN);

    #[inline]
    fn from_raw(raw: u64) -> Self {
        Tag(NonZeroU64::new(raw + 1).expect("a tag is below 2^63"))
    }

    pub(crate) fn group(id: u64) -> Self {
        Self::from_raw((id & (GROUP - 1)) | GROUP)
    }

    pub(crate) fn is_group(self) -> bool {
        self.raw() & GROUP != 0
    }

    /// The position, or the group's key in the ledger.
    #[inline]
    pub(crate) fn raw(self) -> u64 {
        self.0.get() - 1
    }
}

/// Where a pipeline's consumer stands, for resuming it exactly: the epoch (pass of the
/// source) and, from that epoch's start, the source's frontier and the positions below it
/// that the consumer has not received and that neither failed nor were dropped.
///
/// Taken with [`Pipeline::resume_state`](crate::Pipeline::resume_state); given to a new
/// pipeline with [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from). It is
/// serde-serialisable; its size is bounded by the items a pipeline holds in flight, not by
/// the epoch length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The stages of the pipeline it was taken from, checked when resuming.
    shape: String,
    /// Passes of the source before the one the state is in.
    epoch: u64,
    /// Every position below it was taken by the source (counted from the epoch's start; it
    /// may run into the next epochs).
    frontier: u64,
    /// Positions below `frontier` still to deliver (they were in flight), ascending;
    /// written as `[start, end)` ranges, since items in flight are mostly consecutive.
    #[serde(with = "ranges")]
    pending: Vec<u64>,
    /// The ledger's accounts of the open epochs (from `epoch` on), so that an epoch's
    /// balance is checked across a resume. Absent in a state made elsewhere (then the
    /// resumed run accounts for its own part only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    accounts: Vec<EpochAccountState>,
    /// Pending inputs of one-to-many stages whose outputs were partly resolved, and which:
    /// the resumed stage skips those (one record per such input, so bounded by `pending`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fan_outs: Vec<FanOutState>,
    /// Through a merge: each source's place, in the order the sources start (then `epoch`
    /// is the merged epoch, and `frontier` and `pending` are unused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sources: Vec<SourceCursor>,
    /// Through a merge: the merge's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<MergeState>,
}

/// One source's place: its pass, and from that pass's start its frontier and the positions
/// below it still to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceCursor {
    pub(crate) epoch: u64,
    pub(crate) frontier: u64,
    /// `[start, end)` runs, expanded only once checked (a made-up state cannot make them
    /// allocate without bound).
    pending: Vec<[u64; 2]>,
}

impl SourceCursor {
    /// The cursor of ascending `pending` positions.
    pub(crate) fn new(epoch: u64, frontier: u64, pending: &[u64]) -> Self {
        let mut runs: Vec<[u64; 2]> = Vec::new();
        for &p in pending {
            match runs.last_mut() {
                Some(run) if run[1] == p => run[1] = p + 1,
                _ => runs.push([p, p + 1]),
            }
        }
        Self {
            epoch,
            frontier,
            pending: runs,
        }
    }

    /// Checks its runs; returns how many positions they hold.
    fn check(&self) -> Result<u64, String> {
        let mut end = 0;
        let mut n = 0u64;
        for (i, &[a, b]) in self.pending.iter().enumerate() {
            if a >= b || (i > 0 && a < end) {
                return Err("pending runs must be ascending and not empty".into());
            }
            end = b;
            n += b - a;
        }
        if end > self.frontier || self.frontier >= SOURCE_SPAN {
            return Err(format!(
                "pending positions must be below the frontier ({}), itself below 2^54",
                self.frontier
            ));
        }
        Ok(n)
    }

    pub(crate) fn positions(&self) -> Vec<u64> {
        self.pending.iter().flat_map(|&[a, b]| a..b).collect()
    }
}

/// Ascending positions as the `[start, end)` ranges of their consecutive runs.
mod ranges {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(pending: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<[u64; 2]> = Vec::new();
        for &p in pending {
            match runs.last_mut() {
                Some(run) if run[1] == p => run[1] = p + 1,
                _ => runs.push([p, p + 1]),
            }
        }
        runs.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let runs = Vec::<[u64; 2]>::deserialize(d)?;
        let total: u64 = runs.iter().map(|[a, b]| b.saturating_sub(*a)).sum();
        if total > 1 << 24 {
            return Err(serde::de::Error::custom(
                "too many pending positions for a state",
            ));
        }
        Ok(runs.into_iter().flat_map(|[a, b]| a..b).collect())
    }
}

impl ResumeState {
    pub(crate) fn new(shape: String, epoch: u64, frontier: u64, pending: Vec<u64>) -> Self {
        Self {
            shape,
            epoch,
            frontier,
            pending,
            accounts: Vec::new(),
            fan_outs: Vec::new(),
            sources: Vec::new(),
            merge: None,
        }
    }

    /// The state of a pipeline with a merge: `epoch` is the merged epoch.
    pub(crate) fn merged(
        shape: String,
        epoch: u64,
        sources: Vec<SourceCursor>,
        merge: MergeState,
    ) -> Self {
        Self {
            sources,
            merge: Some(merge),
            ..Self::new(shape, epoch, 0, Vec::new())
        }
    }

    /// The state of source `index` (in the order the sources start), as a state of its
    /// own; an error if the state has no place for it.
    pub(crate) fn source_state(&self, index: usize) -> Result<ResumeState, BuildError> {
        let cursor = if self.sources.is_empty() {
            // A state of one source (or made by `start_of_epoch`): every other source starts
            // the state's epoch afresh.
            match index {
                0 => return Ok(self.clone()),
                _ => SourceCursor::new(self.epoch, 0, &[]),
            }
        } else {
            self.sources.get(index).cloned().ok_or_else(|| {
                BuildError::new(format!(
                    "cannot resume: the state has {} source(s) but this pipeline has more",
                    self.sources.len()
                ))
            })?
        };
        Ok(Self::new(
            self.shape.clone(),
            cursor.epoch,
            cursor.frontier,
            cursor.positions(),
        ))
    }

    /// How many sources' places it holds (0: one source, in its own fields).
    pub(crate) fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The merge's place, if it was taken through a merge.
    pub(crate) fn merge(&self) -> Option<&MergeState> {
        self.merge.as_ref()
    }

    /// The state with the partly resolved inputs of its one-to-many stages.
    pub(crate) fn with_fan_outs(mut self, fan_outs: Vec<FanOutState>) -> Self {
        self.fan_outs = fan_outs;
        self
    }

    /// The partly resolved inputs of its one-to-many stages.
    pub(crate) fn fan_outs(&self) -> &[FanOutState] {
        &self.fan_outs
    }

    /// The state with the ledger's accounts of its open epochs.
    pub(crate) fn with_accounts(mut self, accounts: Vec<EpochAccountState>) -> Self {
        self.accounts = accounts;
        self
    }

    /// The ledger's accounts it carries.
    pub(crate) fn accounts(&self) -> &[EpochAccountState] {
        &self.accounts
    }

    /// The state at the start of `epoch` of a pipeline whose shape is `shape`: resuming
    /// from it skips the epochs before `epoch` and nothing else.
    pub fn start_of_epoch(shape: impl Into<String>, epoch: u64) -> Self {
        Self::new(shape.into(), epoch, 0, Vec::new())
    }

    /// The pass of the source (epoch of a continuous source) the state is in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every position below it (counted from the start of [`epoch`](Self::epoch)) was taken
    /// by the source; those not [`pending`](Self::pending) were delivered, failed or dropped.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Positions below the frontier still to deliver, ascending: the items that were in
    /// flight when the state was taken. A resumed pipeline recomputes them.
    pub fn pending(&self) -> &[u64] {
        &self.pending
    }

    /// Whether the item at `pos` (counted from the start of [`epoch`](Self::epoch)) is
    /// still to be delivered.
    pub fn is_remaining(&self, pos: u64) -> bool {
        pos >= self.frontier || self.pending.binary_search(&pos).is_ok()
    }

    /// The stages of the pipeline it was taken from, e.g.
    /// `continuous source -> pipe -> aggregate(32, drop_last=false)`.
    pub fn shape(&self) -> &str {
        &self.shape
    }

    /// Checks the state against the pipeline about to resume from it.
    pub(crate) fn check(&self, shape: &str, continuous: bool) -> Result<(), BuildError> {
        if self.shape != shape {
            return Err(BuildError::new(format!(
                "cannot resume: the state was taken from a pipeline of another shape \
                 (`{}`); this pipeline is `{shape}`",
                self.shape
            )));
        }
        if self.epoch > 0 && !continuous {
            return Err(BuildError::new(format!(
                "cannot resume: the state is in epoch {} but the source is not continuous",
                self.epoch
            )));
        }
        let ascending = self.pending.windows(2).all(|w| w[0] < w[1]);
        if !ascending || self.pending.last().is_some_and(|&p| p >= self.frontier) {
            return Err(BuildError::new(
                "cannot resume: malformed state (pending positions must be ascending and \
                 below the frontier)",
            ));
        }
        EpochAccountState::check_all(&self.accounts, self.epoch, self.frontier, &self.pending)
            .and_then(|()| FanOutState::check_all(&self.fan_outs, &self.pending))
            .map_err(|why| BuildError::new(format!("cannot resume: malformed state ({why})")))?;
        let malformed =
            |why: String| BuildError::new(format!("cannot resume: malformed state ({why})"));
        if self.frontier >= SOURCE_SPAN {
            // Each source's positions stay below it (see `source_key`).
            return Err(malformed(format!(
                "a frontier of {} is out of range",
                self.frontier
            )));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(malformed(format!("{} sources", self.sources.len())));
        }
        let mut total = self.pending.len() as u64;
        for (i, source) in self.sources.iter().enumerate() {
            total += source
                .check()
                .map_err(|why| malformed(format!("source {i}: {why}")))?;
            if total > 1 << 24 {
                return Err(malformed("too many pending positions".into()));
            }
            if source.epoch > 0 && !continuous {
                return Err(malformed(format!(
                    "source {i} is in epoch {} but the sources are not continuous",
                    source.epoch
                )));
            }
        }
        if let Some(merge) = &self.merge {
            merge.check(self.epoch).map_err(malformed)?;
            if self.sources.is_empty() || self.frontier > 0 || !self.pending.is_empty() {
                return Err(malformed(
                    "a merge's state keeps its positions per source".into(),
                ));
            }
        }
        Ok(())
    }
}
