//! The checked options of one stage ([`Options`]): their values checked against the value
//! types that the kinds share (a count of at least 1, a failure budget, an order), and their
//! expansion into the builder's setter calls, as the kind's [`OptionSpec`]s say.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Expr, Lit, UnOp};

use super::kind::{Checks, OptionSpec, ValueType};
use crate::expand::rt;
use crate::expr::{int_literal, is_float_literal, strip};
use crate::syntax::Stage;

/// A usable option value, with the span of its name (its setter call is spanned there).
#[derive(Clone)]
pub(crate) struct Given {
    pub(crate) span: Span,
    pub(crate) value: Expr,
}

/// The checked options of one stage: one slot per option of its kind.
#[derive(Clone)]
pub(crate) struct Options {
    specs: &'static [OptionSpec],
    values: Vec<Option<Given>>,
}

impl Options {
    pub(crate) fn new(specs: &'static [OptionSpec]) -> Self {
        Options {
            specs,
            values: vec![None; specs.len()],
        }
    }

    /// Checks every option of `stage`: the names first (through `checks`), then the values.
    pub(crate) fn checked(
        stage: &Stage,
        specs: &'static [OptionSpec],
        checks: &mut dyn Checks,
    ) -> Self {
        let mut options = Options::new(specs);
        for (name, value) in checks.options(stage, specs) {
            options.check(&name, value, checks);
        }
        options
    }

    /// Checks the value of an option that `Checks::options` let through, and keeps it when it
    /// can be used.
    pub(crate) fn check(&mut self, name: &syn::Ident, value: Expr, checks: &mut dyn Checks) {
        let Some(index) = self.specs.iter().position(|spec| name == spec.name) else {
            return;
        };
        let usable = match self.specs[index].value {
            ValueType::Expr | ValueType::Order => true,
            ValueType::AtLeastOne => at_least_one(name, &value, checks),
            ValueType::Concurrency => match auto_bounds(&value) {
                Some(Ok(_)) => true,
                Some(Err(())) => {
                    checks.push(syn::Error::new_spanned(
                        &value,
                        format!("`{name} = auto(..)` takes one range of bounds: `auto(1..=64)`"),
                    ));
                    false
                }
                None => at_least_one(name, &value, checks),
            },
            ValueType::Budget => budget_is_valid(name, &value, checks),
        };
        if usable {
            self.values[index] = Some(Given {
                span: name.span(),
                value,
            });
        }
    }

    /// The value of the option `name`, when it was given and is usable.
    pub(crate) fn get(&self, name: &str) -> Option<&Given> {
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
fn setter_call(setter: &str, value_type: ValueType, given: &Given) -> TokenStream {
    let rt = rt();
    match value_type {
        ValueType::Budget => {
            let method = Ident::new(setter, given.span);
            let value = match budget(&given.value) {
                Budget::Count(lit) => quote_spanned!(lit.span()=> #rt::MaxFailures::Count(#lit)),
                Budget::Rate(lit) => quote_spanned!(lit.span()=> #rt::MaxFailures::rate(#lit)),
                Budget::Expr => given.value.to_token_stream(),
            };
            quote!(.#method(#value))
        }
        ValueType::Order => match order(given) {
            Order::Input(span) => {
                let method = Ident::new(setter, span);
                quote_spanned!(span=> .#method(#rt::Order::Input))
            }
            Order::Completion(span) => {
                let method = Ident::new(setter, span);
                quote_spanned!(span=> .#method(#rt::Order::Completion))
            }
            Order::Expr => plain_setter_call(setter, given),
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

fn plain_setter_call(setter: &str, given: &Given) -> TokenStream {
    let method = Ident::new(setter, given.span);
    let value = &given.value;
    quote!(.#method(#value))
}

/// Reports a literal below 1; returns whether the value can be used.
fn at_least_one(name: &syn::Ident, value: &Expr, checks: &mut dyn Checks) -> bool {
    match int_literal(value) {
        Some((negative, n)) if negative || n == 0 => {
            checks.push(syn::Error::new_spanned(
                value,
                format!("`{name}` must be at least 1"),
            ));
            false
        }
        _ => true,
    }
}

/// What a failure budget's value is.
enum Budget<'a> {
    /// An integer literal: at most this many failures.
    Count(&'a syn::LitInt),
    /// A float literal: a failure rate.
    Rate(&'a syn::LitFloat),
    /// Any other expression: a `MaxFailures`.
    Expr,
}

fn budget(value: &Expr) -> Budget<'_> {
    match strip(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => Budget::Count(lit),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => Budget::Rate(lit),
        _ => Budget::Expr,
    }
}

/// Reports a rate outside (0, 1] and a negative literal; returns whether the value can be
/// used.
fn budget_is_valid(name: &syn::Ident, value: &Expr, checks: &mut dyn Checks) -> bool {
    match budget(value) {
        Budget::Count(_) => true,
        Budget::Rate(lit) => match lit.base10_parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= 1.0 => true,
            _ => {
                checks.error(
                    lit.span(),
                    format!("`{name}` as a rate must be in (0, 1], found `{lit}`"),
                );
                false
            }
        },
        Budget::Expr => match strip(value) {
            Expr::Unary(syn::ExprUnary {
                op: UnOp::Neg(_), ..
            }) if int_literal(value).is_some() || is_float_literal(value) => {
                checks.push(syn::Error::new_spanned(
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
pub(crate) enum Order {
    /// `input`, with its span.
    Input(Span),
    /// `completion`, with its span.
    Completion(Span),
    /// Any other expression: an `Order`.
    Expr,
}

pub(crate) fn order(given: &Given) -> Order {
    if let Expr::Path(p) = strip(&given.value) {
        if p.qself.is_none() && p.path.segments.len() == 1 && p.path.leading_colon.is_none() {
            let ident = &p.path.segments[0].ident;
            if ident == "input" {
                return Order::Input(ident.span());
            }
            if ident == "completion" {
                return Order::Completion(ident.span());
            }
        }
    }
    Order::Expr
}
