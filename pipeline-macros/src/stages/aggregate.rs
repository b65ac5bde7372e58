//! `aggregate(n)`: a stage that groups items into batches (`Vec`s) of `n`.
//!
//! Its options are shared with `aggregate_with`, which groups with a custom aggregator.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::Expr;

use super::kind::{Checks, OptionSpec, Place, Positional, StageKind, ValueType};
use super::option::Options;
use crate::expand::stage_var;
use crate::expr::{describe, int_literal};
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

/// The options of `aggregate` and `aggregate_with`, in the order their setters are called on
/// the options value.
pub(super) const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("drop_last", ValueType::Expr, "true", Some("drop_last")),
    OptionSpec::new("name", ValueType::Expr, "\"decode\"", Some("name")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

/// The builder method of `aggregate(n)`, as `.method(n)` followed by the option setters.
const METHOD: &str = "aggregate";

/// What the type error of the stage after an aggregation says.
pub(super) const BATCHES_NOTE: &str = "`aggregate` produces batches (`Vec`s) of items: make \
     the stage take the batch, or add `-> disaggregate()` before it";

pub(crate) struct Aggregate;

impl StageKind for Aggregate {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn place(&self) -> Place {
        Place::Between
    }

    fn positional(&self) -> Positional {
        Positional::One {
            what: "the batch size",
            example: "32",
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        checks.modifiers(stage, implied, self.modifiers());
        let options = Options::checked(stage, OPTIONS, checks);
        let mut size = checks.positional(stage, &self.positional())?;
        if let Some((negative, n)) = int_literal(&size) {
            if negative || n == 0 {
                checks.push(syn::Error::new_spanned(
                    &size,
                    "the batch size must be at least 1",
                ));
                // Best effort: go on with a valid size.
                size = syn::parse_quote_spanned!(size.span()=> 1);
            }
        }
        Some(Step {
            label: format!("stage {number} `aggregate({})`", describe(&size)),
            stage: Box::new(AggregateStep {
                method: METHOD,
                arg: size,
                options,
                span: stage.kind.span(),
            }),
        })
    }
}

/// A checked `aggregate` or `aggregate_with` stage: `.method(arg, options)`.
pub(super) struct AggregateStep {
    pub(super) method: &'static str,
    /// The batch size, or the aggregator.
    pub(super) arg: Expr,
    pub(super) options: Options,
    /// Span of the stage name.
    pub(super) span: Span,
}

impl Planned for AggregateStep {
    fn expand(&self, _cx: &Context<'_>) -> TokenStream {
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let setters = self.options.setters();
        let arg = &self.arg;
        quote! {
            let #stage = #stage.#method(#arg) #setters;
        }
    }

    fn note_for_next(&self) -> Option<&'static str> {
        Some(BATCHES_NOTE)
    }
}
