//! The stage kinds of the `pipeline!` macro, one file each, and the one list of them.
//!
//! Each kind's file holds all there is to say about the kind: its descriptor (name, place,
//! modifiers and the forms they select, positional arguments, options with their value types
//! and builder setters; see `descriptor`), its own checks and its expansion. `parse` and
//! `validate` learn the vocabulary from [`KINDS`] (which words are stage names, modifiers and
//! options), `validate` runs the generic checks from the descriptors, and `expand` only walks
//! what the kinds planned. A new stage kind is a new file declaring a `KindDescriptor` and
//! one line in the list ([`KINDS`], written with `kinds!`, which also declares the module).
//!
//! * `source`, `pipe`, `aggregate`, `aggregate_with`, `aggregate_by`, `disaggregate`,
//!   `process_region` (`region`), `remote_region`, `sink`: the kinds;
//! * `merge`, `route`: the structures, whose arguments hold chains of stages (`structure`
//!   holds what they share).

mod structure;

use crate::checked::CheckedStage;
use crate::descriptor::Kinds;

/// Declares each kind's module and lists its descriptor in [`KINDS`], so that a kind is one
/// line here.
macro_rules! kinds {
    ($($module:ident::$descriptor:ident,)*) => {
        $(mod $module;)*

        /// Every stage kind, in the order they are listed (and suggested) in messages.
        pub(crate) const KINDS: Kinds = Kinds(&[$(&$module::$descriptor),*]);
    };
}

kinds! {
    source::SOURCE,
    pipe::PIPE,
    aggregate::AGGREGATE,
    aggregate_with::AGGREGATE_WITH,
    aggregate_by::AGGREGATE_BY,
    disaggregate::DISAGGREGATE,
    region::PROCESS_REGION,
    remote_region::REMOTE_REGION,
    merge::MERGE,
    route::ROUTE,
    sink::SINK,
}

/// What stands in for a missing source and a missing sink in the expansion.
pub(crate) fn stand_ins() -> (CheckedStage, CheckedStage) {
    (source::stand_in(), sink::stand_in())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::descriptor::{KindDescriptor, Place, Positional};

    fn kinds() -> impl Iterator<Item = &'static KindDescriptor> {
        KINDS.iter()
    }

    #[test]
    fn every_name_is_one_kind() {
        let names: Vec<&str> = KINDS.names().iter().map(|(name, ..)| *name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "`{name}` names two stages");
        }
    }

    #[test]
    fn forms_use_modifiers_of_their_kind() {
        for kind in kinds() {
            assert!(!kind.forms.is_empty(), "`{}` has no form", kind.name);
            assert!(
                kind.forms[0].modifiers.is_empty(),
                "`{}`'s first form has modifiers",
                kind.name
            );
            for (i, form) in kind.forms.iter().enumerate() {
                for word in form.modifiers {
                    assert!(
                        kind.modifiers.iter().any(|m| m.word == *word),
                        "`{}` selects `{word}`, which `{}` does not take",
                        form.method,
                        kind.name
                    );
                }
                let set: BTreeSet<String> =
                    form.modifiers.iter().map(|m| (*m).to_owned()).collect();
                assert!(
                    std::ptr::eq(kind.form_for(&set).unwrap(), form),
                    "`{}` and `{}` are selected by the same modifiers",
                    kind.forms[..i]
                        .iter()
                        .find(|f| f.modifiers.len() == set.len())
                        .map_or("?", |f| f.method),
                    form.method
                );
            }
        }
    }

    #[test]
    fn options_are_named_once_per_kind() {
        for kind in kinds() {
            let options = kind.options;
            for (i, o) in options.iter().enumerate() {
                assert!(
                    !options[..i].iter().any(|p| p.name == o.name),
                    "`{}` lists `{}` twice",
                    kind.name,
                    o.name
                );
            }
        }
    }

    #[test]
    fn structures_are_the_kinds_that_take_pieces() {
        let pieces: Vec<&str> = kinds()
            .filter(|k| matches!(k.positional, Positional::Pieces))
            .map(|k| k.name)
            .collect();
        assert_eq!(pieces, ["merge", "route"]);
    }

    #[test]
    fn two_first_kinds_and_one_sink_kind() {
        // A pipeline starts with a source or a merge of sources.
        assert_eq!(kinds().filter(|k| k.place == Place::First).count(), 2);
        assert_eq!(kinds().filter(|k| k.place == Place::Last).count(), 1);
    }
}
