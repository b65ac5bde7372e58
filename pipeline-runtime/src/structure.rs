//! Structures: pipelines that are not one chain. A merge reads several inputs (each a source
//! with stages of its own) into one stream, in the order a [`MergePolicy`] picks (round-robin,
//! weighted, as available, or a [`MergeChooser`] of yours), until [`OnEnd`] says the merge
//! ends; a route sends each item down one of several branches and joins them again
//! ([`Route`], then [`Branches`]; per element of a batch, [`BatchedRoute`] and
//! [`BatchedBranches`]). Their inputs and branches run in the pipeline that holds them: the
//! same pools, statistics, failure budget and stop. The builder methods are
//! [`PipelineBuilder::merge`](crate::PipelineBuilder::merge),
//! [`StageBuilder::route`](crate::StageBuilder::route) and
//! [`StageBuilder::route_batched`](crate::StageBuilder::route_batched); the guide's chapter
//! "Merge, mix and route" shows them.

pub use crate::stage::merge::{MergeChooser, MergePolicy, OnEnd};
pub use crate::stage::route::{BatchedBranches, BatchedRoute, Branches, Route};
