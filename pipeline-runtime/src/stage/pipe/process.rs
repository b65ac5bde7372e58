//! Process stages: a registered `fn` run in the worker processes of a
//! [`ProcessPool`](crate::process::ProcessPool), in the same shapes as thread stages
//! (`process_pipe`, `process_try_pipe`, ...; `pipe(process try f)` in the macro).
//!
//! Only the function's type crosses: the worker finds it by name, so it must be registered
//! with [`process_fn!`](crate::process_fn). Inputs and return values cross with serde; the
//! shape is applied in the parent, to the decoded return value, so a `Result`'s `Err` (or an
//! `Option`'s `None`) means the same as in a thread stage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::options::PipeOptions;
use super::process_body::{check_registered, process_body};
use super::shape::{Flat, One, Opt, Shape, StageFn, StageItem, Try, TryFlat};
use super::{PipeSpec, Runs, StageParts};
use crate::builder::{fn_name, StageBuilder};
use crate::failure::BoxError;
use crate::stats::StageKind;

impl<T: Send + 'static> StageBuilder<T> {
    /// Opens a process stage whose decoded return value reads as shape `S`.
    fn process_stage<S, R, F>(mut self, f: F) -> StageBuilder<S::Item>
    where
        T: Serialize,
        S: Shape<R>,
        R: DeserializeOwned + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let _ = f; // only its type crosses: the worker finds the function by name
        let name = fn_name::<F>().unwrap_or_else(|| "process stage".to_owned());
        if let Err(error) = check_registered::<F>(&name) {
            self.push_error(error);
        }
        self.add_pipe(PipeSpec {
            runs: Runs::Processes,
            many: S::MANY,
            default_name: fn_name::<F>(),
            kind: StageKind::Pipe,
            pinned: None,
            parts: Box::new(|opts: &PipeOptions, name: &str| {
                let (body, release) =
                    process_body::<T, R, S::Item, F>(opts.executor.as_ref(), name, S::output);
                StageParts {
                    body,
                    on_stop: Some(release),
                }
            }),
        })
    }

    /// A process stage: each input is encoded with serde, sent to a worker of the stage's
    /// [`ProcessPool`](crate::process::ProcessPool) (`.executor(&pool)`), and `f`'s output
    /// sent back. `f` is a named `fn` registered with [`process_fn!`](crate::process_fn). A
    /// panic in `f` fails that item, and so does a worker that dies while running it (the
    /// pool replaces the worker).
    ///
    /// `f: fn(T) -> U`, `T: Serialize`, `U: Deserialize`.
    pub fn process_pipe<F: ProcessPipeFn<T>>(self, f: F) -> StageBuilder<F::Item>
    where
        T: ProcessInput,
    {
        self.process_stage::<One, F::Item, F>(f)
    }

    /// A fallible process stage: an `Err` returned in the worker fails the item (the error
    /// crosses with serde, so `E` is `Serialize + Deserialize`, e.g. a `String`).
    ///
    /// `f: fn(T) -> Result<U, E>`, `T: Serialize`, `U` and `E: Deserialize`.
    pub fn process_try_pipe<F: ProcessTryPipeFn<T>>(self, f: F) -> StageBuilder<F::Item>
    where
        T: ProcessInput,
    {
        self.process_stage::<Try, Result<F::Item, F::Error>, F>(f)
    }

    /// A process stage that may drop items (`None`).
    ///
    /// `f: fn(T) -> Option<U>`, `T: Serialize`, `U: Deserialize`.
    pub fn process_opt_pipe<F: ProcessOptPipeFn<T>>(self, f: F) -> StageBuilder<F::Item>
    where
        T: ProcessInput,
    {
        self.process_stage::<Opt, Option<F::Item>, F>(f)
    }

    /// A one-to-many process stage: the worker returns a collection (e.g. a `Vec`), whose
    /// items are passed on one by one.
    ///
    /// `f: fn(T) -> I`, `T: Serialize`, `I: IntoIterator + Deserialize`.
    pub fn process_flat_pipe<F: ProcessFlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item>
    where
        T: ProcessInput,
    {
        self.process_stage::<Flat, F::Items, F>(f)
    }

    /// A one-to-many process stage whose collection holds `Result`s: items before the first
    /// `Err` are passed on, and the `Err` fails the input.
    ///
    /// `f: fn(T) -> I`, `T: Serialize`, `I: IntoIterator<Item = Result<U, E>>` and
    /// `Deserialize`.
    pub fn process_try_flat_pipe<F: ProcessTryFlatPipeFn<T>>(self, f: F) -> StageBuilder<F::Item>
    where
        T: ProcessInput,
    {
        self.process_stage::<TryFlat, F::Items, F>(f)
    }
}

/// What a process stage takes: it is encoded and sent to a worker process.
#[diagnostic::on_unimplemented(
    message = "a process stage's input must be `serde::Serialize`, and `{Self}` is not",
    label = "this stage's input is sent to a worker process",
    note = "items cross the process boundary with serde: derive `serde::Serialize` and \
            `serde::Deserialize` for `{Self}`, or send something that does (e.g. bytes, a path)"
)]
pub trait ProcessInput: Serialize {}

