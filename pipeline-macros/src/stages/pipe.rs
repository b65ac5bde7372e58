//! `pipe(f)`: a stage that applies a function to each item.
//!
//! The function's shape is chosen by modifiers (`pipe(try async f)`), or by the builder's
//! method name written as the stage name (`async_try_pipe(f)`). Each shape is one row of
//! [`SHAPES`]: the modifiers that select it, the builder method it calls and the bounds that
//! its guard puts on the function. The options, and the setters they become, are [`OPTIONS`].
//!
//! Each stage expands to a guard function (see `expand`): its where-clause names the
//! function's argument type from the function alone, then requires the previous stage's items
//! to be of that type, through a trait whose diagnostic names both stages and both types.

use std::collections::BTreeSet;

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::{Expr, Lit};

use super::kind::{
    and_list, Checks, Modifier, OptionSpec, Place, Positional, StageKind, ValueType,
};
use super::option::{order, Options, Order};
use crate::expand::{
    annotated_closure, edge_spans, input_trait, rt, spanned_call, stage_arg, stage_var,
};
use crate::expr::{describe, int_literal};
use crate::plan::{Context, Planned, Step};
use crate::syntax::Stage;

const NAME: &str = "pipe";

/// One shape of a stage function.
struct Shape {
    /// The modifiers that select it.
    modifiers: &'static [&'static str],
    /// How the modifiers are written before the function, in labels and messages.
    written: &'static str,
    /// The builder method the stage calls, as `.method(f)`, followed by the option setters.
    method: &'static str,
    /// Whether `method` is also accepted as the stage's name (`try_pipe(f)` = `pipe(try f)`).
    alias: bool,
    /// Whether the function runs on the async runtime (so `executor` does not apply).
    runs_async: bool,
    /// Whether the function produces any number of items per item.
    one_to_many: bool,
    /// Whether the function runs in worker processes.
    in_process: bool,
    /// The generic parameters that `bounds` uses besides `T`, `A`, `F` and `U`.
    generics: &'static [&'static str],
    /// The guard's bounds on the function `F: Fn(A) -> ..` and its output `U`, given the path
    /// of `__private`.
    bounds: fn(&TokenStream) -> TokenStream,
}

