//! Phase 1: tokens → a syntax tree of stages.
//!
//! The grammar is deliberately loose here: `stage (-> stage)*`, where a stage is a name and an
//! optional parenthesised argument list of modifiers, positional expressions and `name = value`
//! options. Whether a name, modifier or option means anything is decided by `validate`; the
//! parser asks the list of kinds it is handed ([`Kinds`]) only which words are modifiers and
//! which are option names, because that decides how `pipe(flat f)` and `pipe(f, concurrency)`
//! are read, and which stages are structures, whose arguments other than options (chains of
//! stages, a `{ .. }` of branches) it keeps as tokens for their kind to read. It names no
//! kind itself, so the kinds (and `validate`, which parses a structure's chains for them) can
//! depend on it, and not the reverse.
//!
//! Parsing never stops at the first mistake: every error is recorded with the span of the
//! offending tokens, and the parser goes on at the next stage (or the next argument), so that
//! the expansion can still cover the rest of the pipeline.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::parse::{ParseStream, Parser};
use syn::Expr;

use crate::descriptor::Kinds;
use crate::syntax::{Parsed, Piece, Stage, StageOption};

/// Parses the macro input (or a chain inside a structure) with the vocabulary of `kinds`.
/// Never fails as a whole and never panics: mistakes are recorded in [`Parsed::errors`], each
/// spanned at the tokens it is about.
pub(crate) fn parse(input: TokenStream, kinds: Kinds) -> Parsed {
    let mut parsed = Parsed::default();
    let tokens: Vec<TokenTree> = input.into_iter().collect();
    for segment in split_arrows(&tokens, &mut parsed.errors) {
        parse_segment(segment, kinds, &mut parsed);
    }
    parsed
}

/// A run of tokens between two `->`, with the span to blame if it is empty.
struct Segment<'a> {
    tokens: &'a [TokenTree],
    blame: Span,
}

fn is_arrow(tokens: &[TokenTree], i: usize) -> bool {
    matches!(
        (tokens.get(i), tokens.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == '-' && a.spacing() == proc_macro2::Spacing::Joint && b.as_char() == '>'
    )
}

fn split_arrows<'a>(tokens: &'a [TokenTree], errors: &mut Vec<syn::Error>) -> Vec<Segment<'a>> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut last_arrow: Option<Span> = None;
    while i < tokens.len() {
        if is_arrow(tokens, i) {
            let arrow = tokens[i].span();
            segments.push(Segment {
                tokens: &tokens[start..i],
                blame: last_arrow.unwrap_or(arrow),
            });
            last_arrow = Some(arrow);
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    if let Some(arrow) = last_arrow {
        segments.push(Segment {
            tokens: &tokens[start..],
            blame: arrow,
        });
    } else if !tokens.is_empty() {
        segments.push(Segment {
            tokens,
            blame: tokens[0].span(),
        });
    }
    // An empty segment is a stray `->`: report it once, at the arrow.
    segments.retain(|s| {
        if s.tokens.is_empty() {
            errors.push(syn::Error::new(
                s.blame,
                "expected a stage on each side of `->`, e.g. `-> pipe(f)`",
            ));
            false
        } else {
            true
        }
    });
    segments
}

/// A segment is normally one stage; more than one means a missing `->`, which is reported
/// and then read as if it were there.
fn parse_segment(segment: Segment<'_>, kinds: Kinds, parsed: &mut Parsed) {
    let tokens = segment.tokens;
    let mut i = 0;
    let mut first = true;
    while i < tokens.len() {
        let name = match &tokens[i] {
            TokenTree::Ident(ident) => ident.clone(),
            other => {
                parsed.errors.push(syn::Error::new(
                    other.span(),
                    format!(
                        "expected a stage such as `pipe(f)`, found `{}`",
                        short(&other.to_string())
                    ),
                ));
                // Skip to the next identifier: it may start a stage.
                i += 1;
                while i < tokens.len() && !matches!(tokens[i], TokenTree::Ident(_)) {
                    i += 1;
                }
                first = false;
                continue;
            }
        };
        if !first {
            parsed.errors.push(syn::Error::new(
                name.span(),
                format!("expected `->` before `{name}`: stages are joined by `->`"),
            ));
        }
        first = false;
        i += 1;
        let mut stage = Stage {
            name: name.clone(),
            args_span: name.span(),
            has_parens: false,
            modifiers: Vec::new(),
            positional: Vec::new(),
            options: Vec::new(),
            broken: false,
            pieces: Vec::new(),
        };
        if let Some(TokenTree::Group(group)) = tokens.get(i) {
            i += 1;
            stage.args_span = group.span();
            if group.delimiter() == Delimiter::Parenthesis {
                stage.has_parens = true;
                if kinds.takes_pieces(&name.to_string()) {
                    parse_pieces(group.stream(), &mut stage, kinds, &mut parsed.errors);
                } else {
                    parse_args(group.stream(), &mut stage, kinds, &mut parsed.errors);
                }
            } else {
                parsed.errors.push(syn::Error::new(
                    group.span(),
                    format!("the arguments of `{name}` go in parentheses: `{name}(..)`"),
                ));
                stage.broken = true;
            }
        }
        parsed.stages.push(stage);
    }
}

fn short(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Parses `[modifiers] expr, expr, name = value, ..`, recording errors and resuming after the
/// next top-level comma.
fn parse_args(stream: TokenStream, stage: &mut Stage, kinds: Kinds, errors: &mut Vec<syn::Error>) {
    let parser = |input: ParseStream<'_>| -> syn::Result<()> {
        let mut index = 0usize;
        while !input.is_empty() {
            if let Err(e) = parse_one_arg(input, index, stage, kinds) {
                errors.push(e);
                stage.broken = true;
                skip_past_comma(input);
                index += 1;
                continue;
            }
            index += 1;
            if input.is_empty() {
                break;
            }
            if input.peek(syn::Token![,]) {
                input.parse::<syn::Token![,]>()?;
            } else {
                errors.push(input.error("expected `,` between the arguments of a stage"));
                stage.broken = true;
                skip_past_comma(input);
            }
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(stream) {
        errors.push(e);
        stage.broken = true;
    }
}

fn skip_past_comma(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
        }
        Ok(((), rest))
    });
}

