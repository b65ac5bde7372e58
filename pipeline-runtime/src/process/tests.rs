//! The child-process plumbing on its own, with real children: spawn, handshake, frames, exit
//! reports, kill on drop, and the two mistakes it must catch (a worker that runs `main`, a
//! nested worker).
//!
//! A child is this libtest binary run again, running one test, [`worker_main`], which enters
//! worker mode as a program's `main` would (libtest's own `main` cannot call `init()`).
//! Tests that start children hold [`SERIAL`], so that counting this process's children sees
//! only the current test's.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel::{decode, encode, Channel};
use super::child::{ChildProcess, SpawnOptions};
use super::protocol::WORKER_ENV;
use super::worker::{init, is_worker};
use crate::sync::lock;

static SERIAL: Mutex<()> = Mutex::new(());

/// Set in a child to make [`worker_main`] skip `init()`: a `main` that forgot the call.
const SKIP_INIT_ENV: &str = "PIPELINE_RUNTIME_TESTS_SKIP_INIT";

/// A child's `main`: enters worker mode when started as a worker (never returns then).
#[test]
#[ignore = "the main of the plumbing tests' children; does nothing on its own"]
fn worker_main() {
    if std::env::var_os(SKIP_INIT_ENV).is_none() {
        init();
    }
}

/// Options that start this binary running [`worker_main`] only.
fn libtest_child() -> SpawnOptions {
    let mut opts = SpawnOptions::new();
    opts.args = Some(
        [
            "--exact",
            "process::tests::worker_main",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(OsString::from)
        .to_vec(),
    );
    // libtest prints "running 1 test" before the test runs.
    opts.preamble = true;
    opts
}

fn spawn(entry: &str, args: &[u8]) -> (ChildProcess, Channel) {
    ChildProcess::spawn(entry, args, &libtest_child()).unwrap()
}

/// Pids of this process's children, zombies included (Linux: `/proc/*/stat`).
fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The fields after the command name (which may hold spaces) in parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            ppid == Some(me)
        })
        .collect()
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Greeting {
    text: String,
    n: u32,
}

/// Sends its arguments back, then echoes every message until the parent closes the channel.
fn echo(args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    channel.send(&args).map_err(|e| e.to_string())?;
    while let Some(msg) = channel.recv().map_err(|e| e.to_string())? {
        channel.send(&msg).map_err(|e| e.to_string())?;
    }
    Ok(())
}
crate::__private::register!(worker "tests::echo" => echo);

/// Ends the way its arguments say, after telling the parent it is about to.
fn crash(args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    let how = String::from_utf8(args).unwrap();
    channel.send(b"ready").map_err(|e| e.to_string())?;
    match how.as_str() {
        "abort" => std::process::abort(),
        // SAFETY: none; the point is to crash the worker with a real segmentation fault.
        "segfault" => unsafe { std::ptr::null_mut::<u64>().write_volatile(7) },
        "exit3" => std::process::exit(3),
        "panic" => panic!("worker panicked on purpose"),
        "error" => return Err("the entry failed on purpose".to_owned()),
        "oom" => {
            let big = vec![1u8; 4 << 30];
            std::hint::black_box(&big);
        }
        "wait" => {
            let _ = channel.recv();
        }
        other => return Err(format!("unknown mode {other}")),
    }
    Ok(())
}
crate::__private::register!(worker "tests::crash" => crash);

/// Tries to start a worker from inside a worker and reports what happened.
fn nested(_args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    let outcome = match ChildProcess::spawn("tests::echo", b"", &libtest_child()) {
        Ok(_) => "spawned".to_owned(),
        Err(e) => e.to_string(),
    };
    channel
        .send(outcome.as_bytes())
        .map_err(|e| e.to_string())?;
    // What programs this worker starts would inherit: not the worker variable.
    let inherited = std::env::var_os(WORKER_ENV).is_some();
    let flags = [u8::from(inherited), u8::from(is_worker())];
    channel.send(&flags).map_err(|e| e.to_string())
}
crate::__private::register!(worker "tests::nested" => nested);

fn noop(_args: Vec<u8>, _channel: Channel) -> Result<(), String> {
    Ok(())
}
crate::__private::register!(worker "pipeline_runtime::tests::noop" => noop);

/// A libtest binary has no `init()` in its `main`: the re-run child rejects the worker
/// argument and exits, and the parent says why instead of hanging.
#[test]
fn a_libtest_child_fails_the_handshake_clearly() {
    let _serial = lock(&SERIAL);
    let err = ChildProcess::spawn("pipeline_runtime::tests::noop", b"", &SpawnOptions::new())
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not enter worker mode"), "{text}");
    assert!(text.contains("process::init()"), "{text}");
    let exit = err.exit_report().expect("the child was reaped");
    assert_ne!(exit.code(), Some(0), "{exit}");
}

