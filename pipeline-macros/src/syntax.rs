//! The input as written: stages with their modifiers, positional arguments and options.
//!
//! `parse` builds it and `validate` reads it; it has its own file so that the stage kinds,
//! which read their own stages, can name it without depending on the parser.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::Expr;

/// One stage as written: `name(args)`.
#[derive(Clone)]
pub(crate) struct Stage {
    /// The stage's name, e.g. `pipe`.
    pub(crate) name: syn::Ident,
    /// Span of the `( .. )` group, or of the name when there is none.
    pub(crate) args_span: Span,
    /// Whether the stage was written with parentheses.
    pub(crate) has_parens: bool,
    /// Modifier words before the first positional argument, in order.
    pub(crate) modifiers: Vec<syn::Ident>,
    /// Positional arguments (the stage function, the source, the batch size).
    pub(crate) positional: Vec<Expr>,
    /// `name = value` options, in order.
    pub(crate) options: Vec<StageOption>,
    /// Whether an argument could not be parsed (it is left out of `positional`/`options`).
    pub(crate) broken: bool,
    /// For a kind whose arguments are pieces of tokens (a structure: `merge`, `route`), the
    /// arguments other than its options and leading modifiers, which the kind reads (they
    /// hold chains of stages, which are not expressions). Empty for the other kinds.
    pub(crate) pieces: Vec<Piece>,
}

/// One `name = value` option.
#[derive(Clone)]
pub(crate) struct StageOption {
    pub(crate) name: syn::Ident,
    /// `None` when the value is missing (`concurrency =` or a bare `concurrency`).
    pub(crate) value: Option<Expr>,
}

/// One top-level comma-separated piece of a stage's arguments, as tokens, with its first span.
#[derive(Clone)]
pub(crate) struct Piece {
    pub(crate) tokens: Vec<TokenTree>,
    pub(crate) span: Span,
}

impl Piece {
    /// Splits tokens at top-level commas (groups are single tokens, so only their own level
    /// counts); empty pieces (a trailing comma) are left out.
    pub(crate) fn split(tokens: TokenStream) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut current: Vec<TokenTree> = Vec::new();
        for tt in tokens {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                pieces.extend(Piece::new(std::mem::take(&mut current)));
            } else {
                current.push(tt);
            }
        }
        pieces.extend(Piece::new(current));
        pieces
    }

    /// The piece of `tokens`, when there are any.
    pub(crate) fn new(tokens: Vec<TokenTree>) -> Option<Piece> {
        let span = tokens.first()?.span();
        Some(Piece { tokens, span })
    }

    pub(crate) fn stream(&self) -> TokenStream {
        self.tokens.iter().cloned().collect()
    }

    /// The span of the piece's last token (of a group's closing delimiter).
    pub(crate) fn last_span(&self) -> Span {
        self.tokens.last().map_or(self.span, |t| match t {
            TokenTree::Group(g) => g.span_close(),
            other => other.span(),
        })
    }

    /// The braces `{ .. }` when the piece is only that group.
    pub(crate) fn braces(&self) -> Option<&proc_macro2::Group> {
        match self.tokens.as_slice() {
            [TokenTree::Group(g)] if g.delimiter() == Delimiter::Brace => Some(g),
            _ => None,
        }
    }
}

/// The parsed pipeline: its stages, and the syntax errors found on the way.
#[derive(Default)]
pub(crate) struct Parsed {
    pub(crate) stages: Vec<Stage>,
    pub(crate) errors: Vec<syn::Error>,
}
