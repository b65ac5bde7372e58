//! The checked pipeline that `validate` hands to `expand`.
//!
//! A checked pipeline is a list of checked stages, each one made by its stage kind
//! (`stages/*.rs`) from the stage as written, and able to expand itself. This file knows
//! nothing of the kinds, so `expand` can walk the pipeline without knowing them either.

use proc_macro2::TokenStream;

/// The checked pipeline, as complete as the input allows.
pub(crate) struct CheckedPipeline {
    /// `None` when the input has no usable source (an error says so).
    pub(crate) source: Option<CheckedStage>,
    /// The stages between the source and the sink, in order.
    pub(crate) stages: Vec<CheckedStage>,
    /// `None` when the input has no sink (an error says so).
    pub(crate) sink: Option<CheckedStage>,
    /// What is expanded in place of a missing source and a missing sink, so that the stages
    /// in between still expand and rustc still checks them.
    pub(crate) stand_ins: (CheckedStage, CheckedStage),
}

/// A checked chain inside a structure (a merge input, a route branch): its first stage (a
/// merge input's source) and the stages after it.
#[derive(Default)]
pub(crate) struct CheckedChain {
    pub(crate) source: Option<CheckedStage>,
    pub(crate) stages: Vec<CheckedStage>,
}

/// One checked stage, with the words that name it in error messages, e.g. "stage 3
/// `pipe(decode)`".
pub(crate) struct CheckedStage {
    pub(crate) label: String,
    pub(crate) stage: Box<dyn ExpandStage>,
}

/// A stage that has been checked and can be expanded.
pub(crate) trait ExpandStage {
    /// The stage's tokens: `let __pipeline_stage = ..;` for the source and the stages after
    /// it, and the value of the whole pipeline for the sink.
    fn expand(&self, cx: &ExpandContext<'_>) -> TokenStream;

    /// A note for the type error of the next stage when that stage does not take what this
    /// one produces, when this one produces something unexpected (batches, say).
    fn note_for_next(&self) -> Option<&'static str> {
        None
    }
}

/// Where a stage stands, for its messages.
pub(crate) struct ExpandContext<'a> {
    /// The stage's own label.
    pub(crate) label: &'a str,
    /// The label of the stage before it (empty for the source).
    pub(crate) prev: &'a str,
    /// What the stage before it says about its output, see [`ExpandStage::note_for_next`].
    pub(crate) prev_note: Option<&'static str>,
}
