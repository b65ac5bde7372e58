//! What a stage kind is, as data: the [`KindDescriptor`] each `stages/*.rs` declares (as
//! DFIR's `OperatorConstraints`), the [`Kinds`] vocabulary that the parser and the validator
//! read from the list of kinds, and the [`Checks`] that a kind's own checks call back.
//!
//! The generic checks (stage names, place, modifiers and the form they select, positional
//! arguments and their arity, option names and values) run in `validate` from this data, the
//! same way for every kind; a kind's `plan` function sees only what they let through
//! ([`CheckedArgs`]) and adds what only that kind knows.
//!
//! This file sits below the parser and the kinds: it names neither, so that dependencies point
//! one way (`parse` gets the list of kinds handed in; the kinds' files depend on this file; the
//! list itself, in `stages/mod.rs`, depends on the kinds; `validate` on all of them).

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use syn::Expr;

use crate::checked::{CheckedChain, CheckedStage};
use crate::option_values::{OptionSpec, OptionValues};
use crate::syntax::Stage;

/// One stage kind, as data: its name, where it goes, what it accepts, and the function that
/// adds its own checks and makes its expansion. A new stage kind is a new file in `stages/`
/// declaring one of these, and one line in the list (`stages::KINDS`).
pub(crate) struct KindDescriptor {
    /// The name the kind is written with, e.g. `pipe`.
    pub(crate) name: &'static str,
    /// Where the kind goes in a pipeline.
    pub(crate) place: Place,
    /// The modifiers the kind takes.
    pub(crate) modifiers: &'static [Modifier],
    /// The forms the modifiers select, each a builder method; the first is the form without
    /// modifiers. A set of modifiers that selects none is an error that lists them.
    pub(crate) forms: &'static [Form],
    /// The positional arguments.
    pub(crate) positional: Positional,
    /// The options, in the order the expansion applies them.
    pub(crate) options: &'static [OptionSpec],
    /// The kind's own checks, after the generic ones, and its planned expansion; `None` when
    /// nothing can be expanded for the stage (an error says why).
    pub(crate) plan: fn(CheckedArgs<'_>, &mut dyn Checks) -> Option<CheckedStage>,
}

/// Where in a pipeline a stage kind goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The first stage, and only there: the source, or a merge of sources.
    First,
    /// Between the first stage and the sink.
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

/// One form of a stage kind: the set of modifiers that selects it and the builder method it
/// calls, e.g. `{async, try}` → `async_try_pipe`.
pub(crate) struct Form {
    /// The modifiers that select it (as a set), in the order they are written in messages.
    pub(crate) modifiers: &'static [&'static str],
    /// The builder method the stage calls.
    pub(crate) method: &'static str,
    /// Whether `method` is also a stage name, implying `modifiers`: `try_pipe(f)` is
    /// `pipe(try f)`.
    pub(crate) alias: bool,
    /// The runtime's trait (in `__private`) that bounds the stage function, the same the
    /// builder method takes; `None` where the kind's guard does not depend on the form.
    pub(crate) bound: Option<&'static str>,
}

impl Form {
    /// The only form of a kind without modifiers: `method`, and no alias.
    pub(crate) const fn plain(method: &'static str) -> Self {
        Form {
            modifiers: &[],
            method,
            alias: false,
            bound: None,
        }
    }

    /// Whether the form has the modifier `word`.
    pub(crate) fn has(&self, word: &str) -> bool {
        self.modifiers.contains(&word)
    }

    /// The modifiers as written before the argument, each followed by a space: `"async try "`.
    pub(crate) fn written(&self) -> String {
        self.modifiers.iter().map(|m| format!("{m} ")).collect()
    }

    /// Whether the form is selected by exactly the modifiers `set`.
    fn selected_by(&self, set: &BTreeSet<String>) -> bool {
        self.modifiers.len() == set.len() && self.modifiers.iter().all(|m| set.contains(*m))
    }
}

/// The positional arguments of a stage kind.
pub(crate) enum Positional {
    /// None; `hint` says what the stage takes instead ("no arguments: `disaggregate()`").
    None { hint: &'static str },
    /// These expressions, in order, each required: the kind's arity is their number.
    Exprs(&'static [Arg]),
    /// Pieces of tokens that the kind reads itself (a structure's chains of stages, which are
    /// not expressions, and its `{ .. }` of branches); the parser still reads its options and
    /// the modifiers before its first piece.
    Pieces,
}

/// One positional argument.
pub(crate) struct Arg {
    /// What it is, in messages: "a function", "the batch size".
    pub(crate) what: &'static str,
    /// How it is written in the list of forms: `f` in `pipe(try f)`.
    pub(crate) placeholder: &'static str,
    /// A value shown in messages about a missing argument: `32` in `aggregate(32)`.
    pub(crate) example: &'static str,
    /// Whether it is a count, so that an integer literal below 1 is an error (read as 1 after
    /// it, so that the rest is still checked).
    pub(crate) at_least_one: bool,
}

impl Arg {
    pub(crate) const fn new(
        what: &'static str,
        placeholder: &'static str,
        example: &'static str,
    ) -> Self {
        Arg {
            what,
            placeholder,
            example,
            at_least_one: false,
        }
    }

    /// A count of at least 1.
    pub(crate) const fn count(
        what: &'static str,
        placeholder: &'static str,
        example: &'static str,
    ) -> Self {
        Arg {
            at_least_one: true,
            ..Arg::new(what, placeholder, example)
        }
    }
}

/// A stage as the generic checks leave it, handed to its kind's `plan`.
pub(crate) struct CheckedArgs<'a> {
    /// The stage as written, for spans and (for [`Positional::Pieces`]) its pieces.
    pub(crate) stage: &'a Stage,
    /// Its number in the pipeline (or in its chain), for labels.
    pub(crate) number: usize,
    /// The form its modifiers select (the closest one, after an error about them).
    pub(crate) form: &'static Form,
    /// The positional arguments, one per [`Arg`], all there (otherwise `plan` is not called).
    pub(crate) args: Vec<Expr>,
    /// The usable options.
    pub(crate) options: OptionValues,
}

/// What a kind's own checks call back: recording errors, and checking the chains of stages
/// inside a structure (implemented by the validator, which knows every kind).
pub(crate) trait Checks {
    /// Records an error.
    fn push(&mut self, error: syn::Error);

