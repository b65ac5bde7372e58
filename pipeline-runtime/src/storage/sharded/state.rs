//! A rank's saved state over shards, and resuming from it: on the same world size (the
//! rank's own state), or on another (every old rank's state; the samples the old ranks
//! still owed of the epoch are split across the new ranks).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format::{ShardFormat, WebDataset};
use super::plan::{ReadMap, Resplit, SampleRun, ShardPlan};
use super::sampler::ShardSampler;
use crate::distributed::StateError;
use crate::resume::ResumeState;

const VERSION: u32 = 1;

/// A pipeline's positions run at most a few epochs past its state's epoch (its items in
/// flight); a state claiming more is refused rather than walked.
const MAX_EPOCHS_AHEAD: u32 = 64;

/// What one rank saves to resume exactly over shards: its [`ShardSampler`]'s plan and its
/// pipeline's [`ResumeState`]. Serialisable (e.g. as JSON); its size is bounded by the
/// pipeline's items in flight and the shuffle buffer (in positions, never sample bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    version: u32,
    sampler: ShardPlan,
    pipeline: ResumeState,
}

/// Where a resumed rank starts: the sampler to read (its epochs from
/// [`epoch`](Self::epoch) on) and the state its pipeline resumes from.
#[derive(Debug, Clone)]
pub struct ShardResume<F: ShardFormat = WebDataset> {
    /// For the pipeline's source: `continuous_source(resume.sampler.epochs())`. It reads
    /// only the samples the state still owes.
    pub sampler: ShardSampler<F>,
    /// For [`SinkBuilder::resume_from`](crate::SinkBuilder::resume_from).
    pub pipeline: ResumeState,
}

impl<F: ShardFormat> ShardResume<F> {
    /// The epoch the resumed pipeline is in first.
    pub fn epoch(&self) -> u64 {
        self.sampler.first_epoch() + self.pipeline.epoch()
    }
}

impl ShardState {
    /// The state of a rank reading `sampler` (through `sampler.epochs()`) whose pipeline is
    /// at `pipeline`.
    pub fn new<F: ShardFormat>(sampler: &ShardSampler<F>, pipeline: ResumeState) -> Self {
        Self {
            version: VERSION,
            sampler: sampler.plan().clone(),
            pipeline,
        }
    }

    /// The sampler's plan.
    pub fn plan(&self) -> &ShardPlan {
        &self.sampler
    }

    /// The pipeline's state.
    pub fn pipeline(&self) -> &ResumeState {
        &self.pipeline
    }

    /// The epoch the state is in.
    pub fn epoch(&self) -> u64 {
        self.sampler.resplit_epoch().unwrap_or(0) + self.pipeline.epoch()
    }

    /// Resumes this rank from its own state; `fresh` is the sampler this run would read
    /// without a state (its dataset, seed, shuffles, split, world and rank must be the
    /// state's).
    pub fn resume<F: ShardFormat>(
        &self,
        fresh: &ShardSampler<F>,
    ) -> Result<ShardResume<F>, StateError> {
        self.check(fresh)?;
        let plan = fresh.plan();
        if self.sampler.world_size != plan.world_size {
            return Err(StateError::new(format!(
                "the state is for a world of {} ranks, this run has {}; give every rank's \
                 state to resume on another world size",
                self.sampler.world_size, plan.world_size
            )));
        }
        if self.sampler.rank != plan.rank {
            return Err(StateError::new(format!(
                "the state is rank {}'s, this is rank {}",
                self.sampler.rank, plan.rank
            )));
        }
        let sampler = ShardSampler {
            plan: self.sampler.clone(),
            ..fresh.clone()
        }
        .resuming(&self.pipeline);
        Ok(ShardResume {
            sampler,
            pipeline: self.pipeline.clone(),
        })
    }

