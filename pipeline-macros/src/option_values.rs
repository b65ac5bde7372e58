//! The options of a stage: what a kind declares of each ([`OptionSpec`]: name, [`ValueType`],
//! builder setter), and the checked values of one stage ([`OptionValues`]): literals checked
//! against the value types that the kinds share (a count of at least 1, a failure budget, an
//! order, a concurrency), and their expansion into the builder's setter calls.
//!
//! The option names are checked by `validate` (unknown, duplicate, missing value); the values
//! here, for every kind alike, before the kind's `plan` sees them.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Expr, Lit, UnOp};

use crate::expand::rt;
use crate::expr::{int_literal, is_float_literal, strip};

/// The type of an option's value: how a literal is checked, and how the value is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueType {
    /// Any expression, passed as written.
    Expr,
    /// A count: an integer literal below 1 is an error.
    AtLeastOne,
    /// A failure budget (`max_failures`): an integer literal is a count, a float literal a
    /// rate in (0, 1], anything else a `MaxFailures`.
    FailureBudget,
    /// An order: `input`, `completion`, or an `Order`.
    Order,
    /// A concurrency: a count (as [`ValueType::AtLeastOne`]) or `auto(lo..=hi)`, bounds for
    /// autotune.
    Concurrency,
}

/// One option of a stage kind.
pub(crate) struct OptionSpec {
    /// The option's name, as written: `concurrency`.
    pub(crate) name: &'static str,
    pub(crate) value: ValueType,
    /// A value shown in messages about a missing value: `concurrency = 4`.
    pub(crate) example: &'static str,
    /// The builder method that sets the option (`.concurrency(4)`), or `None` when the kind's
    /// expansion passes the value itself (a merge's `policy`, which has words of its own).
    pub(crate) setter: Option<&'static str>,
}

impl OptionSpec {
    pub(crate) const fn new(
        name: &'static str,
        value: ValueType,
        example: &'static str,
        setter: Option<&'static str>,
    ) -> Self {
        OptionSpec {
            name,
            value,
            example,
            setter,
        }
    }
}

/// A usable option value, with the span of its name (its setter call is spanned there).
#[derive(Clone)]
pub(crate) struct OptionValue {
    pub(crate) span: Span,
    pub(crate) value: Expr,
}

/// The checked options of one stage: one slot per option of its kind.
#[derive(Clone)]
pub(crate) struct OptionValues {
    specs: &'static [OptionSpec],
    values: Vec<Option<OptionValue>>,
}

impl OptionValues {
    pub(crate) fn new(specs: &'static [OptionSpec]) -> Self {
        OptionValues {
            specs,
            values: vec![None; specs.len()],
        }
    }

    /// Checks the value of an option whose name the validator let through, and keeps it when
    /// it can be used.
    pub(crate) fn check(&mut self, name: &syn::Ident, value: Expr, errors: &mut Vec<syn::Error>) {
        let Some(index) = self.specs.iter().position(|spec| name == spec.name) else {
            return;
        };
        let usable = match self.specs[index].value {
            ValueType::Expr | ValueType::Order => true,
            ValueType::AtLeastOne => at_least_one(name, &value, errors),
            ValueType::Concurrency => match auto_bounds(&value) {
                Some(Ok(_)) => true,
                Some(Err(())) => {
                    errors.push(syn::Error::new_spanned(
                        &value,
                        format!("`{name} = auto(..)` takes one range of bounds: `auto(1..=64)`"),
                    ));
                    false
                }
                None => at_least_one(name, &value, errors),
            },
            ValueType::FailureBudget => failure_budget_is_valid(name, &value, errors),
        };
        if usable {
            self.values[index] = Some(OptionValue {
                span: name.span(),
                value,
            });
        }
    }

    /// The value of the option `name`, when it was given and is usable.
    pub(crate) fn get(&self, name: &str) -> Option<&OptionValue> {
        let index = self.specs.iter().position(|spec| spec.name == name)?;
        self.values[index].as_ref()
    }

    /// Drops the option `name` (after an error about it, so that it is not expanded).
    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(index) = self.specs.iter().position(|spec| spec.name == name) {
            self.values[index] = None;
        }
    }

    /// `.setter(value)` for each given option that has a setter, in the kind's order.
    pub(crate) fn setters(&self) -> TokenStream {
        let mut out = TokenStream::new();
        for (spec, given) in self.specs.iter().zip(&self.values) {
            if let (Some(setter), Some(given)) = (spec.setter, given) {
                out.extend(setter_call(setter, spec.value, given));
            }
        }
        out
    }
}