#[test]
fn echo_round_trip_and_clean_exit() {
    let _serial = lock(&SERIAL);
    let (mut child, mut channel) = spawn("tests::echo", b"args!");
    assert_eq!(channel.recv().unwrap().unwrap(), b"args!");
    let greeting = Greeting {
        text: "hello".to_owned(),
        n: 42,
    };
    channel.send(&encode(&greeting).unwrap()).unwrap();
    let back: Greeting = decode(&channel.recv().unwrap().unwrap()).unwrap();
    assert_eq!(back, greeting);
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    channel.send_parts(&[&big[..1000], &big[1000..]]).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), big);
    let (mut reader, writer) = channel.split();
    drop(writer); // end of input: the echo loop returns
    assert!(reader.recv().unwrap().is_none());
    let report = child.wait();
    assert_eq!(report.code(), Some(0), "{report}");
}

fn run_crash(how: &str) -> String {
    let (mut child, mut channel) = spawn("tests::crash", how.as_bytes());
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    // The child's end closes when it dies: no more frames, no hang.
    assert!(channel.recv().map(|m| m.is_none()).unwrap_or(true));
    child.wait().to_string()
}

#[test]
fn exit_reports_say_how_the_child_ended() {
    let _serial = lock(&SERIAL);
    let abort = run_crash("abort");
    assert!(
        abort.contains("aborted") && abort.contains("SIGABRT"),
        "{abort}"
    );
    let segv = run_crash("segfault");
    assert!(
        segv.contains("segmentation fault") && segv.contains("SIGSEGV"),
        "{segv}"
    );
    let exit3 = run_crash("exit3");
    assert!(exit3.contains("exited with code 3"), "{exit3}");
    let panic = run_crash("panic");
    assert!(panic.contains("exited with code 101"), "{panic}");
    assert!(panic.contains("worker panicked on purpose"), "{panic}");
    let error = run_crash("error");
    assert!(error.contains("exited with code 1"), "{error}");
    assert!(error.contains("the entry failed on purpose"), "{error}");
}

#[test]
fn sigkill_from_outside_is_reported() {
    let _serial = lock(&SERIAL);
    let (mut child, mut channel) = spawn("tests::crash", b"wait");
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    // SAFETY: the child has not been reaped (we hold it), so the pid is still ours.
    unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
    let report = child.wait();
    assert_eq!(report.signal(), Some(libc::SIGKILL));
    assert!(report.to_string().contains("SIGKILL"), "{report}");
}

#[test]
fn out_of_memory_under_rlimit_is_reported() {
    let _serial = lock(&SERIAL);
    let opts = libtest_child().memory_limit(1 << 30);
    let (mut child, mut channel) = ChildProcess::spawn("tests::crash", b"oom", &opts).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    let report = child.wait();
    assert!(report.out_of_memory(), "{report}");
    assert!(report.to_string().contains("ran out of memory"), "{report}");
}

#[test]
fn dropping_children_leaves_no_process() {
    let _serial = lock(&SERIAL);
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(spawn("tests::crash", b"wait"));
    }
    assert_eq!(child_pids().len(), 3);
    drop(kept);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

#[test]
fn a_worker_cannot_start_workers() {
    let _serial = lock(&SERIAL);
    let (mut child, mut channel) = spawn("tests::nested", b"");
    let outcome = String::from_utf8(channel.recv().unwrap().unwrap()).unwrap();
    assert!(outcome.contains("workers never start workers"), "{outcome}");
    let flags = channel.recv().unwrap().unwrap();
    assert_eq!(
        flags,
        [0, 1],
        "[env var inherited by its children, is_worker()]"
    );
    assert_eq!(child.wait().code(), Some(0));
}

#[test]
fn unknown_entry_is_an_error() {
    let _serial = lock(&SERIAL);
    let err = ChildProcess::spawn("tests::nope", b"", &libtest_child()).unwrap_err();
    assert!(
        err.to_string()
            .contains("no worker entry point named `tests::nope`"),
        "{err}"
    );
    assert!(child_pids().is_empty());
}

#[test]
fn a_child_that_runs_main_is_detected() {
    let _serial = lock(&SERIAL);
    // The child skips `init()`, as a `main` that forgot it would, and runs the test program
    // instead: libtest prints its first line on stdout.
    let mut opts = libtest_child()
        .env(SKIP_INIT_ENV, "1")
        .handshake_timeout(Duration::from_secs(30));
    opts.preamble = false;
    let err = ChildProcess::spawn("tests::echo", b"", &opts).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not enter worker mode"), "{text}");
    assert!(text.contains("pipeline_runtime::process::init()"), "{text}");
    assert!(text.contains("instead of the handshake"), "{text}");
    assert!(child_pids().is_empty(), "the child was not reaped");
}
