//! `disaggregate()`: a stage that turns each collection (a batch, say) back into its items.
//!
//! It expands to a guard whose trait requires the previous stage's items to be collections,
//! so that a mistake reads "stage 3 `disaggregate()` takes collections, but .. produces `u32`".

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::kind::{Checks, Place, Positional, StageKind};
use crate::expand::{escape, rt, spanned_call, stage_arg, stage_var};
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

/// The builder method, as `.method()`.
const METHOD: &str = "disaggregate";

pub(crate) struct Disaggregate;

impl StageKind for Disaggregate {
    fn name(&self) -> &'static str {
        "disaggregate"
    }

    fn place(&self) -> Place {
        Place::Between
    }

    fn positional(&self) -> Positional {
        Positional::None {
            hint: "no arguments: `disaggregate()`",
        }
    }

    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        checks.modifiers(stage, implied, self.modifiers());
        checks.positional(stage, &self.positional());
        checks.options(stage, self.options());
        Some(Step {
            label: format!("stage {number} `disaggregate()`"),
            stage: Box::new(DisaggregateStep {
                span: stage.kind.span(),
                args_span: stage.args_span,
            }),
        })
    }
}

/// A checked `disaggregate` stage.
struct DisaggregateStep {
    /// Span of the stage name.
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl Planned for DisaggregateStep {
    fn expand(&self, cx: &Context<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let message = format!(
            "{} takes collections, but {} produces `{{Self}}`, which is not one",
            escape(cx.label),
            escape(cx.prev)
        );
        let guard = Ident::new("__pipeline_guard", self.span);
        let method = Ident::new(METHOD, Span::call_site());
        let arg = stage_arg(self.span, self.args_span);
        let call = spanned_call(&guard, arg, self.args_span);
        quote! {
            let #stage = {
                #[diagnostic::on_unimplemented(
                    message = #message,
                    label = "`{Self}` is not a collection",
                    note = "`disaggregate()` turns each collection (such as a batch from \
                                `aggregate`) back into its items; its items and iterator must \
                                be `Send + 'static`"
                )]
                trait __PipelineStageInput: ::core::iter::IntoIterator<
                    IntoIter: ::core::marker::Send + 'static,
                    Item: ::core::marker::Send + 'static,
                > {}
                #[diagnostic::do_not_recommend]
                impl<X> __PipelineStageInput for X
                where
                    X: ::core::iter::IntoIterator<
                        IntoIter: ::core::marker::Send + 'static,
                        Item: ::core::marker::Send + 'static,
                    >,
                {}
                fn #guard<T>(
                    stage: #rt::StageBuilder<T>,
                ) -> #rt::StageBuilder<<T as ::core::iter::IntoIterator>::Item>
                where
                    T: __PipelineStageInput + ::core::marker::Send + 'static,
                {
                    stage.#method()
                }
                #call
            };
        }
    }
}
