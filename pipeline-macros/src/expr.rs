//! What the macro can tell about a user's expression without types: literal values (for
//! `concurrency = 0` or `aggregate(0)`) and short descriptions for stage labels.

use syn::{Expr, Lit, UnOp};

/// Looks through invisible and parenthesised groups.
pub(crate) fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => strip(&g.expr),
        Expr::Paren(p) => strip(&p.expr),
        other => other,
    }
}

/// `Some((negative, magnitude))` for an integer literal, possibly negated.
pub(crate) fn int_literal(expr: &Expr) -> Option<(bool, u128)> {
    match strip(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => Some((false, lit.base10_parse::<u128>().unwrap_or(u128::MAX))),
        Expr::Unary(syn::ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => int_literal(expr).map(|(neg, n)| (!neg, n)),
        _ => None,
    }
}

/// Whether the expression is a float literal, possibly behind unary operators.
pub(crate) fn is_float_literal(expr: &Expr) -> bool {
    match strip(expr) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(_), ..
        }) => true,
        Expr::Unary(syn::ExprUnary { expr, .. }) => is_float_literal(expr),
        _ => false,
    }
}

/// A short description of an argument for messages: a path as written, a literal, or `..`.
pub(crate) fn describe(expr: &Expr) -> String {
    match strip(expr) {
        Expr::Path(p) if p.qself.is_none() => {
            let text: String = quote::ToTokens::to_token_stream(&p.path)
                .to_string()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if text.chars().count() > 40 {
                "..".to_owned()
            } else {
                text
            }
        }
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.to_string(),
        Expr::Closure(_) => "|..| ..".to_owned(),
        _ => "..".to_owned(),
    }
}
