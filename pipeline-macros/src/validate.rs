//! Phase 2: the syntax tree → a checked pipeline.
//!
//! Everything that can be known without types is checked here or by the stage kinds
//! (`stages/*.rs`). This file holds the checks that are the same for every kind, and runs them
//! from each kind's descriptor data (`descriptor::KindDescriptor`): stage names (with a
//! suggestion for a typo), the place of the source and the sink, modifiers and the form they
//! select, positional arguments (their number, and a count below 1), option names (unknown,
//! duplicate, missing value) and values (`option_values`). What only one kind knows (a
//! structure's chains, the options that do not fit a form, a `process` stage without an
//! executor) is checked by that kind's `plan`, which calls back here, through [`Checks`], to
//! report errors and to check the chains inside a structure. Type checks are left to rustc,
//! through the guards that the kinds expand to.
//!
//! Every mistake becomes a `syn::Error` at the offending tokens, and the pipeline is still
//! checked as well as it can be (an unknown option is left out, a misspelled stage is read as
//! the stage it most likely means), so that one mistake gives one error.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::Expr;

use crate::checked::{CheckedChain, CheckedPipeline, CheckedStage};
use crate::descriptor::{
    and_list, CheckedArgs, Checks, Form, KindDescriptor, Modifier, Place, Positional,
};
use crate::option_values::{below_one, OptionSpec, OptionValues};
use crate::parse::parse;
use crate::stages::{self, KINDS};
use crate::syntax::{Parsed, Stage, StageOption};

/// Checks the parsed input; returns the checked pipeline and every error found (the
/// parser's first).
pub(crate) fn validate(parsed: Parsed) -> (CheckedPipeline, Vec<syn::Error>) {
    let mut v = Validator {
        errors: parsed.errors,
    };
    let pipeline = v.pipeline(&parsed.stages);
    (pipeline, v.errors)
}

struct Validator {
    errors: Vec<syn::Error>,
}

impl Validator {
    fn pipeline(&mut self, stages: &[Stage]) -> CheckedPipeline {
        let mut pipeline = CheckedPipeline {
            source: None,
            stages: Vec::new(),
            sink: None,
            stand_ins: stages::stand_ins(),
        };
        if stages.is_empty() {
            if self.errors.is_empty() {
                self.error(
                    Span::call_site(),
                    "empty pipeline: write `pipeline! { source(items) -> pipe(f) -> sink() }`"
                        .to_owned(),
                );
            }
            return pipeline;
        }
        let mut after_sink = false;
        for (index, stage) in stages.iter().enumerate() {
            let Some((kind, implied)) = self.kind(stage) else {
                continue;
            };
            let number = index + 1;
            if index == 0 && kind.place != Place::First {
                self.error(
                    stage.name.span(),
                    format!(
                        "missing source: a pipeline starts with `source(items)`, found `{}`",
                        stage.name
                    ),
                );
            }
            if after_sink {
                self.error(
                    stage.name.span(),
                    format!(
                        "`{}` after the sink: `sink(..)` is the last stage of a pipeline",
                        stage.name
                    ),
                );
            }
            match kind.place {
                Place::First => {
                    if index > 0 {
                        self.error(
                            stage.name.span(),
                            "`source` must be the first stage: a pipeline has one source, at \
                             its start"
                                .to_owned(),
                        );
                    } else {
                        pipeline.source = self.stage(kind, implied, stage, number);
                    }
                }
                Place::Last => {
                    if after_sink {
                        continue;
                    }
                    after_sink = true;
                    pipeline.sink = self.stage(kind, implied, stage, number);
                }
                Place::Between => {
                    if let Some(checked) = self.stage(kind, implied, stage, number) {
                        pipeline.stages.push(checked);
                    }
                }
            }
        }
        if !after_sink {
            let last = &stages[stages.len() - 1];
            self.error(
                last.name.span(),
                "missing sink: a pipeline ends with `sink(..)`, e.g. `-> sink(buffer = 4)`"
                    .to_owned(),
            );
        }
        pipeline
    }

