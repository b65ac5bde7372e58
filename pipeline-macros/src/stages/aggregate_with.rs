//! `aggregate_with(aggregator)`: a stage that groups items with a custom aggregator.
//!
//! It takes the options of `aggregate` and expands the same way, to another builder method.

use super::aggregate::{AggregateStep, OPTIONS};
use super::kind::{Checks, OptionSpec, Place, Positional, StageKind};
use super::option::Options;
use crate::expr::describe;
use crate::plan::Step;
use crate::syntax::Stage;

/// The builder method, as `.method(aggregator)` followed by the option setters.
const METHOD: &str = "aggregate_with";

pub(crate) struct AggregateWith;

impl StageKind for AggregateWith {
    fn name(&self) -> &'static str {
        "aggregate_with"
    }

    fn place(&self) -> Place {
        Place::Between
    }

    fn positional(&self) -> Positional {
        Positional::One {
            what: "an aggregator",
            example: "..",
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn plan(
        &self,
        stage: &Stage,
        implied: &[&'static str],
        number: usize,
        checks: &mut dyn Checks,
    ) -> Option<Step> {
        checks.modifiers(stage, implied, self.modifiers());
        let options = Options::checked(stage, OPTIONS, checks);
        let aggregator = checks.positional(stage, &self.positional())?;
        Some(Step {
            label: format!("stage {number} `aggregate_with({})`", describe(&aggregator)),
            stage: Box::new(AggregateStep {
                method: METHOD,
                arg: aggregator,
                options,
                span: stage.kind.span(),
            }),
        })
    }
}