    /// Records an error at `span`.
    fn error(&mut self, span: Span, message: String) {
        self.push(syn::Error::new(span, message));
    }

    /// Parses and checks a chain of stages inside a structure: a merge input (`from_source`:
    /// it starts with a source) or a route branch (it starts from the route's items). Neither
    /// has a sink. `within` names where the chain is ("input 2 of the merge"), for labels and
    /// messages; `blame` is where an empty chain is reported. `None` when the chain does not
    /// parse and nothing usable is left of it.
    fn chain(
        &mut self,
        tokens: TokenStream,
        from_source: bool,
        within: &str,
        blame: Span,
    ) -> Option<CheckedChain>;
}

/// The list of kinds, as the vocabulary that the parser and the validator consult.
#[derive(Clone, Copy)]
pub(crate) struct Kinds(pub(crate) &'static [&'static KindDescriptor]);

impl Kinds {
    /// Every kind, in the order they are listed (and suggested) in messages.
    pub(crate) fn iter(self) -> impl Iterator<Item = &'static KindDescriptor> {
        self.0.iter().copied()
    }

    /// Every name a stage can be written with, with its kind and the modifiers the name
    /// implies, kind by kind: each kind's name, then its aliases.
    pub(crate) fn names(
        self,
    ) -> Vec<(
        &'static str,
        &'static KindDescriptor,
        &'static [&'static str],
    )> {
        let mut out = Vec::new();
        for kind in self.iter() {
            out.push((kind.name, kind, &[][..]));
            for form in kind.forms.iter().filter(|form| form.alias) {
                out.push((form.method, kind, form.modifiers));
            }
        }
        out
    }

    /// Whether `word` is a modifier of some kind (so that `pipe(flat f)` reads `flat` as one).
    pub(crate) fn is_modifier(self, word: &str) -> bool {
        self.iter()
            .any(|kind| kind.modifiers.iter().any(|m| m.word == word))
    }

    /// Whether `word` is an option of some kind (so that `pipe(f, concurrency)` reads as an
    /// option whose value is missing rather than as a stray expression).
    pub(crate) fn is_option_name(self, word: &str) -> bool {
        self.option_owner(word).is_some()
    }

    /// The first kind that takes the option `word`, to say where a misplaced option belongs.
    pub(crate) fn option_owner(self, word: &str) -> Option<&'static str> {
        self.iter()
            .find(|kind| kind.options.iter().any(|o| o.name == word))
            .map(|kind| kind.name)
    }

    /// What to add to the error about the modifier `word` on a stage that does not take it: a
    /// hint from the kind it belongs to, or nothing.
    pub(crate) fn modifier_hint(self, word: &str) -> &'static str {
        self.iter()
            .flat_map(|kind| kind.modifiers)
            .find(|m| m.word == word && !m.hint.is_empty())
            .map_or("", |m| m.hint)
    }

    /// Whether the stage name `word` takes [`Positional::Pieces`], which the parser keeps as
    /// tokens.
    pub(crate) fn takes_pieces(self, word: &str) -> bool {
        self.iter()
            .any(|kind| kind.name == word && matches!(kind.positional, Positional::Pieces))
    }
}

impl KindDescriptor {
    /// The form that exactly the modifiers `set` select.
    pub(crate) fn form_for(&self, set: &BTreeSet<String>) -> Option<&'static Form> {
        self.forms.iter().find(|form| form.selected_by(set))
    }

    /// The form closest to the modifiers `set`, for a set that selects none: the one with
    /// the most modifiers, all of them in `set` (the first such one).
    pub(crate) fn closest_form(&self, set: &BTreeSet<String>) -> &'static Form {
        let mut best = &self.forms[0];
        for form in self.forms {
            if form.modifiers.iter().all(|m| set.contains(*m))
                && form.modifiers.len() > best.modifiers.len()
            {
                best = form;
            }
        }
        best
    }

    /// How the first positional argument is written in the list of forms (`f`), or `..`.
    pub(crate) fn placeholder(&self) -> &'static str {
        match self.positional {
            Positional::Exprs([first, ..]) => first.placeholder,
            _ => "..",
        }
    }
}

/// `a, b, c and d`, for the lists in messages.
pub(crate) fn and_list(items: &[String]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => items.join(""),
    }
}
