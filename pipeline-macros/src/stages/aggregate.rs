//! `aggregate(n)`: a stage that groups items into batches (`Vec`s) of `n`.
//!
//! Its options are shared with `aggregate_with` and `aggregate_by`, which group with a custom
//! aggregator and by key.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Expr;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{Arg, CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expand::stage_var;
use crate::expr::describe;
use crate::option_values::{OptionSpec, OptionValues, ValueType};

pub(crate) static AGGREGATE: KindDescriptor = KindDescriptor {
    name: "aggregate",
    place: Place::Between,
    modifiers: &[],
    // The builder method, as `.method(n)` followed by the option setters.
    forms: &[Form::plain("aggregate")],
    positional: Positional::Exprs(&[Arg::count("the batch size", "n", "32")]),
    options: OPTIONS,
    plan,
};

/// The options of `aggregate`, `aggregate_with` and `aggregate_by`, in the order their
/// setters are called on the options value.
pub(super) const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new("drop_last", ValueType::Expr, "true", Some("drop_last")),
    OptionSpec::new("name", ValueType::Expr, "\"decode\"", Some("name")),
    OptionSpec::new("buffer", ValueType::AtLeastOne, "4", Some("buffer")),
];

/// What the type error of the stage after an aggregation says.
pub(super) const BATCHES_NOTE: &str = "`aggregate` produces batches (`Vec`s) of items: make \
     the stage take the batch, or add `-> disaggregate()` before it";

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    let [size] = <[Expr; 1]>::try_from(checked.args).ok()?;
    Some(CheckedStage {
        label: format!("stage {} `aggregate({})`", checked.number, describe(&size)),
        stage: Box::new(CheckedAggregate {
            method: checked.form.method,
            arg: size,
            options: checked.options,
            span: checked.stage.name.span(),
        }),
    })
}

/// A checked `aggregate` or `aggregate_with` stage: `.method(arg)` and the option setters.
pub(super) struct CheckedAggregate {
    pub(super) method: &'static str,
    /// The batch size, or the aggregator.
    pub(super) arg: Expr,
    pub(super) options: OptionValues,
    /// Span of the stage name.
    pub(super) span: Span,
}

impl ExpandStage for CheckedAggregate {
    fn expand(&self, _cx: &ExpandContext<'_>) -> TokenStream {
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let setters = self.options.setters();
        let arg = &self.arg;
        quote! {
            let #stage = #stage.#method(#arg) #setters;
        }
    }

    fn note_for_next(&self) -> Option<&'static str> {
        Some(BATCHES_NOTE)
    }
}