/// `.setter(value)`, spanned at the option's name (or at `input`/`completion` for an order).
fn setter_call(setter: &str, value_type: ValueType, given: &OptionValue) -> TokenStream {
    let rt = rt();
    match value_type {
        ValueType::FailureBudget => {
            let method = Ident::new(setter, given.span);
            let value = match failure_budget(&given.value) {
                FailureBudget::Count(lit) => {
                    quote_spanned!(lit.span()=> #rt::MaxFailures::Count(#lit))
                }
                FailureBudget::Rate(lit) => {
                    quote_spanned!(lit.span()=> #rt::MaxFailures::rate(#lit))
                }
                FailureBudget::Expr => given.value.to_token_stream(),
            };
            quote!(.#method(#value))
        }
        ValueType::Order => match order_value(given) {
            OrderValue::Input(span) => {
                let method = Ident::new(setter, span);
                quote_spanned!(span=> .#method(#rt::Order::Input))
            }
            OrderValue::Completion(span) => {
                let method = Ident::new(setter, span);
                quote_spanned!(span=> .#method(#rt::Order::Completion))
            }
            OrderValue::Expr => plain_setter_call(setter, given),
        },
        ValueType::Concurrency => match auto_bounds(&given.value) {
            // `concurrency = auto(1..=64)` is the builder's `.concurrency_auto(1..=64)`.
            Some(Ok(bounds)) => {
                let method = Ident::new(&format!("{setter}_auto"), given.span);
                quote!(.#method(#bounds))
            }
            _ => plain_setter_call(setter, given),
        },
        ValueType::Expr | ValueType::AtLeastOne => plain_setter_call(setter, given),
    }
}

/// `auto(bounds)`: `Some(Ok(bounds))`; `auto` called otherwise: `Some(Err(()))`; any other
/// value: `None`.
fn auto_bounds(value: &Expr) -> Option<Result<&Expr, ()>> {
    let Expr::Call(call) = strip(value) else {
        return None;
    };
    let Expr::Path(p) = strip(&call.func) else {
        return None;
    };
    if p.qself.is_some() || !p.path.is_ident("auto") {
        return None;
    }
    match call.args.len() {
        1 => Some(Ok(&call.args[0])),
        _ => Some(Err(())),
    }
}

fn plain_setter_call(setter: &str, given: &OptionValue) -> TokenStream {
    let method = Ident::new(setter, given.span);
    let value = &given.value;
    quote!(.#method(#value))
}

/// Whether the value is an integer literal below 1 (where a count of at least 1 is due).
pub(crate) fn below_one(value: &Expr) -> bool {
    matches!(int_literal(value), Some((negative, n)) if negative || n == 0)
}

/// Reports a literal below 1; returns whether the value can be used.
fn at_least_one(name: &syn::Ident, value: &Expr, errors: &mut Vec<syn::Error>) -> bool {
    if below_one(value) {
        errors.push(syn::Error::new_spanned(
            value,
            format!("`{name}` must be at least 1"),
        ));
        return false;
    }
    true
}

/// What a failure budget's value is.
enum FailureBudget<'a> {
    /// An integer literal: at most this many failures.
    Count(&'a syn::LitInt),
    /// A float literal: a failure rate.
    Rate(&'a syn::LitFloat),
    /// Any other expression: a `MaxFailures`.
    Expr,
}

fn failure_budget(value: &Expr) -> FailureBudget<'_> {
    match strip(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => FailureBudget::Count(lit),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => FailureBudget::Rate(lit),
        _ => FailureBudget::Expr,
    }
}

/// Reports a rate outside (0, 1] and a negative literal; returns whether the value can be
/// used.
fn failure_budget_is_valid(name: &syn::Ident, value: &Expr, errors: &mut Vec<syn::Error>) -> bool {
    match failure_budget(value) {
        FailureBudget::Count(_) => true,
        FailureBudget::Rate(lit) => match lit.base10_parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= 1.0 => true,
            _ => {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!("`{name}` as a rate must be in (0, 1], found `{lit}`"),
                ));
                false
            }
        },
        FailureBudget::Expr => match strip(value) {
            Expr::Unary(syn::ExprUnary {
                op: UnOp::Neg(_), ..
            }) if int_literal(value).is_some() || is_float_literal(value) => {
                errors.push(syn::Error::new_spanned(
                    value,
                    format!(
                        "`{name}` cannot be negative: give a count (`{name} = 0` allows no \
                         failure) or a rate in (0, 1]"
                    ),
                ));
                false
            }
            _ => true,
        },
    }
}

/// What an order's value is.
pub(crate) enum OrderValue {
    /// `input`, with its span.
    Input(Span),
    /// `completion`, with its span.
    Completion(Span),
    /// Any other expression: an `Order`.
    Expr,
}

pub(crate) fn order_value(given: &OptionValue) -> OrderValue {
    if let Expr::Path(p) = strip(&given.value) {
        if p.qself.is_none() && p.path.segments.len() == 1 && p.path.leading_colon.is_none() {
            let ident = &p.path.segments[0].ident;
            if ident == "input" {
                return OrderValue::Input(ident.span());
            }
            if ident == "completion" {
                return OrderValue::Completion(ident.span());
            }
        }
    }
    OrderValue::Expr
}
