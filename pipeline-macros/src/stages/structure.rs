//! What `merge` and `route` share: reading their arguments (kept as tokens by the parser,
//! since chains of stages are not expressions), and the guard through which each of their
//! chains must produce the type of the first, with a message that names both.

use proc_macro2::{Delimiter, Ident, Span, TokenStream, TokenTree};
use quote::quote;

use crate::expand::{escape, rt};

/// One top-level comma-separated piece of a structure's arguments, with its first span.
pub(super) struct Piece {
    pub(super) tokens: Vec<TokenTree>,
    pub(super) span: Span,
}

impl Piece {
    pub(super) fn stream(&self) -> TokenStream {
        self.tokens.iter().cloned().collect()
    }

    /// `name = value` (a lone `=`): the name and the value's tokens.
    pub(super) fn option(&self) -> Option<(Ident, TokenStream)> {
        match self.tokens.as_slice() {
            [TokenTree::Ident(name), TokenTree::Punct(eq), rest @ ..]
                if eq.as_char() == '='
                    && !(eq.spacing() == proc_macro2::Spacing::Joint
                        && matches!(rest.first(), Some(TokenTree::Punct(q)) if q.as_char() == '=' || q.as_char() == '>')) =>
            {
                Some((name.clone(), rest.iter().cloned().collect()))
            }
            _ => None,
        }
    }

    /// The braces `{ .. }` when the piece is only that group.
    pub(super) fn braces(&self) -> Option<&proc_macro2::Group> {
        match self.tokens.as_slice() {
            [TokenTree::Group(g)] if g.delimiter() == Delimiter::Brace => Some(g),
            _ => None,
        }
    }
}

/// Splits tokens at top-level commas (groups are single tokens, so only their own level
/// counts); empty pieces (a trailing comma) are left out.
pub(super) fn split_commas(tokens: TokenStream) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut current: Vec<TokenTree> = Vec::new();
    for tt in tokens {
        if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
            push_piece(&mut pieces, std::mem::take(&mut current));
        } else {
            current.push(tt);
        }
    }
    push_piece(&mut pieces, current);
    pieces
}

fn push_piece(pieces: &mut Vec<Piece>, tokens: Vec<TokenTree>) {
    if let Some(first) = tokens.first() {
        let span = first.span();
        pieces.push(Piece { tokens, span });
    }
}

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
