//! Function shapes: what a stage function returns, and how that becomes the stage's output.
//!
//! A stage method's name says the shape with the same words the macro uses as modifiers:
//! `try` (a `Result`: `Err` fails the item), `opt` (an `Option`: `None` drops it), `flat` (an
//! iterator, or with `async` a stream: every element is passed on as it is produced), and
//! `try flat` (elements that are `Result`s: an `Err` ends that item's outputs and fails it).
//! Each shape turns the function's return value into one [`Output`], so that one lane loop
//! handles every shape.

use futures::{Stream, StreamExt};

use crate::error::BoxError;
use crate::stage::pipe::Output;

/// A way of reading a stage function's return value `R`.
pub(crate) trait Shape<R>: 'static {
    /// The items the stage passes on.
    type Item: Send + 'static;
    /// Whether one input may give several outputs (which input order cannot keep with
    /// several lanes).
    const MANY: bool;
    fn output(returned: R) -> Output<Self::Item>;
}

/// One output per input.
pub(crate) struct One;
/// `Option`: `None` drops the item.
pub(crate) struct Opt;
/// `Result`: `Err` fails the item.
pub(crate) struct Try;
/// An iterator: its items, passed on as produced.
pub(crate) struct Flat;
/// An iterator of `Result`s: items until the first `Err`, which fails the input.
pub(crate) struct TryFlat;
/// A stream: its items, passed on as produced.
pub(crate) struct FlatStream;
/// A stream of `Result`s: items until the first `Err`, which fails the input.
pub(crate) struct TryFlatStream;

impl<U: Send + 'static> Shape<U> for One {
    type Item = U;
    const MANY: bool = false;
    fn output(returned: U) -> Output<U> {
        Output::One(returned)
    }
}

impl<U: Send + 'static> Shape<Option<U>> for Opt {
    type Item = U;
    const MANY: bool = false;
    fn output(returned: Option<U>) -> Output<U> {
        returned.map_or(Output::Skip, Output::One)
    }
}

impl<U: Send + 'static, E: Into<BoxError>> Shape<Result<U, E>> for Try {
    type Item = U;
    const MANY: bool = false;
    fn output(returned: Result<U, E>) -> Output<U> {
        match returned {
            Ok(value) => Output::One(value),
            Err(error) => Output::Fail(error.into()),
        }
    }
}

impl<I> Shape<I> for Flat
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    type Item = I::Item;
    const MANY: bool = true;
    fn output(returned: I) -> Output<I::Item> {
        Output::Iter(Box::new(returned.into_iter().map(Ok)))
    }
}

impl<I, U, E> Shape<I> for TryFlat
where
    I: IntoIterator<Item = Result<U, E>>,
    I::IntoIter: Send + 'static,
    U: Send + 'static,
    E: Into<BoxError>,
{
    type Item = U;
    const MANY: bool = true;
    fn output(returned: I) -> Output<U> {
        Output::Iter(Box::new(
            returned.into_iter().map(|r| r.map_err(Into::into)),
        ))
    }
}

impl<S> Shape<S> for FlatStream
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    type Item = S::Item;
    const MANY: bool = true;
    fn output(returned: S) -> Output<S::Item> {
        Output::Stream(returned.map(Ok).boxed())
    }
}

impl<S, U, E> Shape<S> for TryFlatStream
where
    S: Stream<Item = Result<U, E>> + Send + 'static,
    U: Send + 'static,
    E: Into<BoxError>,
{
    type Item = U;
    const MANY: bool = true;
    fn output(returned: S) -> Output<U> {
        Output::Stream(returned.map(|r| r.map_err(Into::into)).boxed())
    }
}
