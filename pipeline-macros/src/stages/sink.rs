//! `sink(..)`: the last stage, the queue the consumer reads; its options are those of the
//! whole pipeline (threads, failure budget, stats), so it is also where the pipeline is built.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::stage_var;
use crate::option_values::{OptionSpec, OptionValues, ValueType};

pub(crate) static SINK: KindDescriptor = KindDescriptor {
    name: "sink",
    place: Place::Last,
    modifiers: &[],
    // The builder method that ends the stages, as `.method()`.
    forms: &[Form::plain("sink")],
    positional: Positional::None {
        hint: "options only, e.g. `sink(buffer = 4)`",
    },
    options: OPTIONS,
    plan,
};

/// The builder method that builds the pipeline after the option setters.
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
        ValueType::FailureBudget,
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
    OptionSpec::new("thread_limit", ValueType::AtLeastOne, "4", Some("thread_limit")),
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

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    Some(CheckedStage {
        label: label(),
        stage: Box::new(CheckedSink {
            method: checked.form.method,
            options: checked.options,
            span: checked.stage.name.span(),
        }),
    })
}

fn label() -> String {
    "`sink`".to_owned()
}

/// A checked sink.
struct CheckedSink {
    method: &'static str,
    options: OptionValues,
    /// Span of the stage name.
    span: Span,
}

impl ExpandStage for CheckedSink {
    fn expand(&self, _cx: &ExpandContext<'_>) -> TokenStream {
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let setters = self.options.setters();
        let build = Ident::new(BUILD, self.span);
        quote!(#stage.#method() #setters .#build())
    }
}

/// Stands in for a missing sink: the sink with its defaults (an error says it is missing).
pub(crate) fn stand_in() -> CheckedStage {
    CheckedStage {
        label: label(),
        stage: Box::new(CheckedSink {
            method: SINK.forms[0].method,
            options: OptionValues::new(OPTIONS),
            span: Span::call_site(),
        }),
    }
}
