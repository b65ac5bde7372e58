//! The checked pipeline that `validate` hands to `expand`.
//!
//! A plan is a list of planned stages, each one the checked form of a stage as written, made
//! by its stage kind (`stages/*.rs`) and able to expand itself. The plan knows nothing of the
//! kinds, so `expand` can walk it without knowing them either.

use proc_macro2::TokenStream;

/// The checked pipeline, as complete as the input allows.
pub(crate) struct Plan {
    /// `None` when the input has no usable source (an error says so).
    pub(crate) source: Option<Step>,
    /// The stages between the source and the sink, in order.
    pub(crate) steps: Vec<Step>,
    /// `None` when the input has no sink (an error says so).
    pub(crate) sink: Option<Step>,
    /// What is expanded in place of a missing source and a missing sink, so that the stages
    /// in between still expand and rustc still checks them.
    pub(crate) stand_ins: (Step, Step),
}

/// One planned stage, with the words that name it in error messages, e.g. "stage 3
/// `pipe(decode)`".
pub(crate) struct Step {
    pub(crate) label: String,
    pub(crate) stage: Box<dyn Planned>,
}

/// A stage that has been checked and can be expanded.
pub(crate) trait Planned {
    /// The stage's tokens: `let __pipeline_stage = ..;` for the source and the stages after
    /// it, and the value of the whole pipeline for the sink.
    fn expand(&self, cx: &Context<'_>) -> TokenStream;

    /// A note for the type error of the next stage when that stage does not take what this
    /// one produces, when this one produces something unexpected (batches, say).
    fn note_for_next(&self) -> Option<&'static str> {
        None
    }
}

/// Where a stage stands, for its messages.
pub(crate) struct Context<'a> {
    /// The stage's own label.
    pub(crate) label: &'a str,
    /// The label of the stage before it (empty for the source).
    pub(crate) prev: &'a str,
    /// What the stage before it says about its output, see [`Planned::note_for_next`].
    pub(crate) prev_note: Option<&'static str>,
}
