//! `disaggregate()`: a stage that turns each collection (a batch, say) back into its items.
//!
//! It expands to a guard whose trait requires the previous stage's items to be collections,
//! so that a mistake reads "stage 3 `disaggregate()` takes collections, but .. produces `u32`".

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::{escape, rt, spanned_call, stage_arg, stage_var};

pub(crate) static DISAGGREGATE: KindDescriptor = KindDescriptor {
    name: "disaggregate",
    place: Place::Between,
    modifiers: &[],
    // The builder method, as `.method()`.
    forms: &[Form::plain("disaggregate")],
    positional: Positional::None {
        hint: "no arguments: `disaggregate()`",
    },
    options: &[],
    plan,
};

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    Some(CheckedStage {
        label: format!("stage {} `disaggregate()`", checked.number),
        stage: Box::new(CheckedDisaggregate {
            method: checked.form.method,
            span: checked.stage.name.span(),
            args_span: checked.stage.args_span,
        }),
    })
}

/// A checked `disaggregate` stage.
struct CheckedDisaggregate {
    method: &'static str,
    /// Span of the stage name.
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl ExpandStage for CheckedDisaggregate {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let message = format!(
            "{} takes collections, but {} produces `{{Self}}`, which is not one",
            escape(cx.label),
            escape(cx.prev)
        );
        let guard = Ident::new("__pipeline_guard", self.span);
        let method = Ident::new(self.method, Span::call_site());
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
