//! What a registered function turns into in the child: a pipeline factory's pipeline or an
//! iterator factory's iterator as a [`Source`], and an initialiser's call; each decodes its
//! arguments and turns a panic into an error message.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::RemotePipelineError;
use super::output::{Emitter, Source, Step};
use crate::failure::BuildError;
use crate::pipeline::{GetError, Pipeline};
use crate::process::channel::decode;
use crate::queue::Msg;
use crate::sync::panic_message;

/// A pipeline or iterator factory as the registry keeps it: encoded arguments to the source
/// the child streams.
#[doc(hidden)]
pub type StartFn = fn(&[u8]) -> Result<Box<dyn Source>, String>;
/// An initialiser as the registry keeps it: encoded arguments to its call.
#[doc(hidden)]
pub type InitFn = fn(&[u8]) -> Result<(), String>;

pub(crate) struct PipelineSource<T> {
    pipeline: Pipeline<T>,
}

impl<T: Send + 'static> PipelineSource<T> {
    pub(crate) fn new(pipeline: Pipeline<T>) -> Self {
        Self { pipeline }
    }
}

impl<T: Serialize + Send + 'static> Source for PipelineSource<T> {
    fn step(&mut self, out: &mut Emitter) -> io::Result<Step> {
        match self.pipeline.next_msg(None) {
            Ok(Some(Msg::Item(item, _))) => out.item(&item).map(|()| Step::Item),
            Ok(Some(Msg::EpochEnd)) => Ok(Step::EpochEnd),
            Ok(None) | Err(GetError::Finished | GetError::Timeout) => Ok(Step::Finished),
            Err(GetError::Failed(e)) => Ok(Step::Failed(RemotePipelineError::from(&e))),
        }
    }
}

pub(crate) struct IterSource<I> {
    iter: I,
}

impl<I> IterSource<I> {
    pub(crate) fn new(iter: I) -> Self {
        Self { iter }
    }
}

impl<I: Iterator> Source for IterSource<I>
where
    I::Item: Serialize,
{
    fn step(&mut self, out: &mut Emitter) -> io::Result<Step> {
        match self.iter.next() {
            Some(item) => out.item(&item).map(|()| Step::Item),
            None => Ok(Step::Finished),
        }
    }
}

/// Registers functions that a subprocess can run; write it at module level, next to them:
///
/// * `pipeline f`: `fn(A) -> Result<Pipeline<T>, BuildError>` builds the pipeline that
///   [`run_pipeline_in_subprocess`](crate::subprocess::run_pipeline_in_subprocess) runs;
/// * `iter f`: `fn(A) -> I` where `I: IntoIterator`, for
///   [`iterate_in_subprocess`](crate::subprocess::iterate_in_subprocess);
/// * `init f`: `fn(A) -> Result<(), E>` where `E: Display`, an
///   [initialiser](crate::subprocess::SubprocessOptions::initializer).
///
/// `A` is `serde::Deserialize` and `T` (or `I::Item`) is `serde::Serialize`, checked here
/// at compile time.
///
/// ```
/// use pipeline_runtime::error::BuildError;
/// use pipeline_runtime::{Pipeline, PipelineBuilder};
///
/// fn squares(n: u64) -> Result<Pipeline<u64>, BuildError> {
///     PipelineBuilder::new().source(0..n).pipe(|x| x * x).sink().buffer(8).build()
/// }
/// fn letters(word: String) -> Vec<char> {
///     word.chars().collect()
/// }
/// fn setup(level: u32) -> Result<(), String> {
///     if level > 3 { Err(format!("no level {level}")) } else { Ok(()) }
/// }
/// pipeline_runtime::subprocess_fn!(pipeline squares, iter letters, init setup);
/// ```
#[macro_export]
macro_rules! subprocess_fn {
    ($($kind:ident $f:path),+ $(,)?) => {
        $( $crate::subprocess_fn!(@one $kind $f); )+
    };
    // One arm per kind, so that a misspelt kind is an error here.
    (@one pipeline $f:path) => { $crate::__private::register!(pipeline $f); };
    (@one iter $f:path) => { $crate::__private::register!(iter $f); };
    (@one init $f:path) => { $crate::__private::register!(init $f); };
}

fn decode_args<A: DeserializeOwned>(args: &[u8]) -> Result<A, String> {
    decode(args).map_err(|e| format!("bad arguments: {e}"))
}

fn guarded<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))))
}

#[doc(hidden)]
pub fn start_pipeline<A, T, F>(f: &F, args: &[u8]) -> Result<Box<dyn Source>, String>
where
    A: DeserializeOwned,
    T: Serialize + Send + 'static,
    F: Fn(A) -> Result<Pipeline<T>, BuildError>,
{
    guarded(|| {
        let pipeline = f(decode_args(args)?).map_err(|e| e.to_string())?;
        Ok(Box::new(PipelineSource::new(pipeline)) as Box<dyn Source>)
    })
}

#[doc(hidden)]
pub fn start_iter<A, I, F>(f: &F, args: &[u8]) -> Result<Box<dyn Source>, String>
where
    A: DeserializeOwned,
    I: IntoIterator,
    I::IntoIter: 'static,
    I::Item: Serialize,
    F: Fn(A) -> I,
{
    guarded(|| {
        let iter = f(decode_args(args)?).into_iter();
        Ok(Box::new(IterSource::new(iter)) as Box<dyn Source>)
    })
}

#[doc(hidden)]
pub fn run_init<A, E, F>(f: &F, args: &[u8]) -> Result<(), String>
where
    A: DeserializeOwned,
    E: std::fmt::Display,
    F: Fn(A) -> Result<(), E>,
{
    guarded(|| f(decode_args(args)?).map_err(|e| e.to_string()))
}
