//! The stage a builder has open (the one added last) and how its options reach it:
//! `.pipe(f).concurrency(4).name("decode")`, `.aggregate(32).drop_last(true)`.
//!
//! Each stage kind owns the type of its options (`PipeOptions`, `AggregateOptions`, ...) and
//! the methods that set them, in its own module under `stage/`. The open stage holds its
//! options as that type behind [`Open`]; a setter reaches them with
//! [`StageBuilder::kind_option`], which finds them by type, so no list here names every
//! kind. `name` and `buffer`, which several kinds take, go through [`KindOptions`].
//!
//! An option given to a stage that does not have it (`.aggregate(8).concurrency(2)`) is a
//! definition error that `build()` reports, naming the option and the stage. It is not a
//! compile error on purpose: every builder of a chain whose items are `T` has the one type
//! `StageBuilder<T>`, so that a chain assembled at run time (in a loop, by functions that
//! add stages) needs no conversions; a type per open stage kind would break that. The
//! `pipeline!` macro rejects a misplaced option at compile time.

use std::any::Any;

use super::{Chain, StageBuilder};
use crate::failure::BuildError;
use crate::launch::LaunchFn;

/// The options of one kind of stage.
pub(crate) trait KindOptions: Any + Send {
    /// The stage's `name` option, if the kind takes one.
    fn name(&mut self) -> Option<&mut Option<String>> {
        None
    }

    /// The capacity of the stage's input queue (`buffer`), if the kind takes one.
    fn buffer(&mut self) -> Option<&mut Option<usize>> {
        None
    }
}

/// A stage that takes no options.
#[derive(Debug, Default)]
pub(crate) struct NoOptions;

impl KindOptions for NoOptions {}

/// The open stage: its options, and how it turns into its launch function once they are
/// fixed.
pub(crate) trait Open<T>: Send {
    /// What the stage is, for the error of an option it does not take ("an `aggregate`
    /// stage").
    fn what(&self) -> &'static str;
    fn options(&mut self) -> &mut dyn KindOptions;
    /// Fixes the options: the stage's launch function, and its entries in the chain.
    fn finish(self: Box<Self>, chain: &mut Chain) -> LaunchFn<T>;
}

/// An [`Open`] stage from its options and the function that finishes it.
pub(crate) struct Opened<O, F> {
    pub(crate) what: &'static str,
    pub(crate) options: O,
    pub(crate) finish: F,
}

impl<T, O, F> Open<T> for Opened<O, F>
where
    O: KindOptions,
    F: FnOnce(O, &mut Chain) -> LaunchFn<T> + Send,
{
    fn what(&self) -> &'static str {
        self.what
    }

    fn options(&mut self) -> &mut dyn KindOptions {
        &mut self.options
    }

    fn finish(self: Box<Self>, chain: &mut Chain) -> LaunchFn<T> {
        (self.finish)(self.options, chain)
    }
}

/// An open stage whose options are closed: every option given to it is misplaced.
struct Closed<T> {
    what: &'static str,
    stage: Box<dyn Open<T>>,
    none: NoOptions,
}

impl<T> Open<T> for Closed<T> {
    fn what(&self) -> &'static str {
        self.what
    }

    fn options(&mut self) -> &mut dyn KindOptions {
        &mut self.none
    }

    fn finish(self: Box<Self>, chain: &mut Chain) -> LaunchFn<T> {
        self.stage.finish(chain)
    }
}

impl<T: 'static> StageBuilder<T> {
    /// Closes the stage just added to options (it takes none); `what` names it in errors.
    pub(crate) fn without_options(self, what: &'static str) -> Self {
        let stage = self.open;
        Self {
            chain: self.chain,
            open: Box::new(Closed {
                what,
                stage,
                none: NoOptions,
            }),
        }
    }
}

impl<T> StageBuilder<T> {
    /// The name of the stage just added, in logs, errors and stats (default: the function's
    /// name, else `pipe#N`; `aggregate(N, drop_last=..)` for a batch stage).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        match self.open.options().name() {
            Some(slot) => *slot = Some(name.into()),
            None => self.misplaced("name"),
        }
        self
    }

    /// Capacity of the queue in front of the stage just added (default: the pipeline's
    /// `queue_capacity`; for an async stage, when `queue_capacity` is not set, its
    /// concurrency if that is larger, so that every lane finds an item waiting). Lower it for
    /// large items.
    pub fn buffer(mut self, capacity: usize) -> Self {
        match self.open.options().buffer() {
            Some(slot) => *slot = Some(capacity),
            None => self.misplaced("buffer"),
        }
        self
    }

    /// Sets an option of the open stage's kind, whose options are an `O`; `option` names it
    /// in the error when the open stage is of another kind.
    pub(crate) fn kind_option<O: KindOptions>(
        mut self,
        option: &str,
        set: impl FnOnce(&mut O),
    ) -> Self {
        let options: &mut dyn Any = self.open.options();
        match options.downcast_mut::<O>() {
            Some(options) => set(options),
            None => self.misplaced(option),
        }
        self
    }

    fn misplaced(&mut self, option: &str) {
        let error = format!(
            "`{option}` is not an option of {}, the stage before it",
            self.open.what()
        );
        self.chain.errors.push(BuildError::new(error));
    }
}