#[diagnostic::do_not_recommend]
impl<T: Serialize> ProcessInput for T {}

/// What a process stage produces: it is decoded from the worker's reply.
#[diagnostic::on_unimplemented(
    message = "a process stage's output must be `serde::Deserialize`, and `{Self}` is not",
    label = "this stage's output comes back from a worker process",
    note = "items cross the process boundary with serde: derive `serde::Serialize` and \
            `serde::Deserialize` for `{Self}`; a handle to a resource (a file, a socket, a GPU \
            buffer) cannot cross it"
)]
pub trait ProcessOutput: DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> ProcessOutput for T {}

// The bounds of each process shape's function, stated once (see `shape`): as the thread
// shapes', plus what crosses back from the worker with serde. The input's bound
// (`Serialize`) is on the builder method, since it is a bound on the chain's items.

/// A `process_pipe` stage function (registered with `process_fn!`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `process_pipe` stage function taking `{A}`",
    label = "expected `fn({A}) -> U`, with `U: Deserialize`"
)]
pub trait ProcessPipeFn<A>: Fn(A) -> Self::Item + StageFn {
    /// What the function returns, sent back and passed on.
    type Item: ProcessOutput + StageItem;
}

impl<A, U, F> ProcessPipeFn<A> for F
where
    F: Fn(A) -> U + StageFn,
    U: ProcessOutput + StageItem,
{
    type Item = U;
}

/// A `process_try_pipe` stage function: an `Err` fails the item.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `process_try_pipe` stage function taking `{A}`",
    label = "expected `fn({A}) -> Result<U, E>`, with `U` and `E: Deserialize`"
)]
pub trait ProcessTryPipeFn<A>: Fn(A) -> Result<Self::Item, Self::Error> + StageFn {
    /// The `Ok` value, sent back and passed on.
    type Item: ProcessOutput + StageItem;
    /// The `Err` value, sent back, which fails the item.
    type Error: ProcessOutput + Into<BoxError> + 'static;
}

impl<A, U, E, F> ProcessTryPipeFn<A> for F
where
    F: Fn(A) -> Result<U, E> + StageFn,
    U: ProcessOutput + StageItem,
    E: ProcessOutput + Into<BoxError> + 'static,
{
    type Item = U;
    type Error = E;
}

/// A `process_opt_pipe` stage function: `None` drops the item.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `process_opt_pipe` stage function taking `{A}`",
    label = "expected `fn({A}) -> Option<U>`, with `U: Deserialize`"
)]
pub trait ProcessOptPipeFn<A>: Fn(A) -> Option<Self::Item> + StageFn {
    /// The `Some` value, sent back and passed on.
    type Item: ProcessOutput + StageItem;
}

impl<A, U, F> ProcessOptPipeFn<A> for F
where
    F: Fn(A) -> Option<U> + StageFn,
    U: ProcessOutput + StageItem,
{
    type Item = U;
}

/// A `process_flat_pipe` stage function: a collection, whose items are passed on.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `process_flat_pipe` stage function taking `{A}`",
    label = "expected `fn({A}) -> I`, with `I: IntoIterator + Deserialize`"
)]
pub trait ProcessFlatPipeFn<A>: Fn(A) -> Self::Items + StageFn {
    /// The collection the function returns, sent back whole.
    type Items: IntoIterator<Item = Self::Item, IntoIter: Send + 'static> + ProcessOutput + 'static;
    /// One output.
    type Item: StageItem;
}

impl<A, I, F> ProcessFlatPipeFn<A> for F
where
    F: Fn(A) -> I + StageFn,
    I: IntoIterator<IntoIter: Send + 'static, Item: StageItem> + ProcessOutput + 'static,
{
    type Items = I;
    type Item = I::Item;
}

/// A `process_try_flat_pipe` stage function: a collection of `Result`s.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `process_try_flat_pipe` stage function taking `{A}`",
    label = "expected `fn({A}) -> I`, with `I: IntoIterator<Item = Result<U, E>> + Deserialize`"
)]
pub trait ProcessTryFlatPipeFn<A>: Fn(A) -> Self::Items + StageFn {
    /// The collection the function returns, sent back whole.
    type Items: IntoIterator<Item = Result<Self::Item, Self::Error>, IntoIter: Send + 'static>
        + ProcessOutput
        + 'static;
    /// One output.
    type Item: StageItem;
    /// The error that fails the input.
    type Error: Into<BoxError>;
}

impl<A, I, U, E, F> ProcessTryFlatPipeFn<A> for F
where
    F: Fn(A) -> I + StageFn,
    I: IntoIterator<Item = Result<U, E>, IntoIter: Send + 'static> + ProcessOutput + 'static,
    U: StageItem,
    E: Into<BoxError>,
{
    type Items = I;
    type Item = U;
    type Error = E;
}
