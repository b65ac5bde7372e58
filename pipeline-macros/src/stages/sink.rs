//! `sink(..)`: the last stage, the queue the consumer reads; its options are those of the
//! whole pipeline (threads, failure budget, stats), so it is also where the pipeline is built.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::kind::{Checks, OptionSpec, Place, Positional, StageKind, ValueType};
use super::option::Options;
use crate::expand::stage_var;
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

/// The builder method that ends the stages, as `.method(buffer)`, and the one that builds the
/// pipeline after the option setters.
const METHOD: &str = "sink";
const BUILD: &str = "build";

/// The options, in the order their setters are called after `sink()`.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
    OptionSpec::new(
        "num_threads",
        ValueType::AtLeastOne,
        "4",
        Some("num_threads"),
    ),
    OptionSpec::new(
        "max_failures",
        ValueType::Budget,
        "10",
        Some("max_failures"),
    ),
    OptionSpec::new(
        "queue_capacity",
        ValueType::AtLeastOne,
        "4",
        Some("queue_capacity"),
    ),
    OptionSpec::new(
        "stop_timeout",
        ValueType::Expr,
        "Duration::from_secs(1)",
        Some("stop_timeout"),
    ),
    OptionSpec::new("stats", ValueType::Expr, "false", Some("stats")),
    OptionSpec::new(
        "report_interval",
        ValueType::Expr,
        "Duration::from_secs(1)",
        Some("report_interval"),
    ),
    OptionSpec::new(
        "track_resume",
        ValueType::Expr,
        "true",
        Some("track_resume"),
    ),
    OptionSpec::new("resume_from", ValueType::Expr, "state", Some("resume_from")),
    OptionSpec::new("autotune", ValueType::Expr, "true", Some("autotune")),
    OptionSpec::new("cpu_budget", ValueType::AtLeastOne, "4", Some("cpu_budget")),
    OptionSpec::new(
        "tune_interval",
        ValueType::Expr,
        "Duration::from_millis(50)",
        Some("tune_interval"),
    ),
    OptionSpec::new(
        "memory_limit",
        ValueType::AtLeastOne,
        "32 << 20",
        Some("memory_limit"),
    ),
    OptionSpec::new(
        "stall_timeout",
        ValueType::Expr,
        "Duration::from_secs(10)",
        Some("stall_timeout"),
    ),
    OptionSpec::new(
        "stall_fatal",
        ValueType::Expr,
        "Duration::from_secs(60)",
        Some("stall_fatal"),
    ),
];

pub(crate) struct Sink;

impl StageKind for Sink {
    fn name(&self) -> &'static str {
        "sink"
    }

    fn place(&self) -> Place {
        Place::Last
    }

    fn positional(&self) -> Positional {
        Positional::None {
            hint: "options only, e.g. `sink(buffer = 4)`",
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        _number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        checks.modifiers(stage, implied, self.modifiers());
        checks.positional(stage, &self.positional());
        Some(Step {
            label: label(),
            stage: Box::new(SinkStep {
                options: Options::checked(stage, OPTIONS, checks),
                span: stage.kind.span(),
            }),
        })
    }
}

fn label() -> String {
    "`sink`".to_owned()
}

/// A checked sink.
struct SinkStep {
    options: Options,
    /// Span of the stage name.
    span: Span,
}

impl Planned for SinkStep {
    fn expand(&self, _cx: &Context<'_>) -> TokenStream {
        let stage = stage_var();
        let method = Ident::new(METHOD, self.span);
        let setters = self.options.setters();
        let build = Ident::new(BUILD, self.span);
        quote!(#stage.#method() #setters .#build())
    }
}

/// Stands in for a missing sink: the sink with its defaults (an error says it is missing).
pub(crate) fn stand_in() -> Step {
    Step {
        label: label(),
        stage: Box::new(SinkStep {
            options: Options::new(OPTIONS),
            span: Span::call_site(),
        }),
    }
}
