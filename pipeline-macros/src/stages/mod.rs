//! The stage kinds of the `pipeline!` macro, one file each, and the registry of them.
//!
//! Each kind's file holds all there is to say about the kind: its name and aliases, its
//! positional arguments, modifiers and options (with their value types and builder setters),
//! its own checks and its expansion. `parse` and `validate` learn the vocabulary here (which
//! words are stage names, modifiers and options), and `expand` only walks what the kinds
//! planned. A new stage kind is a new file implementing [`kind::StageKind`] and one line in
//! [`KINDS`].
//!
//! * `kind`: the descriptor trait, the data it declares, and the generic checks a kind may
//!   call;
//! * `option`: the checked options of a stage, and their setter calls;
//! * `source`, `pipe`, `aggregate`, `aggregate_with`, `disaggregate`, `process_region`
//!   (`region`), `sink`: the kinds;
//! * `merge`, `route`: the structures, whose arguments hold chains of stages (`structure`
//!   holds what they share).

pub(crate) mod kind;
pub(crate) mod option;

mod aggregate;
mod aggregate_with;
mod disaggregate;
mod merge;
mod pipe;
mod region;
mod route;
mod sink;
mod source;
mod structure;

use kind::StageKind;

use crate::plan::Step;

/// Every stage kind, in the order they are listed (and suggested) in messages.
pub(crate) static KINDS: &[&dyn StageKind] = &[
    &source::Source,
    &pipe::Pipe,
    &aggregate::Aggregate,
    &aggregate_with::AggregateWith,
    &disaggregate::Disaggregate,
    &region::Region,
    &merge::Merge,
    &route::Route,
    &sink::Sink,
];

/// Whether `word` names a structure, whose arguments the parser keeps as tokens for the
/// kind to read (they hold chains of stages, which are not expressions).
pub(crate) fn is_structure(word: &str) -> bool {
    word == merge::NAME || word == route::NAME
}

/// Every name a stage can be written with, with its kind and the modifiers the name implies,
/// kind by kind: each kind's name, then its aliases.
pub(crate) fn names() -> Vec<(
    &'static str,
    &'static dyn StageKind,
    &'static [&'static str],
)> {
    let mut out = Vec::new();
    for kind in KINDS {
        out.push((kind.name(), *kind, &[][..]));
        for (alias, implied) in kind.aliases() {
            out.push((alias, *kind, implied));
        }
    }
    out
}

/// Whether `word` is a modifier of some stage kind (so that `pipe(flat f)` reads `flat` as
/// one).
pub(crate) fn is_modifier(word: &str) -> bool {
    KINDS
        .iter()
        .any(|kind| kind.modifiers().iter().any(|m| m.word == word))
}

/// Whether `word` is an option of some stage kind (used to read `pipe(f, concurrency)` as an
/// option whose value is missing rather than as a stray expression).
pub(crate) fn is_option_name(word: &str) -> bool {
    option_owner(word).is_some()
}

/// The first kind that takes the option `word`, to say where a misplaced option belongs.
pub(crate) fn option_owner(word: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|kind| kind.options().iter().any(|o| o.name == word))
        .map(|kind| kind.name())
}

/// What to add to the error about the modifier `word` on a stage that does not take it: a
/// hint from the kind it belongs to, or nothing.
pub(crate) fn modifier_hint(word: &str) -> &'static str {
    KINDS
        .iter()
        .flat_map(|kind| kind.modifiers())
        .find(|m| m.word == word && !m.hint.is_empty())
        .map_or("", |m| m.hint)
}

/// What stands in for a missing source and a missing sink in the expansion.
pub(crate) fn stand_ins() -> (Step, Step) {
    (source::stand_in(), sink::stand_in())
}

#[cfg(test)]
mod tests {
    use super::kind::Place;
    use super::*;

    #[test]
    fn every_name_is_one_kind() {
        let names: Vec<&str> = names().iter().map(|(name, ..)| *name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "`{name}` names two stages");
        }
    }

    #[test]
    fn aliases_imply_modifiers_of_their_kind() {
        for (name, kind, implied) in names() {
            for word in implied {
                assert!(
                    kind.modifiers().iter().any(|m| m.word == *word),
                    "`{name}` implies `{word}`, which `{}` does not take",
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn options_are_named_once_per_kind() {
        for kind in KINDS {
            let options = kind.options();
            for (i, o) in options.iter().enumerate() {
                assert!(
                    !options[..i].iter().any(|p| p.name == o.name),
                    "`{}` lists `{}` twice",
                    kind.name(),
                    o.name
                );
            }
        }
    }

    #[test]
    fn two_first_kinds_and_one_sink_kind() {
        // A pipeline starts with a source or a merge of sources.
        assert_eq!(
            KINDS.iter().filter(|k| k.place() == Place::First).count(),
            2
        );
        assert_eq!(KINDS.iter().filter(|k| k.place() == Place::Last).count(), 1);
    }
}
