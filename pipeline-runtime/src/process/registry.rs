//! Named functions that a re-executed child runs, in one registry.
//!
//! A closure cannot cross a process boundary, so what a child runs is a plain `fn`, found by
//! name: parent and child are the same executable, so both compute the same name (the
//! function's type name, see [`fn_type_name`]). Every kind is registered the same way, with
//! the hidden `register!` macro that [`process_fn!`](crate::process_fn) and
//! [`subprocess_fn!`](crate::subprocess_fn) expand to:
//!
//! * worker entry points (`fn(args, Channel)`): what a child process runs once it is in
//!   worker mode; this crate has two, the process-stage worker and the subprocess worker;
//! * process-stage functions (`process_fn!`), called by the stage worker per item;
//! * subprocess pipeline and iterator factories and initialisers (`subprocess_fn!`), called
//!   by the subprocess worker;
//! * process regions (`process_region!`), whose builder of stages the region worker calls
//!   to build the nested pipeline it runs.

use super::channel::Channel;
use super::region::RegionIo;
use crate::subprocess::output::Source;

/// A worker entry point: its start arguments and the channel to the parent.
pub(crate) type WorkerFn = fn(args: Vec<u8>, channel: Channel) -> Result<(), String>;
/// A process-stage function, encoded input to encoded output.
pub(crate) type CallFn = fn(&[u8]) -> Result<Vec<u8>, String>;
/// A subprocess factory: encoded arguments to the source the child streams.
pub(crate) type StartFn = fn(&[u8]) -> Result<Box<dyn Source>, String>;
/// A subprocess initialiser.
pub(crate) type InitFn = fn(&[u8]) -> Result<(), String>;
/// A process region: runs the region's nested pipeline over the channel (start arguments).
pub(crate) type RegionFn = fn(RegionIo<'_>, &[u8]) -> Result<(), String>;

/// What a registered function is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Worker,
    Stage,
    Pipeline,
    Iter,
    Init,
    Region,
}

impl Kind {
    /// How a function of this kind is registered, for error messages.
    pub(crate) fn registration(self, f: &str) -> String {
        match self {
            Kind::Worker => format!("a worker entry point `{f}`"),
            Kind::Stage => format!("process_fn!({f})"),
            Kind::Pipeline => format!("subprocess_fn!(pipeline {f})"),
            Kind::Iter => format!("subprocess_fn!(iter {f})"),
            Kind::Init => format!("subprocess_fn!(init {f})"),
            Kind::Region => format!("process_region!({f})"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Run {
    Worker(WorkerFn),
    Stage(CallFn),
    Pipeline(StartFn),
    Iter(StartFn),
    Init(InitFn),
    Region(RegionFn),
}

/// One registered function: its name and what to call. Made by `register!`.
#[derive(Debug)]
pub struct Registration {
    name: fn() -> &'static str,
    run: Run,
}

inventory::collect!(Registration);

impl Registration {
    pub(crate) const fn worker(name: fn() -> &'static str, run: WorkerFn) -> Self {
        Self {
            name,
            run: Run::Worker(run),
        }
    }

    #[doc(hidden)]
    pub const fn stage(name: fn() -> &'static str, call: CallFn) -> Self {
        Self {
            name,
            run: Run::Stage(call),
        }
    }

    #[doc(hidden)]
    pub const fn pipeline(name: fn() -> &'static str, start: StartFn) -> Self {
        Self {
            name,
            run: Run::Pipeline(start),
        }
    }

    #[doc(hidden)]
    pub const fn iter(name: fn() -> &'static str, start: StartFn) -> Self {
        Self {
            name,
            run: Run::Iter(start),
        }
    }

    #[doc(hidden)]
    pub const fn init(name: fn() -> &'static str, init: InitFn) -> Self {
        Self {
            name,
            run: Run::Init(init),
        }
    }

    #[doc(hidden)]
    pub const fn region(name: fn() -> &'static str, run: RegionFn) -> Self {
        Self {
            name,
            run: Run::Region(run),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        (self.name)()
    }

    fn kind(&self) -> Kind {
        match self.run {
            Run::Worker(_) => Kind::Worker,
            Run::Stage(_) => Kind::Stage,
            Run::Pipeline(_) => Kind::Pipeline,
            Run::Iter(_) => Kind::Iter,
            Run::Init(_) => Kind::Init,
            Run::Region(_) => Kind::Region,
        }
    }
}

/// Registers a function for a child to run: the one registration path under
/// `process_fn!` and `subprocess_fn!` (and the crate's own worker entry points). Write it at
/// module level. `stage f`, `pipeline f`, `iter f` and `init f` register `f` under its type
/// name; the serde bounds of its input and output are checked here, at compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! __pipeline_runtime_register {
    (stage $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::stage(
                || $crate::__private::fn_type_name(&$f),
                |input| $crate::__private::call_process_fn(&$f, input),
            )
        }
    };
    (pipeline $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::pipeline(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::__private::start_pipeline(&$f, args),
            )
        }
    };
    (iter $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::iter(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::__private::start_iter(&$f, args),
            )
        }
    };
    (init $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::init(
                || $crate::__private::fn_type_name(&$f),
                |args| $crate::__private::run_init(&$f, args),
            )
        }
    };
    (region $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::region(
                || $crate::__private::fn_type_name(&$f),
                |channel, args| $crate::__private::run_region(&$f, channel, args),
            )
        }
    };
    // A worker entry point of this crate, under a fixed name (not reachable from outside:
    // a worker's channel is crate-private).
    (worker $name:expr => $run:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::worker(|| $name, $run)
        }
    };
}

