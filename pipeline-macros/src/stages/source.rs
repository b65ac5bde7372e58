//! `source(items)`: the first stage, what the pipeline iterates.
//!
//! Its forms are chosen by a modifier (`try`, `continuous`, `async`), or by the builder's
//! method name written as the stage name (`try_source(items)`). Its one option is the size of
//! its items, for the sink's `memory_limit`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Expr;

use crate::checked::{CheckedStage, ExpandContext, ExpandStage};
use crate::descriptor::{
    Arg, CheckedArgs, Checks, Form, KindDescriptor, Modifier, Place, Positional,
};
use crate::expand::{rt, stage_var};
use crate::option_values::{OptionSpec, OptionValues, ValueType};

const NAME: &str = "source";

pub(crate) static SOURCE: KindDescriptor = KindDescriptor {
    name: NAME,
    place: Place::First,
    modifiers: &[
        Modifier::new("async"),
        Modifier::new("try"),
        Modifier {
            word: "continuous",
            hint: " (`continuous` applies to `source`)",
        },
    ],
    forms: FORMS,
    positional: Positional::Exprs(&[Arg::new("the items", "items", "0..100")]),
    options: OPTIONS,
    plan,
};

/// The forms, each the builder method it calls on `PipelineBuilder::new()`; every method but
/// `source` itself is also a stage name (`try_source(items)`).
const FORMS: &[Form] = &[
    Form::plain(NAME),
    Form {
        modifiers: &["try"],
        method: "try_source",
        alias: true,
        bound: None,
    },
    Form {
        modifiers: &["continuous"],
        method: "continuous_source",
        alias: true,
        bound: None,
    },
    Form {
        modifiers: &["async"],
        method: "async_source",
        alias: true,
        bound: None,
    },
    Form {
        modifiers: &["async", "try"],
        method: "async_try_source",
        alias: true,
        bound: None,
    },
];

/// The source's options: the size of its items, for the sink's `memory_limit`.
const OPTIONS: &[OptionSpec] = &[OptionSpec::new(
    "item_bytes",
    ValueType::Expr,
    "|item| item.len()",
    Some("item_bytes"),
)];

fn plan(checked: CheckedArgs<'_>, _checks: &mut dyn Checks) -> Option<CheckedStage> {
    let CheckedArgs {
        stage,
        form,
        args,
        options,
        ..
    } = checked;
    let [items] = <[Expr; 1]>::try_from(args).ok()?;
    Some(CheckedStage {
        label: label(),
        stage: Box::new(CheckedSource {
            method: form.method,
            items,
            options,
            span: stage.name.span(),
        }),
    })
}

/// How the source is named in the messages of the stage after it.
fn label() -> String {
    format!("`{NAME}`")
}

/// A checked source.
struct CheckedSource {
    method: &'static str,
    items: Expr,
    options: OptionValues,
    /// The span of the stage name.
    span: Span,
}

impl ExpandStage for CheckedSource {
    fn expand(&self, _cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        let method = Ident::new(self.method, self.span);
        let items = &self.items;
        let setters = self.options.setters();
        quote_spanned! {self.span=>
            let #stage = #rt::PipelineBuilder::new().#method(#items) #setters;
        }
    }
}

/// Stands in for a missing source: a builder of the right type that fails to build.
struct Missing;

impl ExpandStage for Missing {
    fn expand(&self, _cx: &ExpandContext<'_>) -> TokenStream {
        let rt = rt();
        let stage = stage_var();
        quote! {
            let #stage = #rt::missing_source();
        }
    }
}

pub(crate) fn stand_in() -> CheckedStage {
    CheckedStage {
        label: label(),
        stage: Box::new(Missing),
    }
}
