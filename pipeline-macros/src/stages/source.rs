//! `source(items)`: the first stage, what the pipeline iterates.
//!
//! Its shapes are chosen by a modifier (`try`, `continuous`, `async`), or by the builder's
//! method name written as the stage name (`try_source(items)`). It takes no options.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Expr;

use super::kind::{
    and_list, Checks, Modifier, OptionSpec, Place, Positional, StageKind, ValueType,
};
use super::option::Options;
use crate::expand::{rt, stage_var};
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

/// One shape of a source.
struct Shape {
    /// The modifiers that select it.
    modifiers: &'static [&'static str],
    /// How it is written, in messages.
    example: &'static str,
    /// The builder method it calls on `PipelineBuilder::new()`. Also accepted as the stage's
    /// name (`try_source(items)`), unless it is `source` itself.
    method: &'static str,
}

/// The shapes; the first is the plain `source(items)`.
const SHAPES: &[Shape] = &[
    Shape {
        modifiers: &[],
        example: "source(items)",
        method: "source",
    },
    Shape {
        modifiers: &["try"],
        example: "source(try items)",
        method: "try_source",
    },
    Shape {
        modifiers: &["continuous"],
        example: "source(continuous items)",
        method: "continuous_source",
    },
    Shape {
        modifiers: &["async"],
        example: "source(async s)",
        method: "async_source",
    },
    Shape {
        modifiers: &["async", "try"],
        example: "source(async try s)",
        method: "async_try_source",
    },
];

const NAME: &str = "source";

pub(crate) struct Source;

impl StageKind for Source {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aliases(&self) -> Vec<(&'static str, &'static [&'static str])> {
        SHAPES
            .iter()
            .filter(|shape| shape.method != NAME)
            .map(|shape| (shape.method, shape.modifiers))
            .collect()
    }

    fn place(&self) -> Place {
        Place::First
    }

    fn modifiers(&self) -> &'static [Modifier] {
        const MODIFIERS: &[Modifier] = &[
            Modifier::new("try"),
            Modifier {
                word: "continuous",
                hint: " (`continuous` applies to `source`)",
            },
            Modifier::new("async"),
        ];
        MODIFIERS
    }

    fn positional(&self) -> Positional {
        Positional::One {
            what: "the items",
            example: "0..100",
        }
    }

    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        _number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        let mods = checks.modifiers(stage, implied, self.modifiers());
        let shape = match SHAPES.iter().find(|shape| {
            shape.modifiers.len() == mods.len() && shape.modifiers.iter().all(|m| mods.contains(*m))
        }) {
            Some(shape) => shape,
            None => {
                let examples: Vec<String> = SHAPES
                    .iter()
                    .map(|shape| format!("`{}`", shape.example))
                    .collect();
                checks.error(
                    stage.kind.span(),
                    format!("a source is one of {}", and_list(&examples)),
                );
                &SHAPES[0]
            }
        };
        let options = Options::checked(stage, OPTIONS, checks);
        let items = checks.positional(stage, &self.positional())?;
        Some(Step {
            label: label(),
            stage: Box::new(SourceStep {
                method: shape.method,
                items,
                options,
                span: stage.kind.span(),
            }),
        })
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// The source's options: the size of its items, for the sink's `memory_limit`.
const OPTIONS: &[OptionSpec] = &[OptionSpec::new(
    "item_bytes",
    ValueType::Expr,
    "|item| item.len()",
    Some("item_bytes"),
)];

/// How the source is named in the messages of the stage after it.
fn label() -> String {
    format!("`{NAME}`")
}

/// A checked source.
struct SourceStep {
    method: &'static str,
    items: Expr,
    options: Options,
    /// The span of the stage name.
    span: Span,
}

impl Planned for SourceStep {
    fn expand(&self, _cx: &Context<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let items = &self.items;
        let setters = self.options.setters();
        quote_spanned! {self.span=>
            let #stage = #rt::PipelineBuilder::new().#method(#items) #setters;
        }
    }
}

/// Stands in for a missing source: a builder of the right type that fails to build.
struct Missing;

impl Planned for Missing {
    fn expand(&self, _cx: &Context<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        quote! {
            let #stage = #rt::missing_source();
        }
    }
}

pub(crate) fn stand_in() -> Step {
    Step {
        label: label(),
        stage: Box::new(Missing),
    }
}
