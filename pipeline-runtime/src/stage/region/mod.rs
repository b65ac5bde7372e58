//! `process_region`: `.process_region(f).executor(&pool)` runs the stages that `f` adds as
//! one nested pipeline in each worker of a [`ProcessPool`](crate::process::ProcessPool). This file
//! holds the builder method and its checks; [`lane`] the parent's side while it runs; the
//! worker's side is with the other worker-process code (`process::region`).
//!
//! `f` is called once here too, on a builder of an empty source, to check the region's
//! definition (its mistakes are `build()` errors of this pipeline) and to learn its stages,
//! which appear in this pipeline's statistics with the workers' figures merged.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) mod lane;

use crate::builder::{fn_name, PipelineBuilder, StageBuilder};
use crate::executor::Executor;
use crate::failure::BuildError;
use crate::launch::LaunchFn;
use crate::stage::pipe::options::PipeOptions;
use crate::stage::pipe::Order;
pub(crate) use lane::InnerStage;
use lane::{launch_region, RegionFanOut, RegionPlan};

impl<T: Send + 'static> StageBuilder<T> {
    /// A process region: the stages that `region` adds to a builder of this chain's items
    /// run, as a whole, inside each worker of the [`ProcessPool`](crate::process::ProcessPool) given
    /// with `.executor(&pool)`, as a nested pipeline. Only the region's input (`T`) and its
    /// output (`U`) cross the process boundary, with serde; the values between its stages
    /// stay in the worker.
    ///
    /// `region` is a named `fn` registered with [`process_region!`](crate::process_region),
    /// so that the worker finds it by name. Each worker forms its own batches (an
    /// `aggregate` inside sees the inputs that reached that worker); outputs come back in
    /// completion order. A worker that dies fails the inputs it held and is replaced.
    /// Options of the region: `executor` (required), `buffer`, `name`.
    pub fn process_region<U, F>(self, region: F) -> StageBuilder<U>
    where
        T: Serialize,
        U: DeserializeOwned + Send + 'static,
        F: Fn(StageBuilder<T>) -> StageBuilder<U> + Send + Sync + 'static,
    {
        let default_name = fn_name::<F>().unwrap_or_else(|| "process region".to_owned());
        let key = std::any::type_name::<F>();
        let mut errors = Vec::new();
        if let Err(e) = check_region::<F>(&default_name) {
            errors.push(e);
        }
        let stages = match dry_run(&region, &default_name) {
            Ok(stages) => Some(stages),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        // A region takes a pipe stage's options; those that do not apply to it are errors
        // that say why.
        let what = "a process region";
        self.then(
            what,
            PipeOptions::default(),
            move |prev: LaunchFn<T>, opts, chain| {
                let name = opts.name.clone().unwrap_or(default_name);
                chain.errors.extend(errors);
                let mut error = |message: String| chain.errors.push(BuildError::new(message));
                let inside = "each worker runs the region's stages with their own options: set it \
                          on a stage inside the region's fn";
                if opts.concurrency.is_some() {
                    error(format!(
                        "`concurrency` is not an option of process region `{name}`: the region \
                     runs once in each worker of its pool ({inside})"
                    ));
                }
                if opts.order != Order::Completion {
                    error(format!(
                        "`order` is not an option of process region `{name}`: its outputs come \
                     back from several workers in completion order"
                    ));
                }
                if opts.max_failures.is_some() {
                    error(format!(
                        "`max_failures` is not an option of process region `{name}` ({inside})"
                    ));
                }
                if opts.buffer == Some(0) {
                    error(format!(
                        "process region `{name}`: buffer must be at least 1"
                    ));
                }
                let pool = match opts.executor {
                    Some(Executor::Processes(pool)) => Some(pool),
                    _ => {
                        error(format!(
                            "process region `{name}` runs in worker processes: give it a \
                         `ProcessPool` as its executor (`.executor(&pool)`, or \
                         `executor = pool` in the macro)"
                        ));
                        None
                    }
                };
                chain.shape.push("process region".to_owned());
                match (pool, stages) {
                    (Some(pool), Some((stages, fan_out))) => launch_region(
                        prev,
                        RegionPlan {
                            key,
                            name,
                            pool,
                            stages,
                            buffer: opts.buffer,
                            continuous: chain.continuous,
                            fan_out,
                        },
                    ),
                    // `build()` reports the definition errors; this never runs.
                    _ => Box::new(|_, _| Err(BuildError::new("the process region is not defined"))),
                }
            },
        )
    }
}

/// Checks that `F` can be found by name in a worker: a named `fn` registered as a region.
fn check_region<F>(region: &str) -> Result<(), BuildError> {
    let key = std::any::type_name::<F>();
    if key.starts_with("fn(") {
        Err(BuildError::new(format!(
            "process region `{region}`: a function pointer (`{key}`) cannot be found by name \
             in a worker process; pass the function itself (`process_region(decode_region)`)"
        )))
    } else if key.contains("{{closure}}") {
        Err(BuildError::new(format!(
            "process region `{region}`: a closure cannot run in a worker process; write the \
             region as a named `fn` and register it with `process_region!`"
        )))
    } else {
        crate::process::registry::check(key, crate::process::registry::Kind::Region)
            .map_err(|e| BuildError::new(format!("process region `{region}`: {e}")))
    }
}

/// Builds the region on an empty source and runs it, to check it and learn its stages and
/// whether one gives several outputs per input.
fn dry_run<T, U, F>(region: &F, name: &str) -> Result<(Vec<InnerStage>, RegionFanOut), BuildError>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(StageBuilder<T>) -> StageBuilder<U>,
{
    let in_region = |e: BuildError| BuildError::new(format!("in process region `{name}`: {e}"));
    let chain = region(PipelineBuilder::new().source(std::iter::empty::<T>()));
    let mut pipeline = chain.sink().num_threads(1).build().map_err(in_region)?;
    pipeline.start().map_err(in_region)?;
    let stats = pipeline.stats();
    let fan_out = region_fan_out(pipeline.shape());
    drop(pipeline);
    let stages: Vec<InnerStage> = stats
        .stages
        .iter()
        .skip(1) // the stand-in source
        .map(|s| InnerStage {
            name: s.name.clone(),
            kind: s.kind,
            concurrency: s.concurrency,
        })
        .collect();
    if stages.is_empty() {
        return Err(BuildError::new(format!(
            "process region `{name}` adds no stages: a region needs at least one"
        )));
    }
    Ok((stages, fan_out))
}

/// What the one-to-many stages in a region's shape (`source -> pipe -> flat pipe -> ...`)
/// allow: resume tracking follows one `flat pipe` whose inputs are the region's own, each
/// of its outputs naming its input and index.
fn region_fan_out(shape: &str) -> RegionFanOut {
    let many = |w: &str| w.contains("flat pipe") || w.contains("disaggregate");
    let words: Vec<&str> = shape.split(" -> ").skip(1).collect();
    let Some(first) = words.iter().position(|w| many(w)) else {
        return RegionFanOut::None;
    };
    if words.iter().filter(|w| many(w)).count() > 1 {
        RegionFanOut::Untracked("several one-to-many stages")
    } else if words[first] != "flat pipe" {
        RegionFanOut::Untracked("a `disaggregate` or a one-to-many stage inside a route")
    } else if words[..first].iter().any(|w| w.starts_with("aggregate")) {
        RegionFanOut::Untracked("a one-to-many stage after a batch is made")
    } else {
        RegionFanOut::Tracked
    }
}
