//! What a stage kind is: the [`StageKind`] descriptor that each `stages/*.rs` implements, the
//! data it declares (place, modifiers, positional arguments, [`OptionSpec`]s), and the
//! [`Checks`] it may call on the validator.
//!
//! This file is apart from `stages/mod.rs` so that dependencies point one way: the kinds
//! depend on it, the registry in `mod.rs` depends on the kinds, and `validate` implements
//! [`Checks`] without the kinds depending on `validate`.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::Expr;

use crate::plan::Step;
use crate::syntax::Stage;

/// Where in a pipeline a stage kind goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The first stage, and only there: the source.
    First,
    /// Between the source and the sink.
    Between,
    /// The last stage: the sink.
    Last,
}

/// A word written before a stage's first argument, e.g. `async` in `pipe(async f)`.
pub(crate) struct Modifier {
    pub(crate) word: &'static str,
    /// Added to the error when the word is written on a stage that does not take it, to say
    /// where it belongs (for `flat`: " (it applies to \`pipe\`)"); empty when nothing helps.
    pub(crate) hint: &'static str,
}

impl Modifier {
    /// A modifier without a hint.
    pub(crate) const fn new(word: &'static str) -> Self {
        Modifier { word, hint: "" }
    }
}

/// The positional arguments of a stage kind.
pub(crate) enum Positional {
    /// Exactly one, described by `what` ("a function") and shown as `example` ("f") in
    /// messages.
    One {
        what: &'static str,
        example: &'static str,
    },
    /// None; `hint` says what the stage takes instead ("no arguments: `disaggregate()`").
    None { hint: &'static str },
}

/// The type of an option's value: how a literal is checked, and how the value is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueType {
    /// Any expression, passed as written.
    Expr,
    /// A count: an integer literal below 1 is an error.
    AtLeastOne,
    /// A failure budget: an integer literal is a count, a float literal a rate in (0, 1],
    /// anything else a `MaxFailures`.
    Budget,
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
    /// expansion passes the value itself (the sink's buffer, today an argument of `sink`).
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

/// One stage kind: its names, what it accepts, its own checks and its expansion. A new stage
/// kind is a new file in `stages/` implementing this, and one line in the registry.
pub(crate) trait StageKind: Sync {
    /// The name the kind is written with, e.g. `pipe`.
    fn name(&self) -> &'static str;

    /// Other names of the kind, each with the modifiers it implies: the builder's method
    /// names, so that `try_pipe(f)` means `pipe(try f)`.
    fn aliases(&self) -> Vec<(&'static str, &'static [&'static str])> {
        Vec::new()
    }

    /// Where the kind goes in a pipeline.
    fn place(&self) -> Place;

    /// The modifiers the kind takes.
    fn modifiers(&self) -> &'static [Modifier] {
        &[]
    }

    /// The positional arguments the kind takes.
    fn positional(&self) -> Positional;

    /// The options the kind takes, in the order the expansion applies them.
    fn options(&self) -> &'static [OptionSpec] {
        &[]
    }

    /// Checks one stage of this kind (number `number` in the pipeline, written with the name
    /// that implies the modifiers `implied`) and plans it; `None` when nothing can be
    /// expanded for it (an error says why).
    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step>;
}

/// The checks that every kind needs, done the same way for all of them (and implemented by
/// the validator). Each reports at the user's tokens and returns what is usable, so that a kind
/// goes on planning after a mistake.
pub(crate) trait Checks {
    /// Records an error.
    fn push(&mut self, error: syn::Error);

    /// Records an error at `span`.
    fn error(&mut self, span: Span, message: String) {
        self.push(syn::Error::new(span, message));
    }

    /// The modifiers written on the stage plus those its name implies; duplicates and words
    /// outside `allowed` are reported.
    fn modifiers(
        &mut self,
        stage: &Stage,
        implied: &[&'static str],
        allowed: &[Modifier],
    ) -> BTreeSet<String>;

    /// Checks the positional arguments against `spec`; returns the argument when `spec` asks
    /// for one and it is there.
    fn positional(&mut self, stage: &Stage, spec: &Positional) -> Option<Expr>;

    /// Checks option names (unknown, duplicate, missing value) against `allowed`; returns the
    /// usable options, in the order written.
    fn options(&mut self, stage: &Stage, allowed: &[OptionSpec]) -> Vec<(syn::Ident, Expr)>;

    /// Checks and plans a chain inside a structure: a merge input (`from_source`: it starts
    /// with a source) or a route branch (it starts from the route's items). Neither has a
    /// sink. `within` names where the chain is ("input 2 of the merge"), for labels and
    /// messages; `blame` is where an empty chain is reported.
    fn chain(&mut self, stages: &[Stage], from_source: bool, within: &str, blame: Span)
        -> SubChain;
}

/// A planned chain inside a structure: its first stage (a merge input's source) and the
/// stages after it.
#[derive(Default)]
pub(crate) struct SubChain {
    pub(crate) source: Option<Step>,
    pub(crate) steps: Vec<Step>,
}

/// `a, b, c and d`, for the lists in messages.
pub(crate) fn and_list(items: &[String]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => items.join(""),
    }
}