/// Every shape, in the order messages list them; the first is the plain `pipe(f)`.
const SHAPES: &[Shape] = &[
    Shape {
        modifiers: &[],
        written: "",
        method: "pipe",
        alias: false,
        runs_async: false,
        one_to_many: false,
        in_process: false,
        generics: &[],
        bounds: |rt| quote! { F: ::core::ops::Fn(A) -> U, U: #rt::Item, },
    },
    Shape {
        modifiers: &["try"],
        written: "try ",
        method: "try_pipe",
        alias: true,
        runs_async: false,
        one_to_many: false,
        in_process: false,
        generics: &["E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> ::core::result::Result<U, E>,
                U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
            }
        },
    },
    Shape {
        modifiers: &["opt"],
        written: "opt ",
        method: "opt_pipe",
        alias: true,
        runs_async: false,
        one_to_many: false,
        in_process: false,
        generics: &[],
        bounds: |rt| quote! { F: ::core::ops::Fn(A) -> ::core::option::Option<U>, U: #rt::Item, },
    },
    Shape {
        modifiers: &["flat"],
        written: "flat ",
        method: "flat_pipe",
        alias: true,
        runs_async: false,
        one_to_many: true,
        in_process: false,
        generics: &["I"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> I,
                I: ::core::iter::IntoIterator<Item = U>,
                I::IntoIter: ::core::marker::Send + 'static,
                U: #rt::Item,
            }
        },
    },
    Shape {
        modifiers: &["flat", "try"],
        written: "try flat ",
        method: "try_flat_pipe",
        alias: true,
        runs_async: false,
        one_to_many: true,
        in_process: false,
        generics: &["I", "E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> I,
                I: ::core::iter::IntoIterator<Item = ::core::result::Result<U, E>>,
                I::IntoIter: ::core::marker::Send + 'static,
                U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
            }
        },
    },
    Shape {
        modifiers: &["async"],
        written: "async ",
        method: "async_pipe",
        alias: true,
        runs_async: true,
        one_to_many: false,
        in_process: false,
        generics: &["Fut"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> Fut,
                Fut: ::core::future::Future<Output = U> + ::core::marker::Send + 'static,
                U: #rt::Item,
            }
        },
    },
    Shape {
        modifiers: &["async", "try"],
        written: "async try ",
        method: "async_try_pipe",
        alias: true,
        runs_async: true,
        one_to_many: false,
        in_process: false,
        generics: &["Fut", "E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<U, E>>
                    + ::core::marker::Send + 'static,
                U: #rt::Item, E: ::core::convert::Into<#rt::BoxError> + 'static,
            }
        },
    },
    Shape {
        modifiers: &["async", "opt"],
        written: "async opt ",
        method: "async_opt_pipe",
        alias: true,
        runs_async: true,
        one_to_many: false,
        in_process: false,
        generics: &["Fut"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> Fut,
                Fut: ::core::future::Future<Output = ::core::option::Option<U>>
                    + ::core::marker::Send + 'static,
                U: #rt::Item,
            }
        },
    },
    Shape {
        modifiers: &["async", "flat"],
        written: "async flat ",
        method: "async_flat_pipe",
        alias: true,
        runs_async: true,
        one_to_many: true,
        in_process: false,
        generics: &["S"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> S,
                S: #rt::Stream<Item = U> + ::core::marker::Send + 'static,
                U: #rt::Item,
            }
        },
    },
    Shape {
        modifiers: &["async", "flat", "try"],
        written: "async try flat ",
        method: "async_try_flat_pipe",
        alias: true,
        runs_async: true,
        one_to_many: true,
        in_process: false,
        generics: &["S", "E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> S,
                S: #rt::Stream<Item = ::core::result::Result<U, E>>
                    + ::core::marker::Send + 'static,
                U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
            }
        },
    },
    Shape {
        modifiers: &["process"],
        written: "process ",
        method: "process_pipe",
        alias: true,
        runs_async: false,
        one_to_many: false,
        in_process: true,
        generics: &[],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> U,
                A: #rt::ProcessInput,
                U: #rt::Item + #rt::ProcessOutput,
            }
        },
    },
    Shape {
        modifiers: &["process", "try"],
        written: "process try ",
        method: "process_try_pipe",
        alias: true,
        runs_async: false,
        one_to_many: false,
        in_process: true,
        generics: &["E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> ::core::result::Result<U, E>,
                A: #rt::ProcessInput,
                U: #rt::Item + #rt::ProcessOutput,
                E: #rt::ProcessOutput + ::core::convert::Into<#rt::BoxError> + 'static,
            }
        },
    },
    Shape {
        modifiers: &["opt", "process"],
        written: "process opt ",
        method: "process_opt_pipe",
        alias: true,
        runs_async: false,
        one_to_many: false,
        in_process: true,
        generics: &[],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> ::core::option::Option<U>,
                A: #rt::ProcessInput,
                U: #rt::Item + #rt::ProcessOutput,
            }
        },
    },
    Shape {
        modifiers: &["flat", "process"],
        written: "process flat ",
        method: "process_flat_pipe",
        alias: true,
        runs_async: false,
        one_to_many: true,
        in_process: true,
        generics: &["I"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> I,
                A: #rt::ProcessInput,
                I: ::core::iter::IntoIterator<Item = U> + #rt::ProcessOutput + 'static,
                I::IntoIter: ::core::marker::Send + 'static,
                U: #rt::Item,
            }
        },
    },
    Shape {
        modifiers: &["flat", "process", "try"],
        written: "process try flat ",
        method: "process_try_flat_pipe",
        alias: true,
        runs_async: false,
        one_to_many: true,
        in_process: true,
        generics: &["I", "E"],
        bounds: |rt| {
            quote! {
                F: ::core::ops::Fn(A) -> I,
                A: #rt::ProcessInput,
                I: ::core::iter::IntoIterator<Item = ::core::result::Result<U, E>>
                    + #rt::ProcessOutput + 'static,
                I::IntoIter: ::core::marker::Send + 'static,
                U: #rt::Item, E: ::core::convert::Into<#rt::BoxError>,
            }
        },
    },
];

