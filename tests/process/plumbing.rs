//! The child-process plumbing on its own: spawn, handshake, frames, exit reports, kill on
//! drop, and the two mistakes it must catch (a worker that runs `main`, a nested worker).

use std::time::Duration;

use pipeline_runtime::process::{Channel, ChildProcess, SpawnOptions};
use pipeline_runtime::register_worker_entry;
use serde::{Deserialize, Serialize};

use crate::{child_pids, SKIP_INIT_ENV};

pub(crate) const TESTS: &[crate::Test] = crate::tests![
    "plumbing":
    echo_round_trip_and_clean_exit,
    exit_reports_say_how_the_child_ended,
    sigkill_from_outside_is_reported,
    out_of_memory_under_rlimit_is_reported,
    dropping_children_leaves_no_process,
    a_worker_cannot_start_workers,
    unknown_entry_is_an_error,
    a_child_that_runs_main_is_detected,
];

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
register_worker_entry!("tests::echo", echo);

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
register_worker_entry!("tests::crash", crash);

/// Tries to start a worker from inside a worker and reports what happened.
fn nested(_args: Vec<u8>, mut channel: Channel) -> Result<(), String> {
    let outcome = match ChildProcess::spawn("tests::echo", b"", &SpawnOptions::new()) {
        Ok(_) => "spawned".to_owned(),
        Err(e) => e.to_string(),
    };
    channel
        .send(outcome.as_bytes())
        .map_err(|e| e.to_string())?;
    // What programs this worker starts would inherit: not the worker variable.
    let inherited = std::env::var_os(pipeline_runtime::process::WORKER_ENV).is_some();
    let flags = [
        u8::from(inherited),
        u8::from(pipeline_runtime::process::is_worker()),
    ];
    channel.send(&flags).map_err(|e| e.to_string())
}
register_worker_entry!("tests::nested", nested);

fn echo_round_trip_and_clean_exit() {
    let (mut child, mut channel) =
        ChildProcess::spawn("tests::echo", b"args!", &SpawnOptions::new().name("echo")).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), b"args!");
    let greeting = Greeting {
        text: "hello".to_owned(),
        n: 42,
    };
    channel.send_value(&greeting).unwrap();
    assert_eq!(channel.recv_value::<Greeting>().unwrap().unwrap(), greeting);
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
    let (mut child, mut channel) =
        ChildProcess::spawn("tests::crash", how.as_bytes(), &SpawnOptions::new()).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    // The child's end closes when it dies: no more frames, no hang.
    assert!(channel.recv().map(|m| m.is_none()).unwrap_or(true));
    child.wait().to_string()
}

fn exit_reports_say_how_the_child_ended() {
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

fn sigkill_from_outside_is_reported() {
    let (mut child, mut channel) =
        ChildProcess::spawn("tests::crash", b"wait", &SpawnOptions::new()).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    // SAFETY: the child has not been reaped (we hold it), so the pid is still ours.
    unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
    let report = child.wait();
    assert_eq!(report.signal(), Some(libc::SIGKILL));
    assert!(report.to_string().contains("SIGKILL"), "{report}");
}

fn out_of_memory_under_rlimit_is_reported() {
    let opts = SpawnOptions::new().memory_limit(1 << 30);
    let (mut child, mut channel) = ChildProcess::spawn("tests::crash", b"oom", &opts).unwrap();
    assert_eq!(channel.recv().unwrap().unwrap(), b"ready");
    let report = child.wait();
    assert!(report.out_of_memory(), "{report}");
    assert!(report.to_string().contains("ran out of memory"), "{report}");
}

fn dropping_children_leaves_no_process() {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(ChildProcess::spawn("tests::crash", b"wait", &SpawnOptions::new()).unwrap());
    }
    assert_eq!(child_pids().len(), 3);
    drop(kept);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn a_worker_cannot_start_workers() {
    let (mut child, mut channel) =
        ChildProcess::spawn("tests::nested", b"", &SpawnOptions::new()).unwrap();
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

fn unknown_entry_is_an_error() {
    let err = ChildProcess::spawn("tests::nope", b"", &SpawnOptions::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("no worker entry point named `tests::nope`"),
        "{err}"
    );
    assert!(child_pids().is_empty());
}

fn a_child_that_runs_main_is_detected() {
    // The child skips `init()`, as a `main` that forgot it would, and runs this test
    // program again instead: it prints the runner's first line on stdout.
    let opts = SpawnOptions::new()
        .env(SKIP_INIT_ENV, "1")
        .handshake_timeout(Duration::from_secs(30));
    let err = ChildProcess::spawn("tests::echo", b"", &opts).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not enter worker mode"), "{text}");
    assert!(text.contains("pipeline_runtime::process::init()"), "{text}");
    assert!(text.contains("instead of the handshake"), "{text}");
    assert!(child_pids().is_empty(), "the child was not reaped");
}
