//! `merge`: several sub-pipelines (each a source and its own stages) feeding one stream, with
//! the merge's options (`policy`, `on_end`, `name`); [`lane`] reads the inputs by the
//! policy.
//!
//! The inputs' stages are started in the pipeline that holds the merge: the same pools,
//! statistics (their names prefixed with `merge[i]/`), failure budget and stop.

pub(crate) mod lane;

use crate::builder::open::KindOptions;
use crate::builder::{Chain, PipelineBuilder, StageBuilder};
use crate::failure::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::resume::merge::MergeBook;
use crate::stats::StageKind;
pub use lane::{MergeChooser, MergePolicy, OnEnd};
use lane::{MergeLane, MergeResume, Policy};

/// The options of a merge.
#[derive(Debug, Default)]
pub(crate) struct MergeOptions {
    pub(crate) policy: MergePolicy,
    pub(crate) on_end: OnEnd,
    pub(crate) name: Option<String>,
}

impl KindOptions for MergeOptions {
    fn name(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.name)
    }
}

impl PipelineBuilder {
    /// A stream merged from several `inputs`, each a pipeline without its sink (a source, or
    /// a source and stages), read by the merge's [`policy`](StageBuilder::policy) (default:
    /// as available) until [`on_end`](StageBuilder::on_end) says it ends (default: when
    /// every input has ended). Every input produces the merged item type.
    ///
    /// ```
    /// use pipeline_runtime::structure::MergePolicy;
    /// use pipeline_runtime::PipelineBuilder;
    ///
    /// let a = PipelineBuilder::new().source(0..3u32).pipe(|x| x * 10);
    /// let b = PipelineBuilder::new().source(100..102u32);
    /// let merged: Vec<u32> = PipelineBuilder::new()
    ///     .merge([a, b])
    ///     .policy(MergePolicy::round_robin())
    ///     .sink()
    ///     .build()?
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(merged, [0, 100, 10, 101, 20]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Resume tracking ([`SinkBuilder::track_resume`](crate::SinkBuilder::track_resume))
    /// follows items through a merge: each input's source resumes on its own, and the merge
    /// takes the items it had merged again in the same order, then goes on with the same
    /// draws (weighted) or turns (round-robin). Not covered: a merge inside a merge's input,
    /// and a [custom](MergePolicy::custom) policy, whose chooser's state a resume state
    /// cannot carry. The memory budget ([`memory_limit`](crate::SinkBuilder::memory_limit))
    /// goes through a merge as available over one-pass inputs without resume tracking; any
    /// other merge could deadlock under it (it could wait on an input that cannot admit an
    /// item while the budget is held by the others'). What is not covered fails to start with
    /// an error saying so.
    pub fn merge<T: Send + 'static>(
        self,
        inputs: impl IntoIterator<Item = StageBuilder<T>>,
    ) -> StageBuilder<T> {
        let mut errors = Vec::new();
        let mut launches = Vec::new();
        let mut stage_count = 1;
        let mut shapes = Vec::new();
        let mut continuous = Vec::new();
        let mut sized = Vec::new();
        let mut auto_bounds = Vec::new();
        for input in inputs {
            let (launch, chain) = input.seal();
            errors.extend(chain.errors);
            stage_count += chain.stage_count;
            shapes.push(chain.shape.join(" -> "));
            continuous.push(chain.continuous);
            sized.push(chain.sized_source);
            auto_bounds.extend(chain.auto_bounds);
            launches.push(launch);
        }
        if launches.is_empty() {
            errors.push(BuildError::new(
                "merge: give it at least one input (a source, or a source and stages)",
            ));
        }
        let all_continuous = !continuous.is_empty() && continuous.iter().all(|c| *c);
        if continuous.iter().any(|c| *c) && !all_continuous {
            errors.push(BuildError::new(
                "merge: its inputs mix continuous and one-pass sources; make them all \
                 `continuous_source` (epochs) or all one-pass",
            ));
        }
        let chain = Chain {
            errors,
            stage_count,
            continuous: all_continuous,
            shape: vec![format!("merge({})", shapes.join(" | "))],
            // Every input's source sizes its items, so the limit sees every item admitted.
            sized_source: !sized.is_empty() && sized.iter().all(|s| *s),
            auto_bounds,
        };
        StageBuilder::opened(
            chain,
            "a `merge`",
            MergeOptions::default(),
            move |opts, chain| {
                check(&opts, launches.len(), chain);
                launch_merge(launches, opts, chain.continuous)
            },
        )
    }
}

