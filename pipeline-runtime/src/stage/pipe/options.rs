//! The options of a `pipe` stage (`concurrency`, `concurrency_auto`, `order`,
//! `max_failures`, `executor`, and the shared `name` and `buffer`), their setters, and the
//! checks `build()` runs on them.

use super::{PipeSpec, Runs};
use crate::builder::open::KindOptions;
use crate::builder::{Chain, StageBuilder};
use crate::executor::Executor;
use crate::failure::BuildError;
use crate::failure::MaxFailures;
use crate::stage::pipe::lane::Order;

/// What an option given to a `pipe` stage that it does not take calls it.
pub(crate) const WHAT: &str = "a `pipe` stage";

/// Options of a `pipe` stage. Unset, a stage has one lane, keeps completion order, counts
/// against the pipeline's failure budget and runs on the default pool.
#[derive(Clone, Default, Debug)]
pub(crate) struct PipeOptions {
    pub(crate) concurrency: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) order: Order,
    pub(crate) max_failures: Option<MaxFailures>,
    pub(crate) executor: Option<Executor>,
    pub(crate) buffer: Option<usize>,
    /// Bounds for autotune (`concurrency_auto(lo..=hi)`).
    pub(crate) auto: Option<(usize, usize)>,
}

impl KindOptions for PipeOptions {
    fn name(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.name)
    }

    fn buffer(&mut self) -> Option<&mut Option<usize>> {
        Some(&mut self.buffer)
    }
}

impl<T> StageBuilder<T> {
    /// Items in flight at once in the `pipe` stage just added (at least 1; default 1). For a
    /// synchronous stage the executor's thread count also caps how many calls truly run in
    /// parallel.
    pub fn concurrency(self, n: usize) -> Self {
        self.pipe_option("concurrency", |o| o.concurrency = Some(n))
    }

    /// Lets autotune ([`SinkBuilder::autotune`](crate::SinkBuilder::autotune)) choose the
    /// concurrency of the `pipe` stage just added within `bounds` (e.g. `1..=64`); it starts
    /// at [`concurrency`](Self::concurrency) if given, else at the lower bound. Under
    /// autotune a stage with neither is tuned within `1..=64`; one with only `concurrency`
    /// keeps it.
    pub fn concurrency_auto(self, bounds: std::ops::RangeInclusive<usize>) -> Self {
        let bounds = (*bounds.start(), *bounds.end());
        self.pipe_option("concurrency_auto", |o| o.auto = Some(bounds))
    }

    /// Output order of the `pipe` stage just added (default [`Order::Completion`]);
    /// [`Order::Input`] keeps the order of the stage's input.
    pub fn order(self, order: Order) -> Self {
        self.pipe_option("order", |o| o.order = order)
    }

    /// A failure budget for the `pipe` stage just added alone, instead of the pipeline-wide
    /// one.
    pub fn max_failures(self, budget: MaxFailures) -> Self {
        self.pipe_option("max_failures", |o| o.max_failures = Some(budget))
    }

    /// Where the (synchronous) `pipe` stage just added runs (default: the pipeline's pool).
    /// Async stages reject this; process stages need a [`ProcessPool`](crate::process::ProcessPool).
    pub fn executor(self, executor: impl Into<Executor>) -> Self {
        let executor = executor.into();
        self.pipe_option("executor", |o| o.executor = Some(executor))
    }

    fn pipe_option(self, option: &str, set: impl FnOnce(&mut PipeOptions)) -> Self {
        self.kind_option(option, set)
    }
}

/// Records every mistake in a `pipe` stage's options.
pub(super) fn check_pipe<T, U>(
    spec: &PipeSpec<T, U>,
    opts: &PipeOptions,
    name: &str,
    chain: &mut Chain,
) {
    let mut error = |message: String| chain.errors.push(BuildError::new(message));
    let concurrency = opts.concurrency.unwrap_or(1);
    if concurrency == 0 {
        error(format!("stage `{name}`: concurrency must be at least 1"));
    }
    if let Some((lo, hi)) = opts.auto {
        if lo == 0 || lo > hi {
            error(format!(
                "stage `{name}`: concurrency_auto({lo}..={hi}) needs bounds with \
                 1 <= low <= high, e.g. `concurrency_auto(1..=64)`"
            ));
        } else if opts.concurrency.is_some_and(|c| c < lo || c > hi) {
            error(format!(
                "stage `{name}`: concurrency {concurrency} is outside its \
                 concurrency_auto({lo}..={hi}) bounds"
            ));
        }
        if spec.many && opts.order == Order::Input && hi > 1 {
            error(format!(
                "stage `{name}` yields many items per input in input order, so it keeps one \
                 lane: concurrency_auto does not apply to it"
            ));
        }
    }
    if opts.buffer == Some(0) {
        error(format!("stage `{name}`: buffer must be at least 1"));
    }
    if let Some(budget) = &opts.max_failures {
        if let Err(e) = budget.validate(&format!("stage `{name}`")) {
            chain.errors.push(e);
        }
    }
    let mut error = |message: String| chain.errors.push(BuildError::new(message));
    #[cfg(unix)]
    let on_processes = matches!(opts.executor, Some(Executor::Processes(_)));
    #[cfg(not(unix))]
    let on_processes = false;
    match spec.runs {
        Runs::Processes if !on_processes => error(format!(
            "stage `{name}` runs in worker processes: give it a `ProcessPool` as its \
             executor (`.executor(&pool)`, or `executor = pool` in the macro)"
        )),
        Runs::Threads if on_processes => error(format!(
            "stage `{name}` is given a `ProcessPool`, which runs process stages only: use \
             `process_pipe` with a function registered by `process_fn!` (`pipe(process f, \
             ..)` in the macro)"
        )),
        Runs::Async if opts.executor.is_some() => error(format!(
            "stage `{name}` is async: it runs on the pipeline's async runtime, and \
             `executor` applies to synchronous stages only"
        )),
        _ => {}
    }
    if spec.many && opts.order == Order::Input && concurrency > 1 {
        error(format!(
            "stage `{name}` yields many items per input: `Order::Input` is not supported \
             for it with concurrency > 1 (use `Order::Completion` or concurrency 1)"
        ));
    }
}
