//! Phase 2: the syntax tree → a checked plan.
//!
//! Everything that can be known without types is checked here or by the stage kinds
//! (`stages/*.rs`). This file holds what is the same for every kind: stage names (with a
//! suggestion for a typo), the place of the source and the sink, modifiers, positional
//! arguments, option names, duplicates and missing values. What only one kind knows (its
//! shapes, its option values, `aggregate(0)`, a `process` stage without an executor) is
//! checked by that kind, which calls back here, through [`Checks`], for the generic checks.
//! Type checks are left to rustc, through the guards that the kinds expand to.
//!
//! Every mistake becomes a `syn::Error` at the offending tokens, and the plan is still built
//! as well as it can be (an unknown option is left out, a misspelled stage is read as the
//! stage it most likely means), so that one mistake gives one error.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use crate::plan::Plan;
use crate::stages::kind::{
    and_list, Checks, Modifier, OptionSpec, Place, Positional, StageKind, SubChain,
};
use crate::stages::{self, KINDS};
use crate::syntax::{Parsed, Stage, StageOption};

/// Checks the parsed input; returns the plan and every error found (the parser's first).
pub(crate) fn validate(parsed: Parsed) -> (Plan, Vec<syn::Error>) {
    let mut v = Validator {
        errors: parsed.errors,
    };
    let plan = v.pipeline(&parsed.stages);
    (plan, v.errors)
}

struct Validator {
    errors: Vec<syn::Error>,
}

impl Validator {
    fn pipeline(&mut self, stages: &[Stage]) -> Plan {
        let mut plan = Plan {
            source: None,
            steps: Vec::new(),
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
            return plan;
        }
        let mut after_sink = false;
        for (index, stage) in stages.iter().enumerate() {
            let Some((kind, implied)) = self.kind(stage) else {
                continue;
            };
            let number = index + 1;
            let place = kind.place();
            if index == 0 && place != Place::First {
                self.error(
                    stage.kind.span(),
                    format!(
                        "missing source: a pipeline starts with `source(items)`, found `{}`",
                        stage.kind
                    ),
                );
            }
            if after_sink {
                self.error(
                    stage.kind.span(),
                    format!(
                        "`{}` after the sink: `sink(..)` is the last stage of a pipeline",
                        stage.kind
                    ),
                );
            }
            match place {
                Place::First => {
                    if index > 0 {
                        self.error(
                            stage.kind.span(),
                            "`source` must be the first stage: a pipeline has one source, at \
                             its start"
                                .to_owned(),
                        );
                    } else {
                        plan.source = kind.plan(stage, implied, number, self);
                    }
                }
                Place::Last => {
                    if after_sink {
                        continue;
                    }
                    after_sink = true;
                    plan.sink = kind.plan(stage, implied, number, self);
                }
                Place::Between => {
                    if let Some(step) = kind.plan(stage, implied, number, self) {
                        plan.steps.push(step);
                    }
                }
            }
        }
        if !after_sink {
            let last = &stages[stages.len() - 1];
            self.error(
                last.kind.span(),
                "missing sink: a pipeline ends with `sink(..)`, e.g. `-> sink(buffer = 4)`"
                    .to_owned(),
            );
        }
        plan
    }

