//! `pipe(f)`: a stage that applies a function to each item.
//!
//! The function's shape is chosen by modifiers (`pipe(try async f)`), or by the builder's
//! method name written as the stage name (`async_try_pipe(f)`). Each shape is one row of
//! [`FORMS`]: the modifiers that select it, the builder method it calls and the runtime's
//! trait that bounds the function (the method's bound too, so it is stated once, in the
//! runtime). The options, and the setters they become, are [`OPTIONS`].
//!
//! Each stage expands to a guard function (see `expand`): its where-clause names the
//! function's argument type from the function alone, then requires the previous stage's items
//! to be of that type, through a trait whose diagnostic names both stages and both types.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::{Expr, Lit};

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{
    Arg, CheckedArgs, Checks, Form, KindDescriptor, Modifier, Place, Positional,
};
use crate::expand::{
    annotated_closure, edge_spans, input_trait, rt, spanned_call, stage_arg, stage_var,
};
use crate::expr::{describe, int_literal};
use crate::option_values::{order_value, OptionSpec, OptionValues, OrderValue, ValueType};
use crate::syntax::Stage;

const NAME: &str = "pipe";

pub(crate) static PIPE: KindDescriptor = KindDescriptor {
    name: NAME,
    place: Place::Between,
    modifiers: &[
        Modifier::new("async"),
        Modifier::new("process"),
        Modifier::new("try"),
        Modifier {
            word: "opt",
            hint: " (it applies to `pipe`)",
        },
        Modifier {
            word: "flat",
            hint: " (it applies to `pipe`)",
        },
    ],
    forms: FORMS,
    positional: Positional::Exprs(&[Arg::new("a function", "f", "f")]),
    options: OPTIONS,
    plan,
};

/// Every form, in the order messages list them; the first is the plain `pipe(f)`. Each row is
/// the modifiers that select it (in the order they are written), the builder method it calls
/// (also a stage name: `try_pipe(f)` is `pipe(try f)`), and the runtime's trait bounding the
/// function (`__private::TryPipeFn`, which the method takes too). The modifiers say the rest: `async` runs on the async runtime (so `executor` does
/// not apply), `flat` produces any number of items per item, `process` runs in worker
/// processes.
const FORMS: &[Form] = &[
    Form {
        modifiers: &[],
        method: "pipe",
        alias: false,
        bound: Some("PipeFn"),
    },
    Form {
        modifiers: &["try"],
        method: "try_pipe",
        alias: true,
        bound: Some("TryPipeFn"),
    },
    Form {
        modifiers: &["opt"],
        method: "opt_pipe",
        alias: true,
        bound: Some("OptPipeFn"),
    },
    Form {
        modifiers: &["flat"],
        method: "flat_pipe",
        alias: true,
        bound: Some("FlatPipeFn"),
    },
    Form {
        modifiers: &["try", "flat"],
        method: "try_flat_pipe",
        alias: true,
        bound: Some("TryFlatPipeFn"),
    },
    Form {
        modifiers: &["async"],
        method: "async_pipe",
        alias: true,
        bound: Some("AsyncPipeFn"),
    },
    Form {
        modifiers: &["async", "try"],
        method: "async_try_pipe",
        alias: true,
        bound: Some("AsyncTryPipeFn"),
    },
    Form {
        modifiers: &["async", "opt"],
        method: "async_opt_pipe",
        alias: true,
        bound: Some("AsyncOptPipeFn"),
    },
    Form {
        modifiers: &["async", "flat"],
        method: "async_flat_pipe",
        alias: true,
        bound: Some("AsyncFlatPipeFn"),
    },
    Form {
        modifiers: &["async", "try", "flat"],
        method: "async_try_flat_pipe",
        alias: true,
        bound: Some("AsyncTryFlatPipeFn"),
    },
    Form {
        modifiers: &["process"],
        method: "process_pipe",
        alias: true,
        bound: Some("ProcessPipeFn"),
    },
    Form {
        modifiers: &["process", "try"],
        method: "process_try_pipe",
        alias: true,
        bound: Some("ProcessTryPipeFn"),
    },
    Form {
        modifiers: &["process", "opt"],
        method: "process_opt_pipe",
        alias: true,
        bound: Some("ProcessOptPipeFn"),
    },
    Form {
        modifiers: &["process", "flat"],
        method: "process_flat_pipe",
        alias: true,
        bound: Some("ProcessFlatPipeFn"),
    },
    Form {
        modifiers: &["process", "try", "flat"],
        method: "process_try_flat_pipe",
        alias: true,
        bound: Some("ProcessTryFlatPipeFn"),
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
        ValueType::FailureBudget,
        "10",
        Some("max_failures"),
    ),
    OptionSpec::new("executor", ValueType::Expr, "pool", Some("executor")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

fn plan(checked: CheckedArgs<'_>, checks: &mut dyn Checks) -> Option<CheckedStage> {
    let CheckedArgs {
        stage,
        number,
        form,
        args,
        mut options,
    } = checked;
    if form.has("async") {
        if let Some(executor) = options.get("executor") {
            checks.error(
                executor.span,
                format!(
                    "`executor` does not apply to an async stage: `{NAME}({}..)` runs on the \
                     pipeline's async runtime, and executors run synchronous stages",
                    form.written()
                ),
            );
            options.remove("executor");
        }
    }
    if form.has("flat") {
        if let (Some(OrderValue::Input(order_span)), Some(c)) = (
            options.get("order").map(order_value),
            options.get("concurrency"),
        ) {
            if matches!(int_literal(&c.value), Some((false, n)) if n > 1) {
                checks.error(
                    order_span,
                    "`order = input` is not supported on a one-to-many stage (`flat`) with \
                     concurrency above 1: use `order = completion` or `concurrency = 1`"
                        .to_owned(),
                );
                options.remove("order");
            }
        }
    }
    let [func] = <[Expr; 1]>::try_from(args).ok()?;
    if form.has("process") {
        process_checks(stage, &func, &options, checks);
    }
    let label = match options.get("name").map(|given| &given.value) {
        Some(Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        })) => format!("stage {number} `{}`", s.value()),
        _ => format!(
            "stage {number} `{NAME}({}{})`",
            form.written(),
            describe(&func)
        ),
    };
    Some(CheckedStage {
        label,
        stage: Box::new(CheckedPipe {
            form,
            func,
            options,
            span: stage.name.span(),
            args_span: stage.args_span,
        }),
    })
}

/// A process stage runs a named `fn` (found by name in the worker) on a `ProcessPool`.
fn process_checks(stage: &Stage, func: &Expr, options: &OptionValues, checks: &mut dyn Checks) {
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
            stage.name.span(),
            "a `process` stage needs the worker processes to run on: add \
             `executor = pool`, where `pool` is a `ProcessPool`"
                .to_owned(),
        );
    }
}

/// A checked `pipe` stage.
struct CheckedPipe {
    form: &'static Form,
    func: Expr,
    options: OptionValues,
    /// Span of the stage name (`pipe`).
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl ExpandStage for CheckedPipe {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let form = self.form;
        // The function's bound is the runtime's trait for the form (the builder's method
        // takes the same); `Item` and `ProcessInput` only restate parts of it with messages
        // that name the stage's items.
        let bound = Ident::new(form.bound.unwrap_or("PipeFn"), Span::call_site());
        let input_crosses = form
            .has("process")
            .then(|| quote!(A: #rt::ProcessInput,));
        let bounds = quote! {
            F: #rt::#bound<A, Item = U>,
            U: #rt::Item,
            #input_crosses
        };
        let method = Ident::new(form.method, self.span);
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
                fn #guard<T, A, F, U>(
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