    /// Resumes rank `fresh.plan().rank()` from the states of every rank of the old run. On
    /// the same world size that is the rank's own state; on another, the samples each old
    /// rank still owed of its epoch (in flight, in its shuffle buffer, not yet read) are
    /// listed in old-rank order and split across the new ranks by the fresh sampler's
    /// split, as an epoch's sequence is; later epochs are split the new way.
    pub fn resume_all<F: ShardFormat>(
        states: &[ShardState],
        fresh: &ShardSampler<F>,
    ) -> Result<ShardResume<F>, StateError> {
        let plan = fresh.plan();
        let Some(first) = states.first() else {
            return Err(StateError::new("no state given"));
        };
        let old_world = first.sampler.world_size;
        let mut by_rank: BTreeMap<u32, &ShardState> = BTreeMap::new();
        for state in states {
            state.check(fresh)?;
            if state.sampler.with_rank(0) != first.sampler.with_rank(0) {
                return Err(StateError::new(
                    "the states come from different runs (their samplers differ)",
                ));
            }
            if state.pipeline.shape() != first.pipeline.shape() {
                return Err(StateError::new(
                    "the states come from pipelines of different shapes",
                ));
            }
            if by_rank.insert(state.sampler.rank, state).is_some() {
                return Err(StateError::new(format!(
                    "two states of rank {}",
                    state.sampler.rank
                )));
            }
        }
        if let Some(missing) = (0..old_world).find(|r| !by_rank.contains_key(r)) {
            return Err(StateError::new(format!(
                "the state of rank {missing} of the old world of {old_world} is missing"
            )));
        }
        if old_world == plan.world_size {
            return by_rank[&plan.rank].resume(fresh);
        }
        let index = &fresh.index;
        let mut epoch = None;
        let mut left: Vec<SampleRun> = Vec::new();
        for (&rank, state) in &by_rank {
            // Where the old rank stands; one that has taken all of its epoch and owes
            // nothing of it stands at the start of the next.
            let old = &state.sampler;
            let mut e = state.epoch();
            let mut frontier = state.pipeline.frontier();
            let mut pending = state.pipeline.pending().to_vec();
            for passed in 0.. {
                let len = old.epoch_len(index, e);
                if len == 0 || frontier < len || pending.first().is_some_and(|&p| p < len) {
                    break;
                }
                if passed == MAX_EPOCHS_AHEAD {
                    return Err(StateError::new(format!(
                        "rank {rank}'s state runs more than {MAX_EPOCHS_AHEAD} epochs past                          its own (malformed)"
                    )));
                }
                frontier -= len;
                pending.iter_mut().for_each(|p| *p -= len);
                e += 1;
            }
            match epoch {
                None => epoch = Some(e),
                Some(other) if other != e => {
                    return Err(StateError::new(format!(
                        "the old ranks are in different epochs ({other} and rank {rank}'s {e})"
                    )))
                }
                Some(_) => {}
            }
            let owed = old.left(index, e, frontier, &pending);
            left.extend(owed.sample_runs(&ReadMap::new(old.runs(index, e))));
        }
        let epoch = epoch.expect("at least one state");
        let mut sampler = fresh.clone();
        sampler.plan.resplit = Some(Box::new(Resplit { epoch, left }));
        Ok(ShardResume {
            sampler,
            pipeline: ResumeState::start_of_epoch(first.pipeline.shape(), 0),
        })
    }

    fn check<F: ShardFormat>(&self, fresh: &ShardSampler<F>) -> Result<(), StateError> {
        if self.version != VERSION {
            return Err(StateError::new(format!(
                "the state has version {}, this build reads version {VERSION}",
                self.version
            )));
        }
        self.sampler.check(&fresh.index).map_err(StateError::new)?;
        let (s, f) = (&self.sampler, fresh.plan());
        if (s.seed, s.shuffle, s.buffer, s.split) != (f.seed, f.shuffle, f.buffer, f.split) {
            return Err(StateError::new(format!(
                "the state is for seed {}, shuffle {}, shuffle buffer {}, split {:?}; this run \
                 has seed {}, shuffle {}, shuffle buffer {}, split {:?}",
                s.seed, s.shuffle, s.buffer, s.split, f.seed, f.shuffle, f.buffer, f.split
            )));
        }
        Ok(())
    }
}