/// The registry key of a function: its type name, the same in the parent and in the child.
#[doc(hidden)]
pub fn fn_type_name<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
}

fn find(name: &str, kind: Kind) -> Option<&'static Registration> {
    inventory::iter::<Registration>().find(|r| r.kind() == kind && r.name() == name)
}

/// The worker entry point registered as `name`.
pub(crate) fn worker(name: &str) -> Option<WorkerFn> {
    match find(name, Kind::Worker)?.run {
        Run::Worker(run) => Some(run),
        _ => None,
    }
}

/// The process-stage function registered as `name`.
pub(crate) fn stage(name: &str) -> Option<CallFn> {
    match find(name, Kind::Stage)?.run {
        Run::Stage(call) => Some(call),
        _ => None,
    }
}

/// The subprocess factory registered as `name` with `kind` (`Pipeline` or `Iter`).
pub(crate) fn start(name: &str, kind: Kind) -> Option<StartFn> {
    match find(name, kind)?.run {
        Run::Pipeline(start) | Run::Iter(start) => Some(start),
        _ => None,
    }
}

/// The subprocess initialiser registered as `name`.
pub(crate) fn init(name: &str) -> Option<InitFn> {
    match find(name, Kind::Init)?.run {
        Run::Init(init) => Some(init),
        _ => None,
    }
}

/// The process region registered as `name`.
pub(crate) fn region(name: &str) -> Option<RegionFn> {
    match find(name, Kind::Region)?.run {
        Run::Region(run) => Some(run),
        _ => None,
    }
}

/// Checks that `name` is registered as `kind`, with an error that says how to fix it.
pub(crate) fn check(name: &str, kind: Kind) -> Result<(), String> {
    if find(name, kind).is_some() {
        return Ok(());
    }
    let short = name.rsplit("::").next().unwrap_or(name);
    match inventory::iter::<Registration>().find(|r| r.name() == name) {
        Some(other) => Err(format!(
            "`{name}` is registered with `{}`, not `{}`",
            other.kind().registration(short),
            kind.registration(short)
        )),
        None => {
            let (place, places) = match kind {
                Kind::Worker | Kind::Stage | Kind::Region => {
                    ("a worker process", "worker processes")
                }
                Kind::Pipeline | Kind::Iter | Kind::Init => ("a subprocess", "subprocesses"),
            };
            Err(format!(
                "`{name}` is not registered for {places}: add `pipeline_runtime::{};` at \
                 module level (a closure cannot run in {place}; use a named fn)",
                kind.registration(short)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twice(x: u32) -> u32 {
        x * 2
    }
    crate::__private::register!(stage twice);

    fn digits(n: u32) -> Vec<u32> {
        (0..n).collect()
    }
    crate::__private::register!(iter digits);

    #[test]
    fn one_registry_finds_each_kind_by_name() {
        let name = fn_type_name(&twice);
        let call = stage(name).expect("registered");
        let output = call(&crate::process::channel::encode(&21u32).unwrap()).unwrap();
        assert_eq!(crate::process::channel::decode::<u32>(&output).unwrap(), 42);
        assert!(
            start(name, Kind::Iter).is_none(),
            "a stage is not a factory"
        );
        assert!(start(fn_type_name(&digits), Kind::Iter).is_some());
    }

    #[test]
    fn a_function_registered_as_another_kind_is_named_in_the_error() {
        let err = check(fn_type_name(&digits), Kind::Pipeline).unwrap_err();
        assert!(
            err.contains("registered with `subprocess_fn!(iter digits)`, not `subprocess_fn!(pipeline digits)`"),
            "{err}"
        );
        fn nowhere(_: u32) {}
        let err = check(fn_type_name(&nowhere), Kind::Init).unwrap_err();
        assert!(
            err.contains("`pipeline_runtime::subprocess_fn!(init nowhere);`"),
            "{err}"
        );
    }
}