impl<T> StageBuilder<T> {
    /// How the merge just added interleaves its inputs (default
    /// [`MergePolicy::as_available`]).
    pub fn policy(self, policy: MergePolicy) -> Self {
        self.kind_option("policy", |o: &mut MergeOptions| o.policy = policy)
    }

    /// What the merge just added does when one of its inputs ends (default
    /// [`OnEnd::Continue`]).
    pub fn on_end(self, on_end: OnEnd) -> Self {
        self.kind_option("on_end", |o: &mut MergeOptions| o.on_end = on_end)
    }
}

/// Records every mistake in a merge's options.
fn check(opts: &MergeOptions, inputs: usize, chain: &mut Chain) {
    if let Policy::Weighted { weights, .. } = &opts.policy.0 {
        if weights.len() != inputs {
            chain.errors.push(BuildError::new(format!(
                "merge: {} weights for {inputs} inputs; give one weight per input",
                weights.len()
            )));
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            chain.errors.push(BuildError::new(format!(
                "merge: weight {w} is not a positive number; every weight must be > 0 (leave \
                 an input out rather than giving it weight 0)"
            )));
        }
    }
    if opts.on_end == OnEnd::Restart && !chain.continuous && inputs > 0 {
        chain.errors.push(BuildError::new(
            "merge: `on_end = restart` starts an ended input again, so every input must be a \
             `continuous_source` (which makes a new pass when one ends)",
        ));
    }
}

fn launch_merge<T: Send + 'static>(
    inputs: Vec<LaunchFn<T>>,
    opts: MergeOptions,
    continuous: bool,
) -> LaunchFn<T> {
    Box::new(move |l: &mut Launch, out_cap| {
        let tracked = l.track_resume && l.ledger.is_some();
        if tracked && matches!(opts.policy.0, Policy::Custom(_)) {
            return Err(BuildError::new(
                "merge: resume tracking does not cover a custom policy (a resume state cannot \
                 carry its chooser's state); use as_available, round_robin or weighted, or \
                 turn `track_resume`/`resume_from` off",
            ));
        }
        if l.memory.is_some() {
            budget_deadlock(&opts, continuous, tracked)?;
        }
        let merges = l.merges;
        l.merges += 1;
        let name = opts.name.unwrap_or_else(|| "merge".to_owned());
        let capacity = l.queue_capacity;
        let mut rxs = Vec::with_capacity(inputs.len());
        let mut sources = Vec::with_capacity(inputs.len());
        let outer = l.prefix.clone();
        for (i, input) in inputs.into_iter().enumerate() {
            l.prefix = format!("{outer}{name}[{i}]/");
            let first = l.sources;
            let started = input(l, capacity);
            l.prefix.clone_from(&outer);
            let mut rx = started?;
            sources.push((first, l.sources - first));
            l.read_by_structure();
            rx.set_consumer();
            rxs.push(rx);
        }
        let resume = match tracked {
            true if l.merges > merges + 1 => {
                return Err(BuildError::new(format!(
                    "{name}: resume tracking does not cover a merge inside a merge's input; \
                     merge all the sources in one merge, or turn `track_resume`/`resume_from` \
                     off"
                )))
            }
            true => Some(resume_plan(l, &name, &sources)?),
            false => None,
        };
        let (lane, out_rx) = l.one_lane_stage(name, StageKind::Merge, out_cap);
        let lane = MergeLane {
            _guard: lane.guard,
            ctx: lane.ctx,
            inputs: rxs,
            output: lane.output,
            policy: opts.policy,
            on_end: opts.on_end,
            resume,
        };
        l.spawn_lane(lane.run());
        Ok(out_rx)
    })
}