    /// Resolves the stage name to its kind and the modifiers the name implies; an unknown
    /// name is reported, and read as the closest known name when there is one.
    fn kind(
        &mut self,
        stage: &Stage,
    ) -> Option<(&'static KindDescriptor, &'static [&'static str])> {
        let word = stage.name.to_string();
        let known = KINDS.names();
        if let Some((_, kind, implied)) = known.iter().find(|(name, ..)| *name == word) {
            return Some((*kind, implied));
        }
        let names: Vec<&str> = known.iter().map(|(name, ..)| *name).collect();
        match suggest(&word, &names) {
            Some(best) => {
                self.error(
                    stage.name.span(),
                    format!("unknown stage `{word}`; did you mean `{best}`?"),
                );
                known
                    .iter()
                    .find(|(name, ..)| *name == best)
                    .map(|(_, kind, implied)| (*kind, *implied))
            }
            None => {
                let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.name)).collect();
                self.error(
                    stage.name.span(),
                    format!(
                        "unknown stage `{word}`; the stages are {}",
                        and_list(&kinds)
                    ),
                );
                None
            }
        }
    }

    /// Checks one stage (number `number`, written with a name that implies the modifiers
    /// `implied`): the generic checks, from its kind's descriptor, then the kind's own
    /// (`plan`), which plans its expansion.
    fn stage(
        &mut self,
        kind: &'static KindDescriptor,
        implied: &[&'static str],
        stage: &Stage,
        number: usize,
    ) -> Option<CheckedStage> {
        let modifiers = self.modifiers(stage, implied, kind.modifiers);
        let form = self.form(stage, kind, &modifiers);
        let options = self.options(stage, kind.options);
        let args = self.positional(stage, &kind.positional)?;
        let checked = CheckedArgs {
            stage,
            number,
            form,
            args,
            options,
        };
        (kind.plan)(checked, self)
    }

    /// The modifiers written on the stage plus those its name implies; duplicates and words
    /// outside `allowed` are reported.
    fn modifiers(
        &mut self,
        stage: &Stage,
        implied: &[&'static str],
        allowed: &[Modifier],
    ) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = implied.iter().map(|s| (*s).to_owned()).collect();
        for m in &stage.modifiers {
            let word = m.to_string();
            if !allowed.iter().any(|a| a.word == word) {
                let hint = KINDS.modifier_hint(&word);
                self.error(
                    m.span(),
                    format!("`{}` does not take the modifier `{word}`{hint}", stage.name),
                );
            } else if !set.insert(word.clone()) {
                self.error(m.span(), format!("the modifier `{word}` is given twice"));
            }
        }
        set
    }

    /// The form the modifiers select; a set that selects none is reported, and read as the
    /// closest form.
    fn form(
        &mut self,
        stage: &Stage,
        kind: &'static KindDescriptor,
        modifiers: &BTreeSet<String>,
    ) -> &'static Form {
        if let Some(form) = kind.form_for(modifiers) {
            return form;
        }
        let written: Vec<String> = stage.modifiers.iter().map(ToString::to_string).collect();
        let words: Vec<&str> = modifiers.iter().map(String::as_str).collect();
        let span = stage
            .modifiers
            .first()
            .map_or_else(|| stage.name.span(), syn::Ident::span);
        let forms: Vec<String> = kind
            .forms
            .iter()
            .map(|form| format!("`{}({}{})`", kind.name, form.written(), kind.placeholder()))
            .collect();
        self.error(
            span,
            format!(
                "`{}` is not a stage shape; the shapes are {}",
                if written.is_empty() {
                    words.join(" ")
                } else {
                    written.join(" ")
                },
                and_list(&forms),
            ),
        );
        kind.closest_form(modifiers)
    }

    /// Checks the positional arguments against `spec`; returns them when every one that
    /// `spec` asks for is there (none for [`Positional::None`] and [`Positional::Pieces`]).
    fn positional(&mut self, stage: &Stage, spec: &Positional) -> Option<Vec<Expr>> {
        let args = match *spec {
            Positional::Pieces => return Some(Vec::new()),
            Positional::None { hint } => {
                for extra in &stage.positional {
                    self.error(
                        extra.span(),
                        format!("unexpected argument: `{}` takes {hint}", stage.name),
                    );
                }
                return Some(Vec::new());
            }
            Positional::Exprs(args) => args,
        };
        let whats: Vec<String> = args.iter().map(|a| a.what.to_owned()).collect();
        for extra in stage.positional.iter().skip(args.len()) {
            self.error(
                extra.span(),
                format!(
                    "unexpected argument: `{}` takes {}, then options",
                    stage.name,
                    and_list(&whats)
                ),
            );
        }
        let given = stage.positional.len().min(args.len());
        if given < args.len() {
            if !stage.broken {
                let missing: Vec<String> =
                    args[given..].iter().map(|a| a.what.to_owned()).collect();
                let examples: Vec<&str> = args.iter().map(|a| a.example).collect();
                self.error(
                    stage.args_span,
                    format!(
                        "`{}` needs {}: `{}({})`",
                        stage.name,
                        and_list(&missing),
                        stage.name,
                        examples.join(", ")
                    ),
                );
            }
            return None;
        }
        let mut out = Vec::with_capacity(args.len());
        for (arg, expr) in args.iter().zip(&stage.positional) {
            if arg.at_least_one && below_one(expr) {
                self.push(syn::Error::new_spanned(
                    expr,
                    format!("{} must be at least 1", arg.what),
                ));
                // Best effort: go on with a valid count.
                out.push(syn::parse_quote_spanned!(expr.span()=> 1));
            } else {
                out.push(expr.clone());
            }
        }
        Some(out)
    }

    /// Checks option names (unknown, duplicate, missing value) against `allowed`, then the
    /// values of the usable ones.
    fn options(&mut self, stage: &Stage, allowed: &'static [OptionSpec]) -> OptionValues {
        let mut values = OptionValues::new(allowed);
        let mut seen: Vec<String> = Vec::new();
        for StageOption { name, value } in &stage.options {
            let word = name.to_string();
            let Some(spec) = allowed.iter().find(|o| o.name == word) else {
                self.unknown_option(stage, name, allowed);
                continue;
            };
            if seen.contains(&word) {
                self.error(name.span(), format!("duplicate option `{word}`"));
                continue;
            }
            seen.push(word.clone());
            match value {
                Some(value) => values.check(name, value.clone(), &mut self.errors),
                None => self.error(
                    name.span(),
                    format!(
                        "missing value for `{word}`: write `{word} = {}`",
                        spec.example
                    ),
                ),
            }
        }
        values
    }

    fn unknown_option(&mut self, stage: &Stage, name: &syn::Ident, allowed: &[OptionSpec]) {
        let word = name.to_string();
        let kind = stage.name.to_string();
        if allowed.is_empty() {
            self.error(
                name.span(),
                format!("`{kind}` takes no options, found `{word}`"),
            );
            return;
        }
        let names: Vec<&str> = allowed.iter().map(|o| o.name).collect();
        if let Some(best) = suggest(&word, &names) {
            self.error(
                name.span(),
                format!("unknown option `{word}` of `{kind}`; did you mean `{best}`?"),
            );
            return;
        }
        let list = names
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match KINDS.option_owner(&word) {
            Some(owner) => self.error(
                name.span(),
                format!(
                    "`{word}` is an option of `{owner}`, not of `{kind}`; `{kind}` takes {list}"
                ),
            ),
            None => self.error(
                name.span(),
                format!("unknown option `{word}` of `{kind}`; `{kind}` takes {list}"),
            ),
        }
    }
}

