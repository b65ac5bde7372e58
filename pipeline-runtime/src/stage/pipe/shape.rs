//! Function shapes: what a stage function returns, and how that becomes the stage's output.
//!
//! A stage method's name says the shape with the same words the macro uses as modifiers:
//! `try` (a `Result`: `Err` fails the item), `opt` (an `Option`: `None` drops it), `flat` (an
//! iterator, or with `async` a stream: every element is passed on as it is produced), and
//! `try flat` (elements that are `Result`s: an `Err` ends that item's outputs and fails it).
//! Each shape turns the function's return value into one [`Output`], so that one lane loop
//! handles every shape.
//!
//! Each shape's bound on its function is stated once, as a trait ([`PipeFn`],
//! [`TryPipeFn`], ...): the builder's methods and the macro's guards both use it.

use futures::{Stream, StreamExt};

use super::lane::Output;
use crate::failure::BoxError;

/// A way of reading a stage function's return value `R`.
pub(crate) trait Shape<R>: 'static {
    /// The items the stage passes on.
    type Item: StageItem;
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

impl<U: StageItem, E: Into<BoxError>> Shape<Result<U, E>> for Try {
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
    U: StageItem,
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
    U: StageItem,
    E: Into<BoxError>,
{
    type Item = U;
    const MANY: bool = true;
    fn output(returned: S) -> Output<U> {
        Output::Stream(returned.map(|r| r.map_err(Into::into)).boxed())
    }
}

// What every stage function and every item must be, with messages that say why; the
// shapes' traits below build on them, so a builder user and a `pipeline!` user read the same
// message.

/// A stage function: called from the pipeline's threads, concurrently, for as long as the
/// pipeline runs.
#[diagnostic::on_unimplemented(
    message = "a stage function must be `Send + Sync + 'static`, and `{Self}` is not",
    label = "this stage function cannot be sent to the pipeline's threads",
    note = "the pipeline calls a stage function from its worker threads, on several items at \
            once, for as long as the pipeline runs, which can outlive the scope that built it; \
            capture `Arc`s rather than `Rc`s or references, and use `move` closures"
)]
pub trait StageFn: Send + Sync + 'static {}

#[diagnostic::do_not_recommend]
impl<F: Send + Sync + 'static> StageFn for F {}

/// An item passed from one stage to the next.
#[diagnostic::on_unimplemented(
    message = "the items passed between stages must be `Send + 'static`, and `{Self}` is not",
    label = "this stage produces `{Self}`",
    note = "stages run on different threads and items wait in queues between them"
)]
pub trait StageItem: Send + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Send + 'static> StageItem for T {}

// The bounds of each shape's stage function, stated once: the builder's methods take an
// `F` bounded by one of these traits, and the `pipeline!` macro's guard functions name the
// same trait (through `__private`), so that a changed bound changes both. Each is
// implemented for every function that fits (and only those): it is a bound, not an
// extension point. Their associated types name what the function returns.

/// A `pipe` stage function: one output per input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> U`, with `U: Send + 'static`, itself `Send + Sync + 'static`"
)]
pub trait PipeFn<A>: Fn(A) -> Self::Item + StageFn {
    /// What the function returns, passed on.
    type Item: StageItem;
}

impl<A, U, F> PipeFn<A> for F
where
    F: Fn(A) -> U + StageFn,
    U: StageItem,
{
    type Item = U;
}

/// A `try_pipe` stage function: `Err` fails the item.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `try_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> Result<U, E>`, with `E: Into<BoxError>`"
)]
pub trait TryPipeFn<A>: Fn(A) -> Result<Self::Item, Self::Error> + StageFn {
    /// The `Ok` value, passed on.
    type Item: StageItem;
    /// The `Err` value, which fails the item.
    type Error: Into<BoxError>;
}

impl<A, U, E, F> TryPipeFn<A> for F
where
    F: Fn(A) -> Result<U, E> + StageFn,
    U: StageItem,
    E: Into<BoxError>,
{
    type Item = U;
    type Error = E;
}

/// An `opt_pipe` stage function: `None` drops the item.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `opt_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> Option<U>`"
)]
pub trait OptPipeFn<A>: Fn(A) -> Option<Self::Item> + StageFn {
    /// The `Some` value, passed on.
    type Item: StageItem;
}

impl<A, U, F> OptPipeFn<A> for F
where
    F: Fn(A) -> Option<U> + StageFn,
    U: StageItem,
{
    type Item = U;
}

/// A `flat_pipe` stage function: any number of outputs per input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `flat_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> I`, with `I: IntoIterator` whose iterator is `Send + 'static`"
)]
pub trait FlatPipeFn<A>: Fn(A) -> Self::Items + StageFn {
    /// What the function returns: its items are passed on as they are produced.
    type Items: IntoIterator<Item = Self::Item, IntoIter: Send + 'static>;
    /// One output.
    type Item: StageItem;
}

