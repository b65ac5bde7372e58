//! `aggregate_by(key, n)`: a stage that groups items into batches (`Vec`s) of `n` items that
//! share a key, `key(&item)`: batches of one aspect ratio, or of one length bucket. A bucket
//! that never fills is flushed at the end of each epoch, unless `drop_last`.
//!
//! It takes the options of `aggregate`. Its key function is checked as a `pipe` stage's
//! function is: the guard names the function's argument type from the function alone, then
//! requires the previous stage's items to be of that type, so that a mismatch reads "stage 3
//! `aggregate_by(ratio, 32)` takes `Image`, but stage 2 .. produces `PathBuf`" and points at
//! the key function.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Expr;

use super::aggregate::{BATCHES_NOTE, OPTIONS};
use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{Arg, CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::{
    annotated_closure, edge_spans, input_trait, rt, spanned_call, stage_arg, stage_var,
};
use crate::expr::describe;
use crate::option_values::OptionValues;

pub(crate) static AGGREGATE_BY: KindDescriptor = KindDescriptor {
    name: "aggregate_by",
    place: Place::Between,
    modifiers: &[],
    // The builder method, as `.method(key, n)` followed by the option setters.
    forms: &[Form::plain("aggregate_by")],
    positional: Positional::Exprs(&[
        Arg::new("a key function", "key", "|item| item.len()"),
        Arg::count("the batch size", "n", "32"),
    ]),
    options: OPTIONS,
    plan,
};

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    let [key, size] = <[Expr; 2]>::try_from(checked.args).ok()?;
    Some(CheckedStage {
        label: format!(
            "stage {} `aggregate_by({}, {})`",
            checked.number,
            describe(&key),
            describe(&size)
        ),
        stage: Box::new(CheckedAggregateBy {
            method: checked.form.method,
            key,
            size,
            options: checked.options,
            span: checked.stage.name.span(),
            args_span: checked.stage.args_span,
        }),
    })
}

/// A checked `aggregate_by` stage.
struct CheckedAggregateBy {
    method: &'static str,
    key: Expr,
    size: Expr,
    options: OptionValues,
    /// Span of the stage name.
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl ExpandStage for CheckedAggregateBy {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let guard = Ident::new("__pipeline_guard", self.span);
        let input = input_trait(cx);
        let (first, last) = edge_spans(&self.key);
        let arg = stage_arg(first, last);
        let setters = self.options.setters();
        let key = &self.key;
        let key_tokens = if annotated_closure(key) {
            // As for `pipe`: checked with the other arguments, so that its annotated type is
            // known before the previous stage's item type.
            quote!({ #key })
        } else {
            quote!(#key)
        };
        let size = &self.size;
        let call = spanned_call(&guard, quote!(#key_tokens, #size, #arg), self.args_span);
        quote! {
            #[allow(unused_braces)]
            let #stage = {
                #input
                fn #guard<T, A, F, K>(
                    key: F,
                    size: usize,
                    stage: #rt::StageBuilder<T>,
                ) -> #rt::StageBuilder<::std::vec::Vec<A>>
                where
                    F: ::core::ops::Fn(&A) -> K + #rt::StageFn,
                    K: ::core::cmp::Eq + ::core::hash::Hash + ::core::marker::Send + 'static,
                    A: ::core::marker::Send + 'static,
                    T: ::core::marker::Send + 'static + __PipelineStageInput<A>,
                {
                    <T as __PipelineStageInput<A>>::__cast(stage).#method(key, size)
                }
                #call #setters
            };
        }
    }

    fn note_for_next(&self) -> Option<&'static str> {
        Some(BATCHES_NOTE)
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline_tokens as pipeline;
    use quote::quote;

    #[test]
    fn expands_to_a_guarded_call() {
        let out = pipeline(quote! {
            source(0..10u32)
            -> aggregate_by(|x: &u32| x % 3, 4, drop_last = true, name = "by", buffer = 2)
            -> sink()
        })
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains(". aggregate_by (key , size)"), "{out}");
        assert!(out.contains("stage 2 `aggregate_by(|..| .., 4)` takes"), "{out}");
        assert!(out.contains(". drop_last (true) . name (\"by\") . buffer (2)"), "{out}");
    }

    #[test]
    fn checks_its_arguments_from_the_descriptor() {
        let cases = [
            (
                quote! { source(x) -> aggregate_by(key, 0) -> sink() },
                "the batch size must be at least 1",
            ),
            (
                quote! { source(x) -> aggregate_by(key) -> sink() },
                "`aggregate_by` needs the batch size: `aggregate_by(|item| item.len(), 32)`",
            ),
            (
                quote! { source(x) -> aggregate_by() -> sink() },
                "`aggregate_by` needs a key function and the batch size",
            ),
            (
                quote! { source(x) -> aggregate_by(key, 4, 5) -> sink() },
                "`aggregate_by` takes a key function and the batch size, then options",
            ),
            (
                quote! { source(x) -> aggregate_by(key, 4, concurrency = 2) -> sink() },
                "`concurrency` is an option of `pipe`, not of `aggregate_by`",
            ),
            (
                quote! { source(x) -> aggregate_by(async key, 4) -> sink() },
                "`aggregate_by` does not take the modifier `async`",
            ),
        ];
        for (tokens, expected) in cases {
            let out = pipeline(tokens.clone()).to_string();
            assert_eq!(out.matches("compile_error").count(), 1, "{tokens}: {out}");
            assert!(out.contains(expected), "{tokens}: {out}");
        }
    }
}