    /// Resolves the stage name to its kind and the modifiers the name implies; an unknown
    /// name is reported, and read as the closest known name when there is one.
    fn kind(&mut self, stage: &Stage) -> Option<(&'static dyn StageKind, &'static [&'static str])> {
        let word = stage.kind.to_string();
        let known = stages::names();
        if let Some((_, kind, implied)) = known.iter().find(|(name, ..)| *name == word) {
            return Some((*kind, implied));
        }
        let names: Vec<&str> = known.iter().map(|(name, ..)| *name).collect();
        match suggest(&word, &names) {
            Some(best) => {
                self.error(
                    stage.kind.span(),
                    format!("unknown stage `{word}`; did you mean `{best}`?"),
                );
                known
                    .iter()
                    .find(|(name, ..)| *name == best)
                    .map(|(_, kind, implied)| (*kind, *implied))
            }
            None => {
                let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.name())).collect();
                self.error(
                    stage.kind.span(),
                    format!(
                        "unknown stage `{word}`; the stages are {}",
                        and_list(&kinds)
                    ),
                );
                None
            }
        }
    }

    fn unknown_option(&mut self, stage: &Stage, name: &syn::Ident, allowed: &[OptionSpec]) {
        let word = name.to_string();
        let kind = stage.kind.to_string();
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
        match stages::option_owner(&word) {
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
        stages: &[Stage],
        from_source: bool,
        within: &str,
        blame: Span,
    ) -> SubChain {
        let mut chain = SubChain::default();
        if stages.is_empty() {
            let hint = if from_source {
                "a source, e.g. `source(items) -> pipe(f)`"
            } else {
                "at least one stage, e.g. `pipe(f)`"
            };
            self.error(blame, format!("{within} is empty: it needs {hint}"));
            return chain;
        }
        for (index, stage) in stages.iter().enumerate() {
            let Some((kind, implied)) = self.kind(stage) else {
                continue;
            };
            let place = kind.place();
            let planned = match place {
                Place::Last => {
                    self.error(
                        stage.kind.span(),
                        format!(
                            "`{}` inside {within}: the pipeline's one sink comes after the \
                             structure, at the end",
                            stage.kind
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
                        stage.kind.span(),
                        format!("`{}` inside {within}: {why}", stage.kind),
                    );
                    continue;
                }
                Place::Between if from_source && index == 0 => {
                    self.error(
                        stage.kind.span(),
                        format!(
                            "{within} starts with `{}`: a merge input starts with a source, \
                             e.g. `source(items) -> {}(..)`",
                            stage.kind, stage.kind
                        ),
                    );
                    kind.plan(stage, implied, index + 1, self)
                }
                _ => kind.plan(stage, implied, index + 1, self),
            };
            let Some(mut step) = planned else { continue };
            step.label = format!("{} in {within}", step.label);
            if place == Place::First {
                chain.source = Some(step);
            } else {
                chain.steps.push(step);
            }
        }
        chain
    }

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
                let hint = stages::modifier_hint(&word);
                self.error(
                    m.span(),
                    format!("`{}` does not take the modifier `{word}`{hint}", stage.kind),
                );
            } else if !set.insert(word.clone()) {
                self.error(m.span(), format!("the modifier `{word}` is given twice"));
            }
        }
        set
    }

    fn positional(&mut self, stage: &Stage, spec: &Positional) -> Option<Expr> {
        match *spec {
            Positional::None { hint } => {
                for extra in &stage.positional {
                    self.error(
                        extra.span(),
                        format!("unexpected argument: `{}` takes {hint}", stage.kind),
                    );
                }
                None
            }
            Positional::One { what, example } => {
                for extra in stage.positional.iter().skip(1) {
                    self.error(
                        extra.span(),
                        format!(
                            "unexpected argument: `{}` takes {what}, then options",
                            stage.kind
                        ),
                    );
                }
                match stage.positional.first() {
                    Some(expr) => Some(expr.clone()),
                    None => {
                        if !stage.broken {
                            self.error(
                                stage.args_span,
                                format!(
                                    "`{}` needs {what}: `{}({example})`",
                                    stage.kind, stage.kind
                                ),
                            );
                        }
                        None
                    }
                }
            }
        }
    }

    fn options(&mut self, stage: &Stage, allowed: &[OptionSpec]) -> Vec<(syn::Ident, Expr)> {
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
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
                Some(value) => out.push((name.clone(), value.clone())),
                None => self.error(
                    name.span(),
                    format!(
                        "missing value for `{word}`: write `{word} = {}`",
                        spec.example
                    ),
                ),
            }
        }
        out
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
    use crate::parse::parse;
    use quote::quote;

    fn check(tokens: proc_macro2::TokenStream) -> (Plan, Vec<String>) {
        let (plan, errors) = validate(parse(tokens));
        (plan, errors.iter().map(ToString::to_string).collect())
    }

    /// The expansion of the plan, as text.
    fn expanded(plan: &Plan) -> String {
        crate::expand::expand(plan, &[]).to_string()
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
        assert_eq!(plan.steps.len(), 4);
        assert!(expanded(&plan).contains(". async_try_pipe (f)"));
        assert_eq!(plan.steps[0].label, "stage 2 `f`");
        assert_eq!(plan.steps[1].label, "stage 3 `pipe(async try g)`");
    }

    #[test]
    fn builder_names_are_aliases() {
        let (plan, errors) = check(quote! {
            try_source(v) -> try_flat_pipe(f) -> async_opt_pipe(g) -> sink()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(plan.steps[0].label, "stage 2 `pipe(try flat f)`");
        assert_eq!(plan.steps[1].label, "stage 3 `pipe(async opt g)`");
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
        assert_eq!(plan.steps.len(), 1);
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