/// The memory budget through a merge that reads its inputs in an order of its own, or in
/// epochs, could hang: the budget can be full of items queued in inputs it does not read
/// next while the input it waits for cannot admit one. As available over one-pass inputs
/// (and without resume tracking), it reads whichever input has an item, so the budget always
/// drains.
fn budget_deadlock(opts: &MergeOptions, continuous: bool, tracked: bool) -> Result<(), BuildError> {
    let why = match &opts.policy.0 {
        _ if tracked => {
            "with resume tracking, a resumed merge takes its items in flight again in their \
             order first, waiting on one input while the budget may be held by the others' \
             (not covered yet: use resume tracking or the budget)"
        }
        Policy::AsAvailable if !continuous => return Ok(()),
        Policy::AsAvailable => {
            "with continuous inputs it waits at each merged epoch's end (or, resuming, for \
             the items of the epoch it was in) for some inputs, while the next epoch's items \
             of the others may hold the budget"
        }
        _ => {
            "its policy picks the input it waits for, while the budget may be held by items \
             queued in the others"
        }
    };
    Err(BuildError::new(format!(
        "merge: the memory budget (`memory_limit`) could deadlock through this merge: {why}; \
         use `MergePolicy::as_available` over one-pass inputs without resume tracking, or no \
         memory_limit"
    )))
}

/// Where a tracked merge starts, from the state it resumes from (if any), given its inputs'
/// sources (`(first source index, count)` each); records it in the ledger.
fn resume_plan(
    l: &Launch,
    name: &str,
    sources: &[(usize, usize)],
) -> Result<MergeResume, BuildError> {
    let malformed = |why: String| BuildError::new(format!("cannot resume: {name}: {why}"));
    // The pass each input's source starts at.
    let mut passes = Vec::with_capacity(sources.len());
    for (i, &(first, count)) in sources.iter().enumerate() {
        if count != 1 {
            return Err(malformed(format!("input {i} has {count} sources, not one")));
        }
        passes.push(match &l.resume_from {
            Some(state) => state.source_state(first)?.epoch(),
            None => 0,
        });
    }
    let state = l.resume_from.as_ref();
    let epoch = state.map_or(0, |s| s.epoch());
    let mut plan = MergeResume::fresh(epoch, &passes);
    if let Some(merge) = state.and_then(|s| s.merge()) {
        if merge.cursor.inputs.len() != sources.len() {
            return Err(malformed(format!(
                "the state's merge has {} inputs, this one {}",
                merge.cursor.inputs.len(),
                sources.len()
            )));
        }
        plan.cursor = merge.cursor.clone();
        plan.replay = merge.pending.iter().copied().collect();
    }
    for (i, (input, &start)) in plan.cursor.inputs.iter().zip(&passes).enumerate() {
        // The merge may have read an input's epoch end that its source, resuming at the pass
        // of its lowest position in flight, sends again; or not yet read one the source is
        // past. The gap is bounded by the passes items in flight span; a made-up one is
        // bounded so that owed ends cannot make epochs without end.
        let gap = input.pass.abs_diff(start);
        if gap > MAX_PASS_GAP {
            return Err(malformed(format!(
                "its input {i} was in pass {} but its source resumes in pass {start}",
                input.pass
            )));
        }
        if input.pass > start {
            plan.absorb[i] = gap;
        } else {
            plan.owed[i] = gap;
        }
    }
    if let Some(ledger) = &l.ledger {
        let pending: Vec<_> = plan.replay.iter().copied().collect();
        ledger.merge_started(MergeBook::new(plan.cursor.clone(), epoch, &pending));
    }
    Ok(plan)
}

/// The most passes a merge's input may be ahead of or behind its source in a state (far
/// more than the items a pipeline holds in flight can span, unless passes are empty).
const MAX_PASS_GAP: u64 = 1 << 16;