fn peek_ident(input: ParseStream<'_>) -> Option<syn::Ident> {
    input.cursor().ident().map(|(ident, _)| ident)
}

/// Whether the tokens after an identifier make it an option: `name = value` (a lone `=`, not
/// `==` or `=>`), `name =` at the end, or a bare option name followed by `,` or the end.
fn option_ahead(input: ParseStream<'_>, kinds: Kinds) -> Option<(syn::Ident, bool)> {
    let (ident, rest) = input.cursor().ident()?;
    match rest.punct() {
        Some((p, after)) if p.as_char() == '=' => {
            let joint_eq = p.spacing() == proc_macro2::Spacing::Joint
                && matches!(after.punct(), Some((q, _)) if q.as_char() == '=' || q.as_char() == '>');
            if joint_eq {
                None
            } else {
                Some((ident, true))
            }
        }
        Some((p, _)) if p.as_char() == ',' => kinds
            .is_option_name(&ident.to_string())
            .then_some((ident, false)),
        None if rest.eof() => kinds
            .is_option_name(&ident.to_string())
            .then_some((ident, false)),
        _ => None,
    }
}

/// Whether the identifier at the cursor is a modifier word here. `async` and `try` are
/// keywords and always are; `opt`, `flat`, `process`, `continuous` and `batched` are ordinary
/// names, and are modifiers only when an expression follows directly (an identifier, a
/// literal or a closure's `|`), so a function named `flat` can still be written `pipe(flat)`.
fn modifier_ahead(input: ParseStream<'_>, kinds: Kinds) -> bool {
    let Some((ident, rest)) = input.cursor().ident() else {
        return false;
    };
    let word = ident.to_string();
    if !kinds.is_modifier(&word) {
        return false;
    }
    if word == "async" || word == "try" {
        return true;
    }
    if rest.ident().is_some() || rest.literal().is_some() {
        return true;
    }
    matches!(rest.punct(), Some((p, _)) if p.as_char() == '|')
}

fn parse_one_arg(
    input: ParseStream<'_>,
    index: usize,
    stage: &mut Stage,
    kinds: Kinds,
) -> syn::Result<()> {
    if let Some(option) = parse_option(input, kinds)? {
        stage.options.push(option);
        return Ok(());
    }
    if index == 0 {
        parse_modifiers(input, stage, kinds)?;
    }
    let expr: Expr = input.parse()?;
    stage.positional.push(expr);
    Ok(())
}

/// An option at the cursor (`name = value`, `name =`, or a bare option name), if there is one.
fn parse_option(input: ParseStream<'_>, kinds: Kinds) -> syn::Result<Option<StageOption>> {
    let Some((name, has_eq)) = option_ahead(input, kinds) else {
        return Ok(None);
    };
    input.parse::<proc_macro2::Ident>()?;
    if !has_eq {
        return Ok(Some(StageOption { name, value: None }));
    }
    input.parse::<syn::Token![=]>()?;
    let value = if input.is_empty() || input.peek(syn::Token![,]) {
        None
    } else {
        Some(input.parse::<Expr>()?)
    };
    Ok(Some(StageOption { name, value }))
}