impl<A, I, F> FlatPipeFn<A> for F
where
    F: Fn(A) -> I + StageFn,
    I: IntoIterator<IntoIter: Send + 'static, Item: StageItem>,
{
    type Items = I;
    type Item = I::Item;
}

/// A `try_flat_pipe` stage function: outputs until the first `Err`, which fails the input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `try_flat_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> I`, with `I: IntoIterator<Item = Result<U, E>>`"
)]
pub trait TryFlatPipeFn<A>: Fn(A) -> Self::Items + StageFn {
    /// What the function returns.
    type Items: IntoIterator<Item = Result<Self::Item, Self::Error>, IntoIter: Send + 'static>;
    /// One output.
    type Item: StageItem;
    /// The error that fails the input.
    type Error: Into<BoxError>;
}

impl<A, I, U, E, F> TryFlatPipeFn<A> for F
where
    F: Fn(A) -> I + StageFn,
    I: IntoIterator<Item = Result<U, E>, IntoIter: Send + 'static>,
    U: StageItem,
    E: Into<BoxError>,
{
    type Items = I;
    type Item = U;
    type Error = E;
}

/// An `async_pipe` stage function: a future of one output per input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `async_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> Fut`, with `Fut: Future + Send + 'static`"
)]
pub trait AsyncPipeFn<A>: Fn(A) -> Self::Fut + StageFn {
    /// The future the function returns.
    type Fut: std::future::Future<Output = Self::Item> + Send + 'static;
    /// Its output, passed on.
    type Item: StageItem;
}

impl<A, Fut, F> AsyncPipeFn<A> for F
where
    F: Fn(A) -> Fut + StageFn,
    Fut: std::future::Future<Output: StageItem> + Send + 'static,
{
    type Fut = Fut;
    type Item = Fut::Output;
}

/// An `async_try_pipe` stage function: a future of a `Result`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `async_try_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> Fut`, with `Fut: std::future::Future<Output = Result<U, E>> + Send + 'static`"
)]
pub trait AsyncTryPipeFn<A>: Fn(A) -> Self::Fut + StageFn {
    /// The future the function returns.
    type Fut: std::future::Future<Output = Result<Self::Item, Self::Error>> + Send + 'static;
    /// The `Ok` value, passed on.
    type Item: StageItem;
    /// The `Err` value, which fails the item.
    type Error: Into<BoxError> + 'static;
}

impl<A, Fut, U, E, F> AsyncTryPipeFn<A> for F
where
    F: Fn(A) -> Fut + StageFn,
    Fut: std::future::Future<Output = Result<U, E>> + Send + 'static,
    U: StageItem,
    E: Into<BoxError> + 'static,
{
    type Fut = Fut;
    type Item = U;
    type Error = E;
}

/// An `async_opt_pipe` stage function: a future of an `Option`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `async_opt_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> Fut`, with `Fut: std::future::Future<Output = Option<U>> + Send + 'static`"
)]
pub trait AsyncOptPipeFn<A>: Fn(A) -> Self::Fut + StageFn {
    /// The future the function returns.
    type Fut: std::future::Future<Output = Option<Self::Item>> + Send + 'static;
    /// The `Some` value, passed on.
    type Item: StageItem;
}

impl<A, Fut, U, F> AsyncOptPipeFn<A> for F
where
    F: Fn(A) -> Fut + StageFn,
    Fut: std::future::Future<Output = Option<U>> + Send + 'static,
    U: StageItem,
{
    type Fut = Fut;
    type Item = U;
}

/// An `async_flat_pipe` stage function: a stream of outputs per input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `async_flat_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> S`, with `S: Stream + Send + 'static`"
)]
pub trait AsyncFlatPipeFn<A>: Fn(A) -> Self::Stream + StageFn {
    /// The stream the function returns.
    type Stream: Stream<Item = Self::Item> + Send + 'static;
    /// One output.
    type Item: StageItem;
}

impl<A, S, F> AsyncFlatPipeFn<A> for F
where
    F: Fn(A) -> S + StageFn,
    S: Stream<Item: StageItem> + Send + 'static,
{
    type Stream = S;
    type Item = S::Item;
}

/// An `async_try_flat_pipe` stage function: a stream of `Result`s per input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `async_try_flat_pipe` stage function taking `{A}`",
    label = "expected `Fn({A}) -> S`, with `S: Stream<Item = Result<U, E>> + Send + 'static`"
)]
pub trait AsyncTryFlatPipeFn<A>: Fn(A) -> Self::Stream + StageFn {
    /// The stream the function returns.
    type Stream: Stream<Item = Result<Self::Item, Self::Error>> + Send + 'static;
    /// One output.
    type Item: StageItem;
    /// The error that fails the input.
    type Error: Into<BoxError>;
}

impl<A, S, U, E, F> AsyncTryFlatPipeFn<A> for F
where
    F: Fn(A) -> S + StageFn,
    S: Stream<Item = Result<U, E>> + Send + 'static,
    U: StageItem,
    E: Into<BoxError>,
{
    type Stream = S;
    type Item = U;
    type Error = E;
}
