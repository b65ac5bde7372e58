//! Named functions a subprocess can run: pipeline factories, iterator factories and
//! initialisers, registered with [`subprocess_fn!`](crate::subprocess_fn).
//!
//! A closure cannot cross a process boundary, so what runs in the child is a plain `fn`,
//! found by its type name (parent and child are the same executable, so both compute the
//! same name), with its arguments encoded by serde.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::worker::{IterSource, PipelineSource, Source};
use crate::error::BuildError;
use crate::process::decode;
use crate::sync::panic_message;
use crate::Pipeline;

/// What a registered function is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pipeline,
    Iter,
    Init,
}

impl Kind {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Kind::Pipeline => "pipeline",
            Kind::Iter => "iter",
            Kind::Init => "init",
        }
    }
}

type StartFn = fn(&[u8]) -> Result<Box<dyn Source>, String>;
type InitFn = fn(&[u8]) -> Result<(), String>;

#[derive(Debug, Clone, Copy)]
enum Run {
    Start(StartFn),
    Init(InitFn),
}

/// A function registered with [`subprocess_fn!`](crate::subprocess_fn).
#[derive(Debug)]
pub struct SubprocessFn {
    name: fn() -> &'static str,
    kind: Kind,
    run: Run,
}

inventory::collect!(SubprocessFn);

impl SubprocessFn {
    #[doc(hidden)]
    pub const fn pipeline(name: fn() -> &'static str, start: StartFn) -> Self {
        Self {
            name,
            kind: Kind::Pipeline,
            run: Run::Start(start),
        }
    }

    #[doc(hidden)]
    pub const fn iter(name: fn() -> &'static str, start: StartFn) -> Self {
        Self {
            name,
            kind: Kind::Iter,
            run: Run::Start(start),
        }
    }

    #[doc(hidden)]
    pub const fn init(name: fn() -> &'static str, init: InitFn) -> Self {
        Self {
            name,
            kind: Kind::Init,
            run: Run::Init(init),
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
/// use pipeline_runtime::{BuildError, Pipeline, PipelineBuilder};
///
/// fn squares(n: u64) -> Result<Pipeline<u64>, BuildError> {
///     PipelineBuilder::new().source(0..n).pipe(|x| x * x, Default::default()).sink(8).build()
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
    (@one pipeline $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::subprocess::SubprocessFn::pipeline(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::subprocess::__start_pipeline(&$f, args),
            )
        }
    };
    (@one iter $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::subprocess::SubprocessFn::iter(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::subprocess::__start_iter(&$f, args),
            )
        }
    };
    (@one init $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::subprocess::SubprocessFn::init(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::subprocess::__run_init(&$f, args),
            )
        }
    };
}

fn decode_args<A: DeserializeOwned>(args: &[u8]) -> Result<A, String> {
    decode(args).map_err(|e| format!("bad arguments: {e}"))
}

fn guarded<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))))
}

#[doc(hidden)]
pub fn __start_pipeline<A, T, F>(f: &F, args: &[u8]) -> Result<Box<dyn Source>, String>
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
pub fn __start_iter<A, I, F>(f: &F, args: &[u8]) -> Result<Box<dyn Source>, String>
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
pub fn __run_init<A, E, F>(f: &F, args: &[u8]) -> Result<(), String>
where
    A: DeserializeOwned,
    E: std::fmt::Display,
    F: Fn(A) -> Result<(), E>,
{
    guarded(|| f(decode_args(args)?).map_err(|e| e.to_string()))
}

pub(crate) fn find(name: &str) -> Option<&'static SubprocessFn> {
    inventory::iter::<SubprocessFn>().find(|f| (f.name)() == name)
}

/// Checks that `name` is registered as `kind`, with an error that says how to fix it.
pub(crate) fn check(name: &str, kind: Kind) -> Result<(), String> {
    match find(name) {
        Some(f) if f.kind == kind => Ok(()),
        Some(f) => Err(format!(
            "`{name}` is registered with `subprocess_fn!({} ...)`, not `{} ...`",
            f.kind.keyword(),
            kind.keyword()
        )),
        None => Err(format!(
            "`{name}` is not registered for subprocesses: add \
             `pipeline_runtime::subprocess_fn!({} {});` at module level (a closure cannot \
             run in a subprocess; use a named fn)",
            kind.keyword(),
            name.rsplit("::").next().unwrap_or(name)
        )),
    }
}

pub(crate) fn start(name: &str, args: &[u8]) -> Result<Box<dyn Source>, String> {
    match find(name).map(|f| f.run) {
        Some(Run::Start(start)) => start(args),
        _ => Err(format!(
            "`{name}` is not a registered pipeline or iterator factory"
        )),
    }
}

pub(crate) fn init(name: &str, args: &[u8]) -> Result<(), String> {
    match find(name).map(|f| f.run) {
        Some(Run::Init(init)) => init(args),
        _ => Err(format!("`{name}` is not a registered initialiser")),
    }
}
