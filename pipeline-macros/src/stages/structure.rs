//! What `merge` and `route` share: reading their arguments (kept as tokens by the parser,
//! since chains of stages are not expressions), and the guard through which each of their
//! chains must produce the type of the first, with a message that names both.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::quote;

use crate::expand::{escape, rt};

/// Splits `pattern => chain` at its first top-level `=>`.
pub(super) fn split_arm(tokens: &[TokenTree]) -> Option<(TokenStream, TokenStream)> {
    let at = tokens.windows(2).position(|w| {
        matches!((&w[0], &w[1]), (TokenTree::Punct(a), TokenTree::Punct(b))
            if a.as_char() == '=' && a.spacing() == proc_macro2::Spacing::Joint && b.as_char() == '>')
    })?;
    Some((
        tokens[..at].iter().cloned().collect(),
        tokens[at + 2..].iter().cloned().collect(),
    ))
}

/// A trait `name<A>` implemented only by `A` itself, whose cast from `StageBuilder<Self>` to
/// `StageBuilder<A>` fails to compile with `message` (which may name `{Self}` and `{A}`)
/// when a chain produces another type than the first.
pub(super) fn same_type_trait(name: &Ident, message: &str, label: &str) -> TokenStream {
    let rt = rt();
    let message = escape(message)
        .replace("{{Self}}", "{Self}")
        .replace("{{A}}", "{A}");
    let label = escape(label)
        .replace("{{Self}}", "{Self}")
        .replace("{{A}}", "{A}");
    quote! {
        #[diagnostic::on_unimplemented(
            message = #message,
            label = #label,
            note = "every input of a merge and every branch of a route produces the same items"
        )]
        trait #name<A>: ::core::marker::Sized {
            fn __cast(stage: #rt::StageBuilder<Self>) -> #rt::StageBuilder<A>;
        }
        impl<X> #name<X> for X {
            fn __cast(stage: #rt::StageBuilder<X>) -> #rt::StageBuilder<X> {
                stage
            }
        }
    }
}

/// A readable form of a few tokens for labels: as written, without spaces, cut if long.
pub(super) fn written(tokens: &TokenStream) -> String {
    let text: String = tokens
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// An identifier at `span` (so that errors about what it names point there).
pub(super) fn ident(name: &str, span: Span) -> Ident {
    Ident::new(name, span)
}
