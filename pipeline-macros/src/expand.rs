//! Phase 3: the checked pipeline → builder calls. This file is the generic part: the driver
//! that walks the checked pipeline, and the guard-function and span technique that the stage kinds
//! (`stages/*.rs`) use to generate their calls.
//!
//! The expansion is a block that evaluates to `Result<Pipeline<T>, BuildError>`:
//!
//! ```text
//! {
//!     let stage = PipelineBuilder::new().source(items);
//!     let stage = { /* guard for stage 2 */ guard(f, stage, options) };
//!     ...
//!     stage.sink(buffer).num_threads(n).build()
//! }
//! ```
//!
//! Each `pipe` stage goes through a guard function. Its where-clause names the stage
//! function's argument type `A` (from the function alone) and then requires that the item
//! type `T` of the previous stage is `A`, through a trait generated for this stage with a
//! `#[diagnostic::on_unimplemented]` message that names the stage and both types. The stage
//! function is passed before the previous stage so that rustc learns `A` from the function
//! first; a closure without type annotations is checked last by rustc, so it gets `A = T`
//! and its argument type is inferred as usual.
//!
//! Only items of `::pipeline_runtime::__private` are named.
//!
//! Errors come first, as `compile_error!`s, then the best expansion the input allows: a missing
//! source or sink is replaced by a stand-in, so that the stages in between are still checked.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::Expr;

use crate::checked::{CheckedPipeline, CheckedStage, ExpandContext};

/// The path of the only module an expansion names.
pub(crate) fn rt() -> TokenStream {
    quote!(::pipeline_runtime::__private)
}

/// The pipeline so far, a local no user code can name.
pub(crate) fn stage_var() -> Ident {
    Ident::new("__pipeline_stage", Span::mixed_site())
}

/// Expands a checked pipeline, with the errors found before (emitted first, as
/// `compile_error!`s).
pub(crate) fn expand(pipeline: &CheckedPipeline, errors: &[syn::Error]) -> TokenStream {
    let errors = errors.iter().map(syn::Error::to_compile_error);
    let (source_stand_in, sink_stand_in) = &pipeline.stand_ins;
    let source = pipeline.source.as_ref().unwrap_or(source_stand_in);
    let sink = pipeline.sink.as_ref().unwrap_or(sink_stand_in);
    let mut stages = TokenStream::new();
    let mut prev: Option<&CheckedStage> = None;
    for checked in std::iter::once(source)
        .chain(&pipeline.stages)
        .chain(std::iter::once(sink))
    {
        let cx = ExpandContext {
            label: &checked.label,
            prev: prev.map_or("", |p| p.label.as_str()),
            prev_note: prev.and_then(|p| p.stage.note_for_next()),
        };
        stages.extend(checked.stage.expand(&cx));
        prev = Some(checked);
    }
    quote! {
        {
            #(#errors)*
            #stages
        }
    }
}

/// The statements of a chain inside a structure (a merge input, a route branch), each stage
/// told the label of the one before it; the first is told `first_prev`.
pub(crate) fn expand_chain<'a>(
    first_prev: &str,
    stages: impl IntoIterator<Item = &'a CheckedStage>,
) -> TokenStream {
    let mut out = TokenStream::new();
    let mut prev: Option<&CheckedStage> = None;
    for checked in stages {
        let cx = ExpandContext {
            label: &checked.label,
            prev: prev.map_or(first_prev, |p| p.label.as_str()),
            prev_note: prev.and_then(|p| p.stage.note_for_next()),
        };
        out.extend(checked.stage.expand(&cx));
        prev = Some(checked);
    }
    out
}

/// Escapes text for a `#[diagnostic::on_unimplemented]` format string.
pub(crate) fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Spans of the first and last token of an expression (rustc joins them into one span
/// covering the expression when both come from the user's code).
pub(crate) fn edge_spans(expr: &Expr) -> (Span, Span) {
    let tokens: Vec<TokenTree> = expr.to_token_stream().into_iter().collect();
    let first = tokens.first().map_or_else(Span::call_site, TokenTree::span);
    let last = match tokens.last() {
        Some(TokenTree::Group(g)) => g.span_close(),
        Some(tt) => tt.span(),
        None => first,
    };
    (first, last)
}

/// `__private::stage_input(stage)`, spanned over the user's tokens from `first` to `last`, so
/// that a type error about the previous stage's items points at the stage.
pub(crate) fn stage_arg(first: Span, last: Span) -> TokenStream {
    let stage = stage_var();
    let mut args = Group::new(Delimiter::Parenthesis, quote!(#stage));
    args.set_span(last);
    let path = quote_spanned! {first=> ::pipeline_runtime::__private::stage_input };
    quote!(#path #args)
}

/// Whether a closure has a type on every parameter: then its argument type is known without
/// the previous stage, and it is checked like a function (see the module docs).
pub(crate) fn annotated_closure(expr: &Expr) -> bool {
    match expr {
        Expr::Closure(c) => c.inputs.iter().all(|p| matches!(p, syn::Pat::Type(_))),
        _ => false,
    }
}

/// The trait through which a guard requires that the previous stage's items are the stage
/// function's argument `A`, with a message naming both stages and both types.
pub(crate) fn input_trait(cx: &ExpandContext<'_>) -> TokenStream {
    let rt = rt();
    let message = format!(
        "{} takes `{{A}}`, but {} produces `{{Self}}`",
        escape(cx.label),
        escape(cx.prev)
    );
    let note = cx
        .prev_note
        .unwrap_or("a stage takes the items that the stage before it produces");
    quote! {
        #[diagnostic::on_unimplemented(
            message = #message,
            label = "this stage takes `{A}`, not `{Self}`",
            note = #note
        )]
        trait __PipelineStageInput<A>: ::core::marker::Sized {
            fn __cast(stage: #rt::StageBuilder<Self>) -> #rt::StageBuilder<A>;
        }
        impl<X> __PipelineStageInput<X> for X {
            fn __cast(stage: #rt::StageBuilder<X>) -> #rt::StageBuilder<X> {
                stage
            }
        }
    }
}

/// `guard(args)` with the parentheses spanned at `args_span`.
pub(crate) fn spanned_call(guard: &Ident, args: TokenStream, args_span: Span) -> TokenStream {
    let mut group = Group::new(Delimiter::Parenthesis, args);
    group.set_span(args_span);
    quote!(#guard #group)
}

#[cfg(test)]
mod tests {
    use crate::pipeline_tokens as pipeline;
    use quote::quote;

    #[test]
    fn expansion_names_only_the_private_module() {
        let out = pipeline(quote! {
            source(0..10) -> pipe(f, concurrency = 2, order = input) -> aggregate(2)
            -> disaggregate() -> pipe(try async g) -> sink(buffer = 2, max_failures = 3)
        })
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        for path in out.split("::pipeline_runtime :: ").skip(1) {
            assert!(path.starts_with("__private"), "{path}");
        }
        assert!(out.contains("async_try_pipe"));
        assert!(out.contains(". aggregate ("));
        assert!(out.contains("Order :: Input"));
        assert!(out.contains("MaxFailures :: Count (3)"));
    }

    #[test]
    fn errors_come_with_an_expansion() {
        let out =
            pipeline(quote! { source(0..10) -> pipe(f, concurency = 2) -> sink() }).to_string();
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("pipe"));
        assert!(out.contains(". build ()"));
    }

    #[test]
    fn braces_in_labels_are_escaped() {
        let out = pipeline(quote! { source(x) -> pipe(f, name = "{a}") -> sink() }).to_string();
        assert!(out.contains("{{a}}"), "{out}");
    }
}