/// The options, in the order their setters are called on the options value.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new(
        "concurrency",
        ValueType::Concurrency,
        "4",
        Some("concurrency"),
    ),
    OptionSpec::new("name", ValueType::Expr, "\"decode\"", Some("name")),
    OptionSpec::new("order", ValueType::Order, "input", Some("order")),
    OptionSpec::new(
        "max_failures",
        ValueType::Budget,
        "10",
        Some("max_failures"),
    ),
    OptionSpec::new("executor", ValueType::Expr, "pool", Some("executor")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

pub(crate) struct Pipe;

impl StageKind for Pipe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aliases(&self) -> Vec<(&'static str, &'static [&'static str])> {
        SHAPES
            .iter()
            .filter(|shape| shape.alias)
            .map(|shape| (shape.method, shape.modifiers))
            .collect()
    }

    fn place(&self) -> Place {
        Place::Between
    }

    fn modifiers(&self) -> &'static [Modifier] {
        const MODIFIERS: &[Modifier] = &[
            Modifier::new("async"),
            Modifier::new("try"),
            Modifier {
                word: "opt",
                hint: " (it applies to `pipe`)",
            },
            Modifier {
                word: "flat",
                hint: " (it applies to `pipe`)",
            },
            Modifier::new("process"),
        ];
        MODIFIERS
    }

    fn positional(&self) -> Positional {
        Positional::One {
            what: "a function",
            example: "f",
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
        let mods = checks.modifiers(stage, implied, self.modifiers());
        let shape = shape(stage, &mods, checks);
        let mut options = Options::new(OPTIONS);
        for (name, value) in checks.options(stage, OPTIONS) {
            if name == "executor" && shape.runs_async {
                checks.error(
                    name.span(),
                    format!(
                        "`executor` does not apply to an async stage: `{NAME}({}..)` runs on \
                         the pipeline's async runtime, and executors run synchronous stages",
                        shape.written
                    ),
                );
                continue;
            }
            options.check(&name, value, checks);
        }
        if shape.one_to_many {
            if let (Some(Order::Input(order_span)), Some(c)) =
                (options.get("order").map(order), options.get("concurrency"))
            {
                if matches!(int_literal(&c.value), Some((false, n)) if n > 1) {
                    checks.error(
                        order_span,
                        "`order = input` is not supported on a one-to-many stage (`flat`) \
                         with concurrency above 1: use `order = completion` or \
                         `concurrency = 1`"
                            .to_owned(),
                    );
                    options.remove("order");
                }
            }
        }
        let func = checks.positional(stage, &self.positional())?;
        if shape.in_process {
            process_checks(stage, &func, &options, checks);
        }
        let label = match options.get("name").map(|given| &given.value) {
            Some(Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            })) => format!("stage {number} `{}`", s.value()),
            _ => format!(
                "stage {number} `{NAME}({}{})`",
                shape.written,
                describe(&func)
            ),
        };
        Some(Step {
            label,
            stage: Box::new(PipeStep {
                shape,
                func,
                options,
                span: stage.kind.span(),
                args_span: stage.args_span,
            }),
        })
    }
}

