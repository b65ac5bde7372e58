//! Phase 3: the checked plan → builder calls.
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

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::Expr;

use crate::validate::{
    AggregateOptions, Budget, LabeledStep, Opt, OrderValue, PipeOptions, Plan, SinkOptions,
    SourceKind, Step,
};

fn rt() -> TokenStream {
    quote!(::pipeline_runtime::__private)
}

/// The pipeline so far, a local no user code can name.
fn stage_var() -> Ident {
    Ident::new("__pipeline_stage", Span::mixed_site())
}

/// Expands a plan, with the errors found before (emitted first, as `compile_error!`s).
pub(crate) fn expand(plan: &Plan, errors: &[syn::Error]) -> TokenStream {
    let rt = rt();
    let stage = stage_var();
    let errors = errors.iter().map(syn::Error::to_compile_error);
    let source = match &plan.source {
        Some(source) => {
            let method = Ident::new(
                match source.kind {
                    SourceKind::Iter => "source",
                    SourceKind::Try => "try_source",
                    SourceKind::Continuous => "continuous_source",
                    SourceKind::Stream => "source_stream",
                },
                source.span,
            );
            let items = &source.items;
            quote_spanned! {source.span=>
                let #stage = #rt::PipelineBuilder::new().#method(#items);
            }
        }
        None => quote! {
            let #stage = #rt::missing_source();
        },
    };
    let mut prev = "`source`".to_owned();
    let mut prev_is_aggregate = false;
    let mut steps = Vec::with_capacity(plan.steps.len());
    for LabeledStep { step, label } in &plan.steps {
        steps.push(expand_step(step, label, &prev, prev_is_aggregate));
        prev.clone_from(label);
        prev_is_aggregate = matches!(step, Step::Aggregate { .. } | Step::AggregateWith { .. });
    }
    let sink = match &plan.sink {
        Some((span, options)) => expand_sink(*span, options),
        None => quote! { #stage.sink(#rt::DEFAULT_SINK_BUFFER).build() },
    };
    quote! {
        {
            #(#errors)*
            #source
            #(#steps)*
            #sink
        }
    }
}

/// Escapes text for a `#[diagnostic::on_unimplemented]` format string.
fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Spans of the first and last token of an expression (rustc joins them into one span
/// covering the expression when both come from the user's code).
fn edge_spans(expr: &Expr) -> (Span, Span) {
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
fn stage_arg(first: Span, last: Span) -> TokenStream {
    let stage = stage_var();
    let mut args = Group::new(Delimiter::Parenthesis, quote!(#stage));
    args.set_span(last);
    let path = quote_spanned! {first=> ::pipeline_runtime::__private::stage_input };
    quote!(#path #args)
}

/// Whether a closure has a type on every parameter: then its argument type is known without
/// the previous stage, and it is checked like a function (see the module docs).
fn annotated_closure(expr: &Expr) -> bool {
    match expr {
        Expr::Closure(c) => c.inputs.iter().all(|p| matches!(p, syn::Pat::Type(_))),
        _ => false,
    }
}

fn input_trait(label: &str, prev: &str, prev_is_aggregate: bool) -> TokenStream {
    let rt = rt();
    let message = format!(
        "{} takes `{{A}}`, but {} produces `{{Self}}`",
        escape(label),
        escape(prev)
    );
    let note = if prev_is_aggregate {
        "`aggregate` produces batches (`Vec`s) of items: make the stage take the batch, \
         or add `-> disaggregate()` before it"
            .to_owned()
    } else {
        "a stage takes the items that the stage before it produces".to_owned()
    };
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

fn expand_step(step: &Step, label: &str, prev: &str, prev_is_aggregate: bool) -> TokenStream {
    let rt = rt();
    let stage = stage_var();
    match step {
        Step::Pipe {
            shape,
            func,
            options,
            span,
            args_span,
        } => {
            use crate::validate::Shape;
            let bounds = match shape {
                Shape::Map => quote! { F: ::core::ops::Fn(A) -> U, U: #rt::Item, },
                Shape::Try => quote! {
                    F: ::core::ops::Fn(A) -> ::core::result::Result<U, E>,
                    U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
                },
                Shape::Opt => {
                    quote! { F: ::core::ops::Fn(A) -> ::core::option::Option<U>, U: #rt::Item, }
                }
                Shape::Flat => quote! {
                    F: ::core::ops::Fn(A) -> I,
                    I: ::core::iter::IntoIterator<Item = U>,
                    I::IntoIter: ::core::marker::Send + 'static,
                    U: #rt::Item,
                },
                Shape::TryFlat => quote! {
                    F: ::core::ops::Fn(A) -> I,
                    I: ::core::iter::IntoIterator<Item = ::core::result::Result<U, E>>,
                    I::IntoIter: ::core::marker::Send + 'static,
                    U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
                },
                Shape::Async => quote! {
                    F: ::core::ops::Fn(A) -> Fut,
                    Fut: ::core::future::Future<Output = U> + ::core::marker::Send + 'static,
                    U: #rt::Item,
                },
                Shape::TryAsync => quote! {
                    F: ::core::ops::Fn(A) -> Fut,
                    Fut: ::core::future::Future<Output = ::core::result::Result<U, E>>
                        + ::core::marker::Send + 'static,
                    U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
                },
                Shape::OptAsync => quote! {
                    F: ::core::ops::Fn(A) -> Fut,
                    Fut: ::core::future::Future<Output = ::core::option::Option<U>>
                        + ::core::marker::Send + 'static,
                    U: #rt::Item,
                },
                Shape::Process => quote! {
                    F: ::core::ops::Fn(A) -> U,
                    A: #rt::ProcessInput,
                    U: #rt::Item + #rt::ProcessOutput,
                },
                Shape::Stream => quote! {
                    F: ::core::ops::Fn(A) -> S,
                    S: #rt::Stream<Item = U> + ::core::marker::Send + 'static,
                    U: #rt::Item,
                },
            };
            // Generic parameters the bounds above use.
            let extra: TokenStream = match shape {
                Shape::Map | Shape::Opt | Shape::Process => quote!(),
                Shape::Try => quote!(E,),
                Shape::Flat => quote!(I,),
                Shape::TryFlat => quote!(I, E,),
                Shape::Async | Shape::OptAsync => quote!(Fut,),
                Shape::TryAsync => quote!(Fut, E,),
                Shape::Stream => quote!(S,),
            };
            let method = Ident::new(shape.method(), *span);
            let guard = Ident::new("__pipeline_guard", *span);
            let input = input_trait(label, prev, prev_is_aggregate);
            let (first, last) = edge_spans(func);
            let arg = stage_arg(first, last);
            let opts = pipe_options(options);
            let func_tokens = if annotated_closure(func) {
                // Not a closure to rustc any more: checked with the other arguments, so its
                // annotated type is known before the previous stage's item type.
                quote!({ #func })
            } else {
                quote!(#func)
            };
            // The call spans the whole stage, `pipe(..)`, so that errors about the stage as a
            // whole (what it produces, its future) point at it.
            let call = spanned_call(&guard, quote!(#func_tokens, #arg, #opts), *args_span);
            quote! {
                #[allow(unused_braces)]
                let #stage = {
                    #input
                    fn #guard<T, A, F, U, #extra>(
                        f: F,
                        stage: #rt::StageBuilder<T>,
                        options: #rt::StageOptions,
                    ) -> #rt::StageBuilder<U>
                    where
                        #bounds
                        F: #rt::StageFn,
                        A: ::core::marker::Send + 'static,
                        T: ::core::marker::Send + 'static + __PipelineStageInput<A>,
                    {
                        <T as __PipelineStageInput<A>>::__cast(stage).#method(f, options)
                    }
                    #call
                };
            }
        }
        Step::Aggregate {
            size,
            options,
            span,
        } => {
            let method = Ident::new("aggregate_sized", *span);
            let opts = aggregate_options(options);
            quote! {
                let #stage = #stage.#method(#size, #opts);
            }
        }
        Step::AggregateWith {
            aggregator,
            options,
            span,
        } => {
            let method = Ident::new("aggregate_with", *span);
            let opts = aggregate_options(options);
            quote! {
                let #stage = #stage.#method(#aggregator, #opts);
            }
        }
        Step::Disaggregate { span, args_span } => {
            let message = format!(
                "{} takes collections, but {} produces `{{Self}}`, which is not one",
                escape(label),
                escape(prev)
            );
            let guard = Ident::new("__pipeline_guard", *span);
            let arg = stage_arg(*span, *args_span);
            let call = spanned_call(&guard, arg, *args_span);
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
                        stage.disaggregate()
                    }
                    #call
                };
            }
        }
    }
}

/// `guard(args)` with the parentheses spanned at `args_span`.
fn spanned_call(guard: &Ident, args: TokenStream, args_span: Span) -> TokenStream {
    let mut group = Group::new(Delimiter::Parenthesis, args);
    group.set_span(args_span);
    quote!(#guard #group)
}

fn method_call(name: &str, opt: &Opt) -> TokenStream {
    let method = Ident::new(name, opt.span);
    let value = &opt.value;
    quote!(.#method(#value))
}

fn budget_tokens(budget: &Budget) -> (Span, TokenStream) {
    let rt = rt();
    match budget {
        Budget::Count(span, lit) => (
            *span,
            quote_spanned!(lit.span()=> #rt::MaxFailures::Count(#lit)),
        ),
        Budget::Rate(span, lit) => (
            *span,
            quote_spanned!(lit.span()=> #rt::MaxFailures::rate(#lit)),
        ),
        Budget::Expr(opt) => (opt.span, opt.value.to_token_stream()),
    }
}

fn pipe_options(options: &PipeOptions) -> TokenStream {
    let rt = rt();
    let mut out = quote!(#rt::StageOptions::new());
    if let Some(o) = &options.concurrency {
        out.extend(method_call("concurrency", o));
    }
    if let Some(o) = &options.name {
        out.extend(method_call("name", o));
    }
    if let Some(order) = &options.order {
        out.extend(match order {
            OrderValue::Input(span) => {
                let method = Ident::new("order", *span);
                quote_spanned!(*span=> .#method(#rt::Order::Input))
            }
            OrderValue::Completion(span) => {
                let method = Ident::new("order", *span);
                quote_spanned!(*span=> .#method(#rt::Order::Completion))
            }
            OrderValue::Expr(o) => method_call("order", o),
        });
    }
    if let Some(budget) = &options.max_failures {
        let (span, value) = budget_tokens(budget);
        let method = Ident::new("max_failures", span);
        out.extend(quote!(.#method(#value)));
    }
    if let Some(o) = &options.executor {
        out.extend(method_call("executor", o));
    }
    if let Some(o) = &options.buffer {
        out.extend(method_call("buffer", o));
    }
    out
}

fn aggregate_options(options: &AggregateOptions) -> TokenStream {
    let rt = rt();
    let mut out = quote!(#rt::AggregateOptions::new());
    if let Some(o) = &options.drop_last {
        out.extend(method_call("drop_last", o));
    }
    if let Some(o) = &options.name {
        out.extend(method_call("name", o));
    }
    if let Some(o) = &options.buffer {
        out.extend(method_call("buffer", o));
    }
    out
}

fn expand_sink(span: Span, options: &SinkOptions) -> TokenStream {
    let rt = rt();
    let stage = stage_var();
    let sink = Ident::new("sink", span);
    let buffer = match &options.buffer {
        Some(o) => o.value.to_token_stream(),
        None => quote!(#rt::DEFAULT_SINK_BUFFER),
    };
    let mut out = quote!(#stage.#sink(#buffer));
    if let Some(o) = &options.num_threads {
        out.extend(method_call("num_threads", o));
    }
    if let Some(budget) = &options.max_failures {
        let (span, value) = budget_tokens(budget);
        let method = Ident::new("max_failures", span);
        out.extend(quote!(.#method(#value)));
    }
    if let Some(o) = &options.queue_capacity {
        out.extend(method_call("queue_capacity", o));
    }
    if let Some(o) = &options.stop_timeout {
        out.extend(method_call("stop_timeout", o));
    }
    if let Some(o) = &options.stats {
        out.extend(method_call("stats", o));
    }
    if let Some(o) = &options.report_interval {
        out.extend(method_call("report_interval", o));
    }
    let build = Ident::new("build", span);
    out.extend(quote!(.#build()));
    out
}

/// The whole macro: parse, validate, expand. Never panics; errors come out as
/// `compile_error!`s next to the best expansion the input allows.
pub(crate) fn pipeline(input: TokenStream) -> TokenStream {
    let parsed = crate::parse::parse(input);
    let (plan, errors) = crate::validate::validate(parsed);
    expand(&plan, &errors)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(out.contains("try_pipe_async"));
        assert!(out.contains("aggregate_sized"));
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
