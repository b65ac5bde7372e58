//! Process stages: a registered `fn` run in the worker processes of a
//! [`ProcessPool`](crate::ProcessPool), in the same shapes as thread stages
//! (`process_pipe`, `process_try_pipe`, ...; `pipe(process try f)` in the macro).
//!
//! Only the function's type crosses: the worker finds it by name, so it must be registered
//! with [`process_fn!`](crate::process_fn). Inputs and return values cross with serde; the
//! shape is applied in the parent, to the decoded return value, so a `Result`'s `Err` (or an
//! `Option`'s `None`) means the same as in a thread stage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pipe::{PipeSpec, Runs, StageParts};
use super::shape::{Flat, One, Opt, Shape, Try, TryFlat};
use super::PipeOptions;
use super::{fn_name, StageBuilder};
use crate::error::BoxError;
use crate::process::stage_parent::{check_registered, process_body};
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
    /// [`ProcessPool`](crate::ProcessPool) (`.executor(&pool)`), and `f`'s output sent back.
    /// `f` is a named `fn` registered with [`process_fn!`](crate::process_fn). A panic in `f`
    /// fails that item, and so does a worker that dies while running it (the pool replaces
    /// the worker).
    pub fn process_pipe<U, F>(self, f: F) -> StageBuilder<U>
    where
        T: Serialize,
        U: DeserializeOwned + Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        self.process_stage::<One, U, F>(f)
    }

    /// A fallible process stage: an `Err` returned in the worker fails the item (the error
    /// crosses with serde, so `E` is `Serialize + Deserialize`, e.g. a `String`).
    pub fn process_try_pipe<U, E, F>(self, f: F) -> StageBuilder<U>
    where
        T: Serialize,
        U: DeserializeOwned + Send + 'static,
        E: DeserializeOwned + Into<BoxError> + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        self.process_stage::<Try, Result<U, E>, F>(f)
    }

    /// A process stage that may drop items (`None`).
    pub fn process_opt_pipe<U, F>(self, f: F) -> StageBuilder<U>
    where
        T: Serialize,
        U: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Option<U> + Send + Sync + 'static,
    {
        self.process_stage::<Opt, Option<U>, F>(f)
    }

    /// A one-to-many process stage: the worker returns a collection (e.g. a `Vec`), whose
    /// items are passed on one by one.
    pub fn process_flat_pipe<I, F>(self, f: F) -> StageBuilder<I::Item>
    where
        T: Serialize,
        I: IntoIterator + DeserializeOwned + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        self.process_stage::<Flat, I, F>(f)
    }

    /// A one-to-many process stage whose collection holds `Result`s: items before the first
    /// `Err` are passed on, and the `Err` fails the input.
    pub fn process_try_flat_pipe<U, E, I, F>(self, f: F) -> StageBuilder<U>
    where
        T: Serialize,
        U: Send + 'static,
        E: Into<BoxError>,
        I: IntoIterator<Item = Result<U, E>> + DeserializeOwned + 'static,
        I::IntoIter: Send + 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        self.process_stage::<TryFlat, I, F>(f)
    }
}
