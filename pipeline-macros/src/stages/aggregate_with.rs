//! `aggregate_with(aggregator)`: a stage that groups items with a custom aggregator.
//!
//! It takes the options of `aggregate` and expands the same way, to another builder method.

use syn::Expr;

use super::aggregate::{CheckedAggregate, OPTIONS};
use crate::checked::CheckedStage;
use crate::descriptor::{Arg, CheckedArgs, Checks, Form, KindDescriptor, Place, Positional};
use crate::expr::describe;

pub(crate) static AGGREGATE_WITH: KindDescriptor = KindDescriptor {
    name: "aggregate_with",
    place: Place::Between,
    modifiers: &[],
    // The builder method, as `.method(aggregator)` followed by the option setters.
    forms: &[Form::plain("aggregate_with")],
    positional: Positional::Exprs(&[Arg::new("an aggregator", "a", "..")]),
    options: OPTIONS,
    plan,
};

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    let [aggregator] = <[Expr; 1]>::try_from(checked.args).ok()?;
    Some(CheckedStage {
        label: format!(
            "stage {} `aggregate_with({})`",
            checked.number,
            describe(&aggregator)
        ),
        stage: Box::new(CheckedAggregate {
            method: checked.form.method,
            arg: aggregator,
            options: checked.options,
            span: checked.stage.name.span(),
        }),
    })
}
