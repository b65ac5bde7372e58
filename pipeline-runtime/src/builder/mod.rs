//! The typed builder: `PipelineBuilder::new().source(..)` → stages → `.sink()` → `.build()`.
//!
//! Each stage method seals the stage before it and wraps the previous stages' launch
//! function, so the chain is statically typed (a stage takes what the previous one produces)
//! and nothing runs until the pipeline starts. The stage just added stays open: its options
//! are set by the methods that follow it (`.pipe(f).concurrency(4)`), only where they differ
//! from the defaults. Every builder of a chain whose items are `T` has the one type
//! `StageBuilder<T>`, so a chain assembled at run time (in a loop, or by functions that add
//! stages) needs no conversions; an option that does not apply to the last stage is reported
//! by `build()` (the `pipeline!` macro rejects it at compile time).
//!
//! This module holds the typed chain: [`PipelineBuilder`], [`StageBuilder`], [`open`] for
//! the open stage and the options every kind may take, and [`sink`] for the pipeline-wide
//! settings. Each stage kind adds its builder methods in its own module under `stage/`
//! (`stage::pipe`, `stage::aggregate`, ...), as an `impl` block of [`StageBuilder`].

pub(crate) mod open;
mod sink;

use std::fmt;

use crate::failure::BuildError;
use crate::launch::LaunchFn;
use open::{KindOptions, NoOptions, Open, Opened};

pub use sink::SinkBuilder;

/// Starts a pipeline definition; the first call names the source.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineBuilder {
    _private: (),
}

/// What the chain of stages knows beyond the launch function: definition errors (reported
/// by `build()`), the number of stages, and whether epochs travel through it.
#[derive(Debug)]
pub(crate) struct Chain {
    pub(crate) errors: Vec<BuildError>,
    pub(crate) stage_count: usize,
    /// The source is continuous, so epoch boundaries travel through the stages.
    pub(crate) continuous: bool,
    /// One word per stage, as a check that a resume state comes from a pipeline of the same
    /// shape (e.g. `continuous source`, `pipe`, `aggregate(32, drop_last=false)`).
    pub(crate) shape: Vec<String>,
    /// The source was given the size of its items (`item_bytes`).
    pub(crate) sized_source: bool,
    /// Stages given `concurrency_auto` bounds (which need autotune on).
    pub(crate) auto_bounds: Vec<String>,
}

impl Chain {
    /// The chain of a source: one stage, `shape` its words.
    pub(crate) fn new(continuous: bool, shape: Vec<String>) -> Self {
        Self {
            errors: Vec::new(),
            stage_count: 1,
            continuous,
            shape,
            sized_source: false,
            auto_bounds: Vec::new(),
        }
    }
}

/// A pipeline under construction whose items are `T` at this point. The stage added last
/// is open: the option methods that follow it (`concurrency`, `name`, ...) set its options.
///
/// A stage function is called from the pipeline's threads, on several items at once, for as
/// long as the pipeline runs: it is `Send + Sync + 'static`, and the items it produces are
/// `Send + 'static`. Each `pipe` method's bound (`PipeFn`, `TryPipeFn`, ...) is its function
/// shape, written once for the builder and the `pipeline!` macro alike; the method's
/// documentation spells it out.
pub struct StageBuilder<T> {
    pub(crate) chain: Chain,
    /// The open stage, with its options.
    pub(crate) open: Box<dyn Open<T>>,
}

impl<T> fmt::Debug for StageBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageBuilder")
            .field("stages", &self.chain.stage_count)
            .field("open_stage", &self.open.what())
            .field("errors", &self.chain.errors)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> StageBuilder<T> {
    /// A builder whose open stage is `open`.
    pub(crate) fn opened<O: KindOptions>(
        chain: Chain,
        what: &'static str,
        options: O,
        finish: impl FnOnce(O, &mut Chain) -> LaunchFn<T> + Send + 'static,
    ) -> Self {
        Self {
            chain,
            open: Box::new(Opened {
                what,
                options,
                finish,
            }),
        }
    }

    /// A builder whose last stage takes no options; `what` names it in errors.
    pub(crate) fn ready(chain: Chain, what: &'static str, launch: LaunchFn<T>) -> Self {
        Self::opened(chain, what, NoOptions, move |_, _| launch)
    }

    /// Fixes the last stage's options: its launch function, and the chain.
    pub(crate) fn seal(self) -> (LaunchFn<T>, Chain) {
        let mut chain = self.chain;
        let launch = self.open.finish(&mut chain);
        (launch, chain)
    }

    /// Seals this stage and opens the next one, `what`, with `options` as its options;
    /// `finish` makes its launch function from the previous one once its options are fixed.
    pub(crate) fn then<U: Send + 'static, O: KindOptions>(
        self,
        what: &'static str,
        options: O,
        finish: impl FnOnce(LaunchFn<T>, O, &mut Chain) -> LaunchFn<U> + Send + 'static,
    ) -> StageBuilder<U> {
        let (prev, mut chain) = self.seal();
        chain.stage_count += 1;
        StageBuilder::opened(chain, what, options, move |options, chain| {
            finish(prev, options, chain)
        })
    }

    /// Records a definition error, reported by `build()`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn push_error(&mut self, error: BuildError) {
        self.chain.errors.push(error);
    }
}

/// A readable default stage name from a function's type: `my_crate::decode` gives
/// `decode`; a closure has no name.
pub(crate) fn fn_name<F>() -> Option<String> {
    let full = std::any::type_name::<F>();
    if full.contains("{{closure}}") || full.contains('<') {
        return None;
    }
    full.rsplit("::").next().map(str::to_owned)
}
