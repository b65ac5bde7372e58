//! The input as written: stages with their modifiers, positional arguments and options.
//!
//! `parse` builds it and `validate` reads it; it has its own file so that the stage kinds,
//! which check their own stages, can name it without depending on the parser.

use proc_macro2::Span;
use syn::Expr;

/// One stage as written: `kind(args)`.
#[derive(Clone)]
pub(crate) struct Stage {
    /// The stage's name, e.g. `pipe`.
    pub(crate) kind: syn::Ident,
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
    /// The arguments as written, for a structure (`merge`, `route`) whose arguments hold
    /// chains of stages; its kind parses them.
    pub(crate) raw: Option<proc_macro2::TokenStream>,
}

/// One `name = value` option.
#[derive(Clone)]
pub(crate) struct StageOption {
    pub(crate) name: syn::Ident,
    /// `None` when the value is missing (`concurrency =` or a bare `concurrency`).
    pub(crate) value: Option<Expr>,
}

/// The parsed pipeline: its stages, and the syntax errors found on the way.
#[derive(Default)]
pub(crate) struct Parsed {
    pub(crate) stages: Vec<Stage>,
    pub(crate) errors: Vec<syn::Error>,
}