impl Checks for Validator {
    fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    fn chain(
        &mut self,
        tokens: TokenStream,
        from_source: bool,
        within: &str,
        blame: Span,
    ) -> Option<CheckedChain> {
        let parsed = parse(tokens, KINDS);
        let syntax_errors = !parsed.errors.is_empty();
        self.errors.extend(parsed.errors);
        let stages = parsed.stages;
        let mut chain = CheckedChain::default();
        if stages.is_empty() {
            let hint = if from_source {
                "a source, e.g. `source(items) -> pipe(f)`"
            } else {
                "at least one stage, e.g. `pipe(f)`"
            };
            self.error(blame, format!("{within} is empty: it needs {hint}"));
            return (!syntax_errors).then_some(chain);
        }
        for (index, stage) in stages.iter().enumerate() {
            let Some((kind, implied)) = self.kind(stage) else {
                continue;
            };
            let checked = match kind.place {
                Place::Last => {
                    self.error(
                        stage.name.span(),
                        format!(
                            "`{}` inside {within}: the pipeline's one sink comes after the \
                             structure, at the end",
                            stage.name
                        ),
                    );
                    continue;
                }
                Place::First if !from_source || index > 0 => {
                    let why = if from_source {
                        "it has one source, at its start"
                    } else {
                        "a branch starts from the items the router sends it"
                    };
                    self.error(
                        stage.name.span(),
                        format!("`{}` inside {within}: {why}", stage.name),
                    );
                    continue;
                }
                Place::Between if from_source && index == 0 => {
                    self.error(
                        stage.name.span(),
                        format!(
                            "{within} starts with `{}`: a merge input starts with a source, \
                             e.g. `source(items) -> {}(..)`",
                            stage.name, stage.name
                        ),
                    );
                    self.stage(kind, implied, stage, index + 1)
                }
                _ => self.stage(kind, implied, stage, index + 1),
            };
            let Some(mut checked) = checked else { continue };
            checked.label = format!("{} in {within}", checked.label);
            if kind.place == Place::First {
                chain.source = Some(checked);
            } else {
                chain.stages.push(checked);
            }
        }
        let usable = if from_source {
            chain.source.is_some()
        } else {
            !chain.stages.is_empty()
        };
        (usable || !syntax_errors).then_some(chain)
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn check(tokens: proc_macro2::TokenStream) -> (CheckedPipeline, Vec<String>) {
        let (pipeline, errors) = validate(parse(tokens, KINDS));
        (pipeline, errors.iter().map(ToString::to_string).collect())
    }

    /// The expansion of the checked pipeline, as text.
    fn expanded(pipeline: &CheckedPipeline) -> String {
        crate::expand::expand(pipeline, &[]).to_string()
    }

    #[test]
    fn a_valid_pipeline_has_no_errors() {
        let (plan, errors) = check(quote! {
            source(0..10)
            -> pipe(f, concurrency = 2, order = input, max_failures = 3, buffer = 4, name = "f")
            -> pipe(try async g) -> aggregate(3, drop_last = true) -> disaggregate()
            -> sink(buffer = 2, num_threads = 2, max_failures = 0.5)
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.stages.len(), 4);
        assert!(expanded(&plan).contains(". async_try_pipe (f)"));
        assert_eq!(plan.stages[0].label, "stage 2 `f`");
        assert_eq!(plan.stages[1].label, "stage 3 `pipe(async try g)`");
    }

    #[test]
    fn builder_names_are_aliases() {
        let (plan, errors) = check(quote! {
            try_source(v) -> try_flat_pipe(f) -> async_opt_pipe(g) -> sink()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.stages[0].label, "stage 2 `pipe(try flat f)`");
        assert_eq!(plan.stages[1].label, "stage 3 `pipe(async opt g)`");
        let out = expanded(&plan);
        assert!(out.contains(". try_source (v)"), "{out}");
        assert!(out.contains(". try_flat_pipe (f)"), "{out}");
        assert!(out.contains(". async_opt_pipe (f)"), "{out}");
    }

    #[test]
    fn typos_get_suggestions() {
        let (plan, errors) = check(quote! { source(x) -> pipee(f, concurency = 2) -> sink() });
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("did you mean `pipe`"));
        assert!(errors[1].contains("did you mean `concurrency`"));
        // Best effort: the stage is still there.
        assert_eq!(plan.stages.len(), 1);
    }

    #[test]
    fn structure_errors() {
        let cases: &[(proc_macro2::TokenStream, &str)] = &[
            (quote! {}, "empty pipeline"),
            (quote! { pipe(f) -> sink() }, "missing source"),
            (quote! { source(x) -> pipe(f) }, "missing sink"),
            (quote! { source(x) -> sink() -> pipe(f) }, "after the sink"),
            (
                quote! { source(x) -> source(y) -> sink() },
                "must be the first stage",
            ),
            (quote! { source(x) -> aggregate(0) -> sink() }, "at least 1"),
            (
                quote! { source(x) -> pipe(f, concurrency = -2) -> sink() },
                "at least 1",
            ),
            (
                quote! { source(x) -> pipe(async f, executor = p) -> sink() },
                "async",
            ),
            (
                quote! { source(x) -> pipe(f, buffer = 1, buffer = 2) -> sink() },
                "duplicate",
            ),
            (
                quote! { source(x) -> pipe(f, name =) -> sink() },
                "missing value",
            ),
            (
                quote! { source(x) -> pipe(opt flat f) -> sink() },
                "not a stage shape",
            ),
            (quote! { source(x) -> sink(max_failures = 1.5) }, "(0, 1]"),
            (
                quote! { source(x) -> pipe(flat f, order = input, concurrency = 4) -> sink() },
                "one-to-many",
            ),
            (
                quote! { source(x) -> pipe(f, drop_last = true) -> sink() },
                "option of `aggregate`",
            ),
            (
                quote! { merge(source(a), pipe(f)) -> sink() },
                "input 2 of the merge starts with `pipe`",
            ),
            (
                quote! { source(x) -> merge(source(a)) -> sink() },
                "must be the first stage",
            ),
            (
                quote! { source(x) -> route(r, { 0 => source(y) }) -> sink() },
                "inside branch `0` of the route at stage 2",
            ),
            (
                quote! { source(x) -> route(r, { 0 => pipe(f) pipe(g) }) -> sink() },
                "expected `->` before `pipe`",
            ),
            (
                quote! { source(x) -> route(r, { 0 pipe(f) }) -> sink() },
                "`pattern => stages`",
            ),
            (
                quote! { merge(source(a), source(b), policy = weighted([1.0], seed = 1)) -> sink() },
                "1 weights for 2 inputs",
            ),
            (
                quote! { merge(source(a), on_end = stop, on_end = restart) -> sink() },
                "duplicate option `on_end`",
            ),
            (
                quote! { merge(source(a), polcy = round_robin) -> sink() },
                "did you mean `policy`",
            ),
            (
                quote! { merge(source(a), policy =) -> sink() },
                "missing value for `policy`: write `policy = round_robin`",
            ),
            (
                quote! { source(x) -> route(async r, { _ => pipe(f) }) -> sink() },
                "`route` does not take the modifier `async`",
            ),
            (
                quote! { source(x) -> pipe(f, g) -> sink() },
                "unexpected argument: `pipe` takes a function, then options",
            ),
            (
                quote! { source(x) -> source(try async continuous y) -> sink() },
                "must be the first stage",
            ),
            (
                quote! { source(async continuous y) -> sink() },
                "`async continuous` is not a stage shape; the shapes are `source(items)`",
            ),
        ];
        for (tokens, expected) in cases {
            let (_, errors) = check(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}: {errors:?}");
            assert!(errors[0].contains(expected), "{tokens}: {errors:?}");
        }
    }

    #[test]
    fn structures_plan_their_chains() {
        let (plan, errors) = check(quote! {
            merge(source(a) -> pipe(f), source(b), policy = round_robin, on_end = restart)
            -> route(batched k, { Kind::A => pipe(g), _ => pipe(h) -> pipe(i) })
            -> sink()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let out = expanded(&plan);
        assert!(out.contains(". merge (["), "{out}");
        assert!(out.contains("MergePolicy :: round_robin ()"), "{out}");
        assert!(out.contains("OnEnd :: Restart"), "{out}");
        assert!(out.contains(". route_batched ("), "{out}");
        assert!(out.contains("__pipeline_branch_1"), "{out}");
        assert!(out.contains(". join ()"), "{out}");
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("pipe", "pipe"), 0);
        assert_eq!(edit_distance("pip", "pipe"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("agregate", &["aggregate", "sink"]),
            Some("aggregate")
        );
        assert_eq!(suggest("zzz", &["aggregate", "sink"]), None);
    }
}
