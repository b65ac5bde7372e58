//! `remote_region(f, workers = w)`: the registered region fn `f` run in local lanes first
//! and, for the deficit, in remote workers over Arrow Flight (see the runtime's
//! `StageBuilder::remote_region`, feature `remote`). `workers` is a `RemoteWorkers`,
//! passed by reference; the other options are the builder's setters.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Expr;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{Arg, CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::{edge_spans, input_trait, rt, spanned_call, stage_arg, stage_var};
use crate::expr::describe;
use crate::option_values::{OptionSpec, OptionValues, ValueType};

const NAME: &str = "remote_region";

pub(crate) static REMOTE_REGION: KindDescriptor = KindDescriptor {
    name: NAME,
    place: Place::Between,
    modifiers: &[],
    forms: &[Form::plain("remote_region")],
    positional: Positional::Exprs(&[Arg::new(
        "a region fn registered with `process_region!`",
        "f",
        "decode_region",
    )]),
    options: OPTIONS,
    plan,
};

/// The options, in the order their setters are called (`workers` is the method's argument).
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("workers", ValueType::Expr, "workers", None),
    OptionSpec::new("order", ValueType::Order, "input", Some("order")),
    OptionSpec::new("name", ValueType::Expr, "\"decode\"", Some("name")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

fn plan(checked: CheckedArgs<'_>, checks: &mut dyn Checks) -> Option<CheckedStage> {
    let CheckedArgs {
        stage,
        number,
        form,
        args,
        options,
    } = checked;
    let [func] = <[Expr; 1]>::try_from(args).ok()?;
    if !matches!(func, Expr::Path(_)) {
        checks.push(syn::Error::new_spanned(
            &func,
            "a remote region runs in workers, which find it by name: write its stages in a \
             named `fn(StageBuilder<In>) -> StageBuilder<Out>`, register it with \
             `pipeline_runtime::process_region!(name)`, and write \
             `remote_region(name, workers = workers)`",
        ));
    }
    let Some(workers) = options.get("workers").map(|w| w.value.clone()) else {
        checks.error(
            stage.name.span(),
            "a remote region needs its workers: add `workers = w`, where `w` is a \
             `pipeline_runtime::remote::RemoteWorkers`"
                .to_owned(),
        );
        return None;
    };
    let label = format!("stage {number} `{NAME}({})`", describe(&func));
    Some(CheckedStage {
        label,
        stage: Box::new(CheckedRemote {
            method: form.method,
            func,
            workers,
            options,
            span: stage.name.span(),
            args_span: stage.args_span,
        }),
    })
}

/// A checked `remote_region` stage.
struct CheckedRemote {
    method: &'static str,
    func: Expr,
    workers: Expr,
    options: OptionValues,
    /// Span of the stage name.
    span: Span,
    /// Span of the stage's `( .. )`.
    args_span: Span,
}

impl ExpandStage for CheckedRemote {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let guard = Ident::new("__pipeline_guard", self.span);
        let method = Ident::new(self.method, self.span);
        let input = input_trait(cx);
        let (first, last) = edge_spans(&self.func);
        let arg = stage_arg(first, last);
        let func = &self.func;
        let workers = &self.workers;
        let call = spanned_call(&guard, quote!(#func, &(#workers), #arg), self.args_span);
        let setters = self.options.setters();
        quote! {
            let #stage = {
                #input
                fn #guard<T, A, U, F>(
                    f: F,
                    workers: &#rt::remote::RemoteWorkers,
                    stage: #rt::StageBuilder<T>,
                ) -> #rt::StageBuilder<U>
                where
                    F: ::core::ops::Fn(#rt::StageBuilder<A>) -> #rt::StageBuilder<U>
                        + ::core::marker::Send + ::core::marker::Sync + 'static,
                    A: ::core::marker::Send + 'static + #rt::serde::Serialize,
                    U: ::core::marker::Send + 'static + #rt::serde::de::DeserializeOwned,
                    T: ::core::marker::Send + 'static + __PipelineStageInput<A>,
                {
                    <T as __PipelineStageInput<A>>::__cast(stage).#method(f, workers)
                }
                #call #setters
            };
        }
    }
}