/// The modifier words at the cursor, before a stage's first argument; an error when no
/// argument follows them.
fn parse_modifiers(input: ParseStream<'_>, stage: &mut Stage, kinds: Kinds) -> syn::Result<()> {
    while modifier_ahead(input, kinds) {
        // `peek_ident` sees keywords too (`async`, `try`), which `Ident::parse` rejects.
        let ident = peek_ident(input).ok_or_else(|| input.error("expected a modifier"))?;
        input.step(|cursor| match cursor.ident() {
            Some((_, rest)) => Ok(((), rest)),
            None => Err(cursor.error("expected a modifier")),
        })?;
        stage.modifiers.push(ident);
    }
    if input.is_empty() || input.peek(syn::Token![,]) {
        let span = stage
            .modifiers
            .last()
            .map_or_else(|| input.span(), syn::Ident::span);
        return Err(syn::Error::new(
            span,
            "expected an expression after the modifier, e.g. `pipe(async fetch)`",
        ));
    }
    Ok(())
}

/// Parses the arguments of a structure: each top-level piece is an option, or a piece of
/// tokens kept for the kind (its first one after any modifiers).
fn parse_pieces(
    stream: TokenStream,
    stage: &mut Stage,
    kinds: Kinds,
    errors: &mut Vec<syn::Error>,
) {
    for (index, piece) in Piece::split(stream).into_iter().enumerate() {
        let parser = |input: ParseStream<'_>| -> syn::Result<Option<Piece>> {
            if let Some(option) = parse_option(input, kinds)? {
                if !input.is_empty() {
                    return Err(input.error("expected `,` between the arguments of a stage"));
                }
                stage.options.push(option);
                return Ok(None);
            }
            if index == 0 {
                parse_modifiers(input, stage, kinds)?;
            }
            let rest: TokenStream = input.parse()?;
            Ok(Piece::new(rest.into_iter().collect()))
        };
        match parser.parse2(piece.stream()) {
            Ok(rest) => stage.pieces.extend(rest),
            Err(e) => {
                errors.push(e);
                stage.broken = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> Parsed {
        super::parse(tokens, crate::stages::KINDS)
    }

    #[test]
    fn parses_a_chain() {
        let p = parse(quote! {
            source(0..10) -> pipe(async fetch, concurrency = 4) -> aggregate(2) -> sink()
        });
        assert!(p.stages.iter().all(|s| s.pieces.is_empty()));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let names: Vec<String> = p.stages.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["source", "pipe", "aggregate", "sink"]);
        assert_eq!(p.stages[1].modifiers[0].to_string(), "async");
        assert_eq!(p.stages[1].options[0].name.to_string(), "concurrency");
        assert!(p.stages[1].options[0].value.is_some());
    }

    #[test]
    fn contextual_modifiers_only_before_an_expression() {
        let p =
            parse(quote! { source(x) -> pipe(flat) -> pipe(flat f) -> pipe(flat(y)) -> sink() });
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.stages[1].modifiers.is_empty());
        assert_eq!(p.stages[2].modifiers.len(), 1);
        assert!(p.stages[3].modifiers.is_empty());
    }

    #[test]
    fn missing_arrow_is_reported_and_recovered() {
        let p = parse(quote! { source(x) pipe(f) -> sink() });
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.stages.len(), 3);
    }

    #[test]
    fn stray_arrow_is_reported() {
        let p = parse(quote! { source(x) -> -> sink() });
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.stages.len(), 2);
    }

    #[test]
    fn missing_option_value() {
        let p = parse(quote! { pipe(f, concurrency = , name) });
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.stages[0].options.iter().all(|o| o.value.is_none()));
        assert_eq!(p.stages[0].options.len(), 2);
    }

    #[test]
    fn bad_argument_is_skipped() {
        let p = parse(quote! { pipe(f, concurrency = 1 2, name = "n") });
        assert_eq!(p.errors.len(), 1);
        assert!(p.stages[0].broken);
        assert_eq!(p.stages[0].options.len(), 2);
    }

    #[test]
    fn equality_is_an_expression_not_an_option() {
        let p = parse(quote! { pipe(a == b) });
        assert!(p.errors.is_empty());
        assert!(p.stages[0].options.is_empty());
        assert_eq!(p.stages[0].positional.len(), 1);
    }
}
