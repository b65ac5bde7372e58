//! `process_region(f, executor = pool)`: the stages that the registered region fn `f` adds
//! run, as a whole, in each worker of a `ProcessPool` (see the runtime's
//! `StageBuilder::process_region`).
//!
//! The region is a named `fn(StageBuilder<In>) -> StageBuilder<Out>` rather than stages
//! written inline: a worker is this program run again, and it finds what to run by name,
//! which a block inside `pipeline!` would not have; and the fn's signature writes the two
//! types that cross the process boundary, which are exactly the ones that must be serde.
//! The guard checks them at the region's boundary: `In` must be `Serialize` (it enters the
//! workers), `Out` must be `Deserialize` (it leaves them); the messages name the region and
//! say which way the value crosses.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Expr;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{Arg, CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::{edge_spans, escape, input_trait, rt, spanned_call, stage_arg, stage_var};
use crate::expr::describe;
use crate::option_values::{OptionSpec, OptionValues, ValueType};

const NAME: &str = "process_region";

pub(crate) static PROCESS_REGION: KindDescriptor = KindDescriptor {
    name: NAME,
    place: Place::Between,
    modifiers: &[],
    // The builder method, as `.method(f)` followed by the option setters.
    forms: &[Form::plain("process_region")],
    positional: REGION_FN,
    options: OPTIONS,
    plan,
};

/// The one positional argument of a region stage (`process_region`, `remote_region`).
pub(super) const REGION_FN: Positional = Positional::Exprs(&[Arg::new(
    "a region fn registered with `process_region!`",
    "f",
    "decode_region",
)]);

/// A region stage's fn and options, checked (shared by `process_region` and
/// `remote_region`).
pub(super) struct RegionStage {
    pub(super) method: &'static str,
    pub(super) func: Expr,
    pub(super) options: OptionValues,
    /// `stage N `name(f)``, for messages.
    pub(super) label: String,
    /// Span of the stage name.
    pub(super) span: Span,
    /// Span of the stage's `( .. )`.
    pub(super) args_span: Span,
}

/// Checks a region stage's fn: a path, since the workers find the region by name
/// (`not_a_path` says how to write it).
pub(super) fn region_stage(
    checked: CheckedArgs<'_>,
    name: &str,
    checks: &mut dyn Checks,
    not_a_path: &str,
) -> Option<RegionStage> {
    let CheckedArgs {
        stage,
        number,
        form,
        args,
        options,
    } = checked;
    let [func] = <[Expr; 1]>::try_from(args).ok()?;
    if !matches!(func, Expr::Path(_)) {
        checks.push(syn::Error::new_spanned(&func, not_a_path));
    }
    Some(RegionStage {
        method: form.method,
        label: format!("stage {number} `{name}({})`", describe(&func)),
        func,
        options,
        span: stage.name.span(),
        args_span: stage.args_span,
    })
}

/// The options, in the order their setters are called.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("executor", ValueType::Expr, "pool", Some("executor")),
    OptionSpec::new("name", ValueType::Expr, "\"decode\"", Some("name")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

fn plan(checked: CheckedArgs<'_>, checks: &mut dyn Checks) -> Option<CheckedStage> {
    let region = region_stage(
        checked,
        NAME,
        checks,
        "a process region runs in worker processes, which find it by name: write its \
         stages in a named `fn(StageBuilder<In>) -> StageBuilder<Out>`, register it \
         with `pipeline_runtime::process_region!(name)`, and write \
         `process_region(name, executor = pool)`",
    )?;
    if region.options.get("executor").is_none() {
        checks.error(
            region.span,
            "a process region needs the worker processes to run in: add \
             `executor = pool`, where `pool` is a `ProcessPool`"
                .to_owned(),
        );
    }
    Some(CheckedStage {
        label: region.label.clone(),
        stage: Box::new(CheckedRegion(region)),
    })
}

/// A checked `process_region` stage.
struct CheckedRegion(RegionStage);

impl ExpandStage for CheckedRegion {
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let label = escape(cx.label);
        let enters = format!(
            "`{{Self}}` enters {label}, so it crosses into worker processes, but it is not \
             `serde::Serialize`"
        );
        let leaves = format!(
            "`{{Self}}` leaves {label}, so it crosses back from worker processes, but it is not \
             `serde::Deserialize`"
        );
        let not_region = format!(
            "{label} takes a region fn, `fn(StageBuilder<In>) -> StageBuilder<Out>`, and \
             `{{Self}}` is not one"
        );
        let region = &self.0;
        let guard = Ident::new("__pipeline_guard", region.span);
        let method = Ident::new(region.method, region.span);
        let input = input_trait(cx);
        let (first, last) = edge_spans(&region.func);
        let arg = stage_arg(first, last);
        let func = &region.func;
        let call = spanned_call(&guard, quote!(#func, #arg), region.args_span);
        let setters = region.options.setters();
        quote! {
            let #stage = {
                #input
                #[diagnostic::on_unimplemented(
                    message = #enters,
                    label = "this value enters the process region",
                    note = "only the values entering and leaving a process region cross the \
                            process boundary (with serde): derive `serde::Serialize` and \
                            `serde::Deserialize` for `{Self}`, or let the region start from \
                            something that has them (a path, bytes)"
                )]
                trait __PipelineRegionInput: #rt::serde::Serialize {}
                #[diagnostic::do_not_recommend]
                impl<X: #rt::serde::Serialize> __PipelineRegionInput for X {}
                #[diagnostic::on_unimplemented(
                    message = #leaves,
                    label = "this value leaves the process region",
                    note = "the values between a region's stages stay in the worker; the one \
                            it ends with is sent back with serde: derive `serde::Serialize` \
                            and `serde::Deserialize` for `{Self}`, or end the region with \
                            a stage that produces such a value"
                )]
                trait __PipelineRegionOutput: #rt::serde::de::DeserializeOwned {}
                #[diagnostic::do_not_recommend]
                impl<X: #rt::serde::de::DeserializeOwned> __PipelineRegionOutput for X {}
                #[diagnostic::on_unimplemented(
                    message = #not_region,
                    label = "not a region fn",
                    note = "a region fn adds the region's stages to a builder of its input, \
                            e.g. `fn decode_region(paths: StageBuilder<PathBuf>) -> \
                            StageBuilder<Vec<Image>> { paths.pipe(read).pipe(decode).aggregate(32) }`"
                )]
                trait __PipelineRegionFn<A, U>:
                    ::core::ops::Fn(#rt::StageBuilder<A>) -> #rt::StageBuilder<U>
                {}
                #[diagnostic::do_not_recommend]
                impl<F, A, U> __PipelineRegionFn<A, U> for F
                where
                    F: ::core::ops::Fn(#rt::StageBuilder<A>) -> #rt::StageBuilder<U>,
                {}
                fn #guard<T, A, U, F>(f: F, stage: #rt::StageBuilder<T>) -> #rt::StageBuilder<U>
                where
                    F: __PipelineRegionFn<A, U> + #rt::StageFn,
                    A: ::core::marker::Send + 'static + __PipelineRegionInput,
                    U: ::core::marker::Send + 'static + __PipelineRegionOutput,
                    T: ::core::marker::Send + 'static + __PipelineStageInput<A>,
                {
                    <T as __PipelineStageInput<A>>::__cast(stage).#method(f)
                }
                #call #setters
            };
        }
    }
}
