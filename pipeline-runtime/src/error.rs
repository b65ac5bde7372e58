//! The errors beyond the common path. A pipeline that fails as a whole gives the consumer a
//! [`PipelineError`](crate::PipelineError) (at the crate root): it names the stage whose
//! failures ended the run ([`StageFailure`], of a [`StageFailureKind`]) and which
//! [`BudgetScope`] ran out, and carries the causes, each an [`ItemError`] (one item failed
//! in one stage: its function returned `Err` or panicked). An invalid pipeline definition is
//! a [`BuildError`], from `build()`; [`GetError`] says why
//! [`Pipeline::get_timeout`](crate::Pipeline::get_timeout) returned no item.

pub use crate::failure::{BudgetScope, BuildError, ItemError, StageFailure, StageFailureKind};
pub use crate::pipeline::GetError;
