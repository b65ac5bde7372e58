//! Named functions that a re-executed child runs, in one registry.
//!
//! A closure cannot cross a process boundary, so what a child runs is a plain `fn`, found by
//! name: parent and child are the same executable, so both compute the same name (the
//! function's type name, see [`fn_type_name`]). Every kind is registered the same way, with
//! the hidden `register!` macro that [`process_fn!`](crate::process_fn),
//! [`subprocess_fn!`](crate::subprocess_fn) and [`process_region!`](crate::process_region)
//! expand to:
//!
//! * worker entry points: what a child process runs once it is in worker mode; this crate
//!   has two, the process-stage worker and the subprocess worker;
//! * process-stage functions (`process_fn!`), called by the stage worker per item;
//! * subprocess pipeline and iterator factories and initialisers (`subprocess_fn!`), called
//!   by the subprocess worker;
//! * process regions (`process_region!`), whose builder of stages the region worker calls
//!   to build the nested pipeline it runs.
//!
//! This file is the bottom floor of the wing and names none of its clients' types: each
//! kind's owner defines the function pointer type of its entries (`WorkerFn` in `worker`,
//! `CallFn` in `stage_worker`, `RegionFn` in `region`, `StartFn` and `InitFn` in
//! `subprocess::factory`); `register!` stores the pointer as `dyn Any`, and the owner gets
//! it back, typed, with [`lookup`].

use std::any::Any;

/// What a registered function is for.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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

/// One registered function: its name, its kind, and what to call, a function pointer of the
/// type its owner defines for that kind (see `lookup`). Made by `register!`.
#[derive(Debug)]
pub struct Registration {
    name: fn() -> &'static str,
    kind: Kind,
    run: &'static (dyn Any + Send + Sync),
}

inventory::collect!(Registration);

impl Registration {
    /// `run` is a function pointer of the type that `kind`'s owner looks it up as.
    #[doc(hidden)]
    pub const fn new(
        kind: Kind,
        name: fn() -> &'static str,
        run: &'static (dyn Any + Send + Sync),
    ) -> Self {
        Self { name, kind, run }
    }

    pub(crate) fn name(&self) -> &'static str {
        (self.name)()
    }
}

/// Registers a function for a child to run: the one registration path under
/// `process_fn!`, `subprocess_fn!` and `process_region!` (and the crate's own worker entry
/// points). Write it at module level. `stage f`, `pipeline f`, `iter f`, `init f` and
/// `region f` register `f` under its type name, as a function pointer of the type its
/// owner looks it up as; the serde bounds of its input and output are checked here, at
/// compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! __pipeline_runtime_register {
    (stage $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Stage,
                || $crate::__private::fn_type_name(&$f),
                {
                    const RUN: $crate::__private::CallFn =
                        |input| $crate::__private::call_process_fn(&$f, input);
                    &RUN
                },
            )
        }
    };
    (pipeline $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Pipeline,
                || $crate::__private::fn_type_name(&$f),
                {
                    const RUN: $crate::__private::StartFn =
                        |args| $crate::__private::start_pipeline(&$f, args);
                    &RUN
                },
            )
        }
    };
    (iter $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Iter,
                || $crate::__private::fn_type_name(&$f),
                {
                    const RUN: $crate::__private::StartFn =
                        |args| $crate::__private::start_iter(&$f, args);
                    &RUN
                },
            )
        }
    };
    (init $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Init,
                || $crate::__private::fn_type_name(&$f),
                {
                    const RUN: $crate::__private::InitFn =
                        |args| $crate::__private::run_init(&$f, args);
                    &RUN
                },
            )
        }
    };
    (region $f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Region,
                || $crate::__private::fn_type_name(&$f),
                {
                    const RUN: $crate::__private::RegionFn =
                        |channel, args| $crate::__private::run_region(&$f, channel, args);
                    &RUN
                },
            )
        }
    };
    // A worker entry point of this crate, under a fixed name (not reachable from outside:
    // a worker's channel is crate-private).
    (worker $name:expr => $run:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration::new(
                $crate::__private::RegistrationKind::Worker,
                || $name,
                {
                    const RUN: $crate::__private::WorkerFn = $run;
                    &RUN
                },
            )
        }
    };
}

/// The registry key of a function: its type name, the same in the parent and in the child.
#[doc(hidden)]
pub fn fn_type_name<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
}

fn find(name: &str, kind: Kind) -> Option<&'static Registration> {
    inventory::iter::<Registration>().find(|r| r.kind == kind && r.name() == name)
}

/// The function registered as `name` for `kind`, as `F`: the function pointer type that
/// the kind's owner defines and `register!` gives it. `None` if there is none (or if `F`
/// is not the type it was registered with).
pub(crate) fn lookup<F: Copy + 'static>(name: &str, kind: Kind) -> Option<F> {
    find(name, kind)?.run.downcast_ref::<F>().copied()
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
            other.kind.registration(short),
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

    /// A process-stage function, as its owner (the stage worker) types it.
    type Call = fn(&[u8]) -> Result<Vec<u8>, String>;

    #[test]
    fn one_registry_finds_each_kind_by_name() {
        let name = fn_type_name(&twice);
        let call = lookup::<Call>(name, Kind::Stage).expect("registered");
        let output = call(&crate::process::channel::encode(&21u32).unwrap()).unwrap();
        assert_eq!(crate::process::channel::decode::<u32>(&output).unwrap(), 42);
        assert!(find(name, Kind::Iter).is_none(), "a stage is not a factory");
        assert!(find(fn_type_name(&digits), Kind::Iter).is_some());
    }

    #[test]
    fn a_lookup_as_another_type_finds_nothing() {
        let name = fn_type_name(&twice);
        assert!(lookup::<fn(&[u8]) -> Result<(), String>>(name, Kind::Stage).is_none());
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
