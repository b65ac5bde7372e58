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
use crate::stats::StageKind;
pub use lane::{MergeChooser, MergePolicy, OnEnd};
use lane::{MergeLane, Policy};

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
    /// Resume tracking ([`SinkBuilder::track_resume`](crate::SinkBuilder::track_resume)) does
    /// not cover merges yet: a pipeline with one fails to start with an error saying so.
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
                launch_merge(launches, opts)
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

fn launch_merge<T: Send + 'static>(inputs: Vec<LaunchFn<T>>, opts: MergeOptions) -> LaunchFn<T> {
    Box::new(move |l: &mut Launch, out_cap| {
        if l.ledger.is_some() {
            return Err(BuildError::new(
                "merge: resume tracking and the memory budget (which counts items through the \
                 same ledger) do not cover merges yet (each input numbers its own items); \
                 turn `track_resume`/`resume_from` and `memory_limit` off for this pipeline",
            ));
        }
        let name = opts.name.unwrap_or_else(|| "merge".to_owned());
        let capacity = l.queue_capacity;
        let mut rxs = Vec::with_capacity(inputs.len());
        let outer = l.prefix.clone();
        for (i, input) in inputs.into_iter().enumerate() {
            l.prefix = format!("{outer}{name}[{i}]/");
            let started = input(l, capacity);
            l.prefix.clone_from(&outer);
            let mut rx = started?;
            l.read_by_structure();
            rx.set_consumer();
            rxs.push(rx);
        }
        let (lane, out_rx) = l.one_lane_stage(name, StageKind::Merge, out_cap);
        let lane = MergeLane {
            _guard: lane.guard,
            ctx: lane.ctx,
            inputs: rxs,
            output: lane.output,
            policy: opts.policy,
            on_end: opts.on_end,
        };
        l.spawn_lane(lane.run());
        Ok(out_rx)
    })
}
