//! `remote_region(f, workers = w)`: the registered region fn `f` run in local lanes first
//! and, for the deficit, in remote workers over Arrow Flight (see the runtime's
//! `StageBuilder::remote_region`, feature `remote`). `workers` is a `RemoteWorkers`,
//! passed by reference; the other options are the builder's setters.

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::Expr;

use super::region::{region_stage, RegionStage, REGION_FN};
use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{CheckedArgs, Checks, Form, KindDescriptor, Place};
use crate::expand::{edge_spans, input_trait, rt, spanned_call, stage_arg, stage_var};
use crate::option_values::{OptionSpec, ValueType};

const NAME: &str = "remote_region";

pub(crate) static REMOTE_REGION: KindDescriptor = KindDescriptor {
    name: NAME,
    place: Place::Between,
    modifiers: &[],
    forms: &[Form::plain("remote_region")],
    positional: REGION_FN,
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
    let region = region_stage(
        checked,
        NAME,
        checks,
        "a remote region runs in workers, which find it by name: write its stages in a \
         named `fn(StageBuilder<In>) -> StageBuilder<Out>`, register it with \
         `pipeline_runtime::process_region!(name)`, and write \
         `remote_region(name, workers = workers)`",
    )?;
    let Some(workers) = region.options.get("workers").map(|w| w.value.clone()) else {
        checks.error(
            region.span,
            "a remote region needs its workers: add `workers = w`, where `w` is a \
             `pipeline_runtime::remote::RemoteWorkers`"
                .to_owned(),
        );
        return None;
    };
    Some(CheckedStage {
        label: region.label.clone(),
        stage: Box::new(CheckedRemote { region, workers }),
    })
}

/// A checked `remote_region` stage.
struct CheckedRemote {
    region: RegionStage,
    workers: Expr,
}

impl ExpandStage for CheckedRemote {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let region = &self.region;
        let guard = Ident::new("__pipeline_guard", region.span);
        let method = Ident::new(region.method, region.span);
        let input = input_trait(cx);
        let (first, last) = edge_spans(&region.func);
        let arg = stage_arg(first, last);
        let func = &region.func;
        let workers = &self.workers;
        let call = spanned_call(&guard, quote!(#func, &(#workers), #arg), region.args_span);
        let setters = region.options.setters();
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