/// The shape the modifiers select; a combination that is none is reported, and read as the
/// closest shape.
fn shape(stage: &Stage, mods: &BTreeSet<String>, checks: &mut dyn Checks) -> &'static Shape {
    if let Some(shape) = SHAPES.iter().find(|shape| {
        shape.modifiers.len() == mods.len() && shape.modifiers.iter().all(|m| mods.contains(*m))
    }) {
        return shape;
    }
    let written: Vec<String> = stage.modifiers.iter().map(ToString::to_string).collect();
    let words: Vec<&str> = mods.iter().map(String::as_str).collect();
    let span = stage
        .modifiers
        .first()
        .map(syn::Ident::span)
        .unwrap_or_else(|| stage.kind.span());
    let shapes: Vec<String> = SHAPES
        .iter()
        .map(|shape| format!("`{NAME}({}f)`", shape.written))
        .collect();
    checks.error(
        span,
        format!(
            "`{}` is not a stage shape; the shapes are {}",
            if written.is_empty() {
                words.join(" ")
            } else {
                written.join(" ")
            },
            and_list(&shapes),
        ),
    );
    // Best effort: go on with the shape closest to what was meant.
    let closest: &[&str] = if mods.contains("async") {
        &["async"]
    } else {
        &[]
    };
    SHAPES
        .iter()
        .find(|shape| shape.modifiers == closest)
        .unwrap_or(&SHAPES[0])
}

/// A process stage runs a named `fn` (found by name in the worker) on a `ProcessPool`.
fn process_checks(stage: &Stage, func: &Expr, options: &Options, checks: &mut dyn Checks) {
    if !matches!(func, Expr::Path(_)) {
        checks.push(syn::Error::new_spanned(
            func,
            "a `process` stage runs in worker processes, and a closure (or any expression \
             other than a function's name) cannot cross a process boundary: write the \
             stage as a named `fn`, register it with `pipeline_runtime::process_fn!(name)`, \
             and write `pipe(process name, executor = pool)`",
        ));
    }
    if options.get("executor").is_none() {
        checks.error(
            stage.kind.span(),
            "a `process` stage needs the worker processes to run on: add \
             `executor = pool`, where `pool` is a `ProcessPool`"
                .to_owned(),
        );
    }
}

/// A checked `pipe` stage.
struct PipeStep {
    shape: &'static Shape,
    func: Expr,
    options: Options,
    /// Span of the stage name (`pipe`).
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl Planned for PipeStep {
    fn expand(&self, cx: &Context<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let shape = self.shape;
        let bounds = (shape.bounds)(&rt);
        let generics = shape
            .generics
            .iter()
            .map(|g| Ident::new(g, Span::call_site()));
        let method = Ident::new(shape.method, self.span);
        let guard = Ident::new("__pipeline_guard", self.span);
        let input = input_trait(cx);
        let (first, last) = edge_spans(&self.func);
        let arg = stage_arg(first, last);
        let setters = self.options.setters();
        let func = &self.func;
        let func_tokens = if annotated_closure(func) {
            // Not a closure to rustc any more: checked with the other arguments, so its
            // annotated type is known before the previous stage's item type.
            quote!({ #func })
        } else {
            quote!(#func)
        };
        // The call spans the whole stage, `pipe(..)`, so that errors about the stage as a
        // whole (what it produces, its future) point at it.
        let call = spanned_call(&guard, quote!(#func_tokens, #arg), self.args_span);
        quote! {
            #[allow(unused_braces)]
            let #stage = {
                #input
                fn #guard<T, A, F, U, #(#generics,)*>(
                    f: F,
                    stage: #rt::StageBuilder<T>,
                ) -> #rt::StageBuilder<U>
                where
                    #bounds
                    F: #rt::StageFn,
                    A: ::core::marker::Send + 'static,
                    T: ::core::marker::Send + 'static + __PipelineStageInput<A>,
                {
                    <T as __PipelineStageInput<A>>::__cast(stage).#method(f)
                }
                #call #setters
            };
        }
    }
}
