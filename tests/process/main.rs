//! Tests of worker processes: process stages and subprocesses. (The child-process plumbing
//! underneath is crate-private; its tests are unit tests in `pipeline-runtime/src/process/`.)
//!
//! This target has its own `main` (`harness = false` in Cargo.toml) because a worker is this
//! same executable run again: like any program that uses worker processes, its `main` must
//! call `pipeline_runtime::process::init()` first (here through `#[pipeline_runtime::main]`),
//! and libtest's generated `main` does not.
//! The small runner below takes a substring filter like libtest and prints libtest's
//! summary line. Tests run one after another, so that counting this process's children
//! (to check that none is left behind) sees only the current test's.

/// A list of tests named `module::function`.
macro_rules! tests {
    ($module:literal: $($name:ident),* $(,)?) => {
        &[$((concat!($module, "::", stringify!($name)), $name as fn())),*]
    };
}
pub(crate) use tests;

mod exits;
mod regions;
mod soak;
mod stages;
mod subprocess;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

type Test = (&'static str, fn());

#[pipeline_runtime::main]
fn main() {
    if let Some(mode) = std::env::var_os(exits::HELPER_ENV) {
        exits::act_as_helper(&mode.to_string_lossy());
    }
    if std::env::var_os(subprocess::EXITING_PARENT_ENV).is_some() {
        subprocess::act_as_exiting_parent();
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: Vec<Test> = stages::TESTS
        .iter()
        .chain(subprocess::TESTS)
        .chain(regions::TESTS)
        .chain(soak::TESTS)
        .chain(exits::TESTS)
        .copied()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", tests.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in &tests {
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(test));
        let status = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {status} ({:.2?})", t0.elapsed());
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; \
         finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        tests.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

/// Pids of this process's children, zombies included (Linux: `/proc/*/stat`).
pub(crate) fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut children = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) in parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(me) {
            children.push(pid);
        }
    }
    children
}
