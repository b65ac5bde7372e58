//! Pipelines and iterators in a subprocess, each against a real child: output, re-iteration,
//! both transports, and every fault (stage failure, crash, exit, kill, parent exit, timeout,
//! initialiser failure).

use std::time::Duration;

use futures::StreamExt;
use pipeline_runtime::error::BuildError;
use pipeline_runtime::subprocess::{
    iterate_in_subprocess, run_pipeline_in_subprocess, Bytes, RemoteFailureKind, SubprocessError,
    SubprocessOptions,
};
use pipeline_runtime::{subprocess_fn, MaxFailures, Order, Pipeline, PipelineBuilder};

use crate::{child_pids, wait_until};

/// Set in a child of the test process that plays a parent which exits mid-stream.
pub(crate) const EXITING_PARENT_ENV: &str = "PIPELINE_TESTS_EXITING_PARENT";

pub(crate) const TESTS: &[crate::Test] = &[
    (
        "subprocess::pipeline_output_arrives_in_order",
        pipeline_output_arrives_in_order,
    ),
    (
        "subprocess::large_items_cross_both_transports",
        large_items_cross_both_transports,
    ),
    (
        "subprocess::breaking_out_and_iterating_again_continues",
        breaking_out_and_iterating_again_continues,
    ),
    (
        "subprocess::a_continuous_pipeline_gives_one_epoch_per_iteration",
        a_continuous_pipeline_gives_one_epoch_per_iteration,
    ),
    (
        "subprocess::a_stage_failure_arrives_structured",
        a_stage_failure_arrives_structured,
    ),
    (
        "subprocess::a_crashing_child_is_reported_promptly",
        a_crashing_child_is_reported_promptly,
    ),
    (
        "subprocess::a_killed_child_is_reported",
        a_killed_child_is_reported,
    ),
    (
        "subprocess::dropping_mid_stream_leaves_no_child",
        dropping_mid_stream_leaves_no_child,
    ),
    (
        "subprocess::the_child_ends_when_the_parent_process_exits",
        the_child_ends_when_the_parent_process_exits,
    ),
    ("subprocess::inactivity_times_out", inactivity_times_out),
    (
        "subprocess::initializer_and_factory_failures_fail_the_start",
        initializer_and_factory_failures_fail_the_start,
    ),
    (
        "subprocess::an_unregistered_function_is_a_clear_error",
        an_unregistered_function_is_a_clear_error,
    ),
    (
        "subprocess::the_output_is_a_stream_too",
        the_output_is_a_stream_too,
    ),
];

fn numbers(n: u64) -> Result<Pipeline<u64>, BuildError> {
    PipelineBuilder::new()
        .source(0..n)
        .pipe(|x| x * 2)
        .concurrency(2)
        .order(Order::Input)
        .sink()
        .buffer(8)
        .build()
}

fn epochs(items: Vec<u32>) -> Result<Pipeline<u32>, BuildError> {
    PipelineBuilder::new()
        .continuous_source(items)
        .sink()
        .buffer(2)
        .build()
}

fn failing(budget: u64) -> Result<Pipeline<u64>, BuildError> {
    PipelineBuilder::new()
        .source(0..100u64)
        .try_pipe(|x| {
            if x % 10 == 3 {
                Err(format!("item {x} is bad"))
            } else {
                Ok(x)
            }
        })
        .name("check")
        .max_failures(MaxFailures::Count(budget))
        .sink()
        .buffer(4)
        .build()
}

fn not_buildable(_: ()) -> Result<Pipeline<Vec<u64>>, BuildError> {
    PipelineBuilder::new()
        .source(0..1u64)
        .aggregate(0)
        .sink()
        .buffer(1)
        .build()
}

/// `count` buffers of `size` bytes; buffer `i` is filled with `i as u8`.
fn buffers((count, size): (usize, usize)) -> impl Iterator<Item = Bytes> {
    (0..count).map(move |i| Bytes::from(vec![i as u8; size]))
}

/// Yields a few items, then ends the way `how` says.
fn crashing(how: String) -> impl Iterator<Item = u32> {
    (0..10u32).inspect(move |&i| {
        if i == 5 {
            match how.as_str() {
                "panic" => panic!("the iterator panicked on purpose"),
                "abort" => std::process::abort(),
                "exit" => std::process::exit(3),
                _ => {}
            }
        }
    })
}

/// Yields one item, then nothing for a long time.
fn stalling(_: ()) -> impl Iterator<Item = u32> {
    (0..2u32).inspect(|&i| {
        if i == 1 {
            std::thread::sleep(Duration::from_secs(60));
        }
    })
}

/// Never ends.
fn endless(_: ()) -> impl Iterator<Item = u64> {
    0u64..
}

fn setup(ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("the initializer refused".to_owned())
    }
}

subprocess_fn!(
    pipeline numbers,
    pipeline epochs,
    pipeline failing,
    pipeline not_buildable,
    iter buffers,
    iter crashing,
    iter stalling,
    iter endless,
    init setup,
);

fn opts() -> SubprocessOptions {
    SubprocessOptions::new()
}

fn pipeline_output_arrives_in_order() {
    let mut sub = run_pipeline_in_subprocess(numbers, 1000, opts()).unwrap();
    let got: Vec<u64> = sub.iter().map(Result::unwrap).collect();
    assert_eq!(got, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    // The output is complete: another pass yields nothing, and is not an error.
    assert_eq!(sub.iter().count(), 0);
}

fn large_items_cross_both_transports() {
    for threshold in [Some(16 * 1024), None] {
        // Slots smaller than some items: those go through the pipe even with shared memory.
        let opts = opts()
            .buffer_size(3)
            .slot_size(200_000)
            .shm_threshold(threshold);
        let sizes = [(40, 100_000), (10, 300_000), (500, 10)];
        for (count, size) in sizes {
            let sub = iterate_in_subprocess(buffers, (count, size), opts.clone()).unwrap();
            let mut seen = 0;
            for (i, item) in sub.into_iter().enumerate() {
                let item = item.unwrap();
                assert_eq!(item.len(), size);
                assert!(item.iter().all(|&b| b == i as u8), "item {i} corrupted");
                seen += 1;
            }
            assert_eq!(seen, count, "threshold {threshold:?}, size {size}");
        }
    }
    // The shared-memory file is unlinked once the child has mapped it.
    let sub = iterate_in_subprocess(buffers, (1, 10), opts()).unwrap();
    let prefix = format!("pipeline-runtime-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "shared-memory files left: {left:?}");
    drop(sub);
}

fn breaking_out_and_iterating_again_continues() {
    let mut sub = run_pipeline_in_subprocess(numbers, 100, opts()).unwrap();
    let pid = sub.pid();
    let first: Vec<u64> = sub.iter().take(3).map(Result::unwrap).collect();
    assert_eq!(first, [0, 2, 4]);
    let rest: Vec<u64> = sub.iter().map(Result::unwrap).collect();
    assert_eq!(rest, (3..100).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(sub.pid(), pid, "the same child served both passes");

    // Large items too: the slots of the unread items stay valid.
    let mut sub = iterate_in_subprocess(buffers, (20, 50_000), opts().buffer_size(2)).unwrap();
    let first: Vec<u8> = sub.iter().take(5).map(|b| b.unwrap()[0]).collect();
    let rest: Vec<u8> = sub.iter().map(|b| b.unwrap()[0]).collect();
    assert_eq!(first, [0, 1, 2, 3, 4]);
    assert_eq!(rest, (5..20).collect::<Vec<u8>>());
}

fn a_continuous_pipeline_gives_one_epoch_per_iteration() {
    let mut sub = run_pipeline_in_subprocess(epochs, vec![1, 2, 3], opts()).unwrap();
    for _ in 0..3 {
        let epoch: Vec<u32> = sub.iter().map(Result::unwrap).collect();
        assert_eq!(epoch, [1, 2, 3]);
    }
    // Breaking out mid-epoch: the next pass finishes that epoch.
    let head: Vec<u32> = sub.iter().take(1).map(Result::unwrap).collect();
    let tail: Vec<u32> = sub.iter().map(Result::unwrap).collect();
    assert_eq!((head, tail), (vec![1], vec![2, 3]));
}

fn a_stage_failure_arrives_structured() {
    let mut sub = run_pipeline_in_subprocess(failing, 2, opts()).unwrap();
    let results: Vec<_> = sub.iter().collect();
    let (last, items) = results.split_last().unwrap();
    assert!(items.iter().all(Result::is_ok));
    let Err(SubprocessError::Pipeline(e)) = last else {
        panic!("expected a pipeline failure, got {last:?}");
    };
    let failure = e.first();
    assert_eq!(failure.stage(), "check");
    assert!(
        matches!(
            failure.kind(),
            RemoteFailureKind::BudgetExceeded { failures: 3, .. }
        ),
        "{:?}",
        failure.kind()
    );
    assert!(
        failure.causes().iter().any(|c| c.contains("is bad")),
        "{:?}",
        failure.causes()
    );
    assert!(e.to_string().contains("exceeded"), "{e}");
    // The child is gone: iterating again says so once, then nothing.
    let again: Vec<_> = sub.iter().collect();
    assert!(
        matches!(again.as_slice(), [Err(SubprocessError::Ended)]),
        "{again:?}"
    );
}

fn ended_with(how: &str) -> pipeline_runtime::process::ExitReport {
    let sub = iterate_in_subprocess(crashing, how.to_owned(), opts()).unwrap();
    let started = std::time::Instant::now();
    let results: Vec<_> = sub.into_iter().collect();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let (last, items) = results.split_last().unwrap();
    // Items before the fault arrive first, in order; after a panic all of them (the child
    // flushes its output), after an abort or exit those already written.
    let items: Vec<u32> = items.iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(items, (0..items.len() as u32).collect::<Vec<_>>());
    if how == "panic" {
        assert_eq!(items.len(), 5);
    }
    assert!(items.len() <= 5);
    match last {
        Err(SubprocessError::ChildEnded(report)) => report.clone(),
        other => panic!("expected ChildEnded, got {other:?}"),
    }
}

fn a_crashing_child_is_reported_promptly() {
    let panicked = ended_with("panic");
    // A worker whose code panicked exits with Rust's panic code.
    assert_eq!(panicked.code(), Some(101));
    assert!(
        panicked.to_string().contains("panicked on purpose"),
        "{panicked}"
    );
    let aborted = ended_with("abort");
    assert_eq!(aborted.signal(), Some(libc::SIGABRT));
    let exited = ended_with("exit");
    assert_eq!(exited.code(), Some(3));
    let message = SubprocessError::ChildEnded(exited).to_string();
    assert!(message.contains("exited with code 3"), "{message}");
}

fn a_killed_child_is_reported() {
    let mut sub = iterate_in_subprocess(endless, (), opts()).unwrap();
    assert_eq!(sub.iter().next().unwrap().unwrap(), 0);
    // SAFETY: signalling our own live child.
    unsafe { libc::kill(sub.pid() as i32, libc::SIGKILL) };
    let last = sub
        .iter()
        .find_map(Result::err)
        .expect("an error, not an endless stream");
    match last {
        SubprocessError::ChildEnded(report) => assert_eq!(report.signal(), Some(libc::SIGKILL)),
        other => panic!("expected ChildEnded, got {other:?}"),
    }
}

fn dropping_mid_stream_leaves_no_child() {
    let mut sub = iterate_in_subprocess(endless, (), opts()).unwrap();
    assert_eq!(sub.iter().take(10).count(), 10);
    assert_eq!(child_pids().len(), 1);
    drop(sub);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());

    let mut items = run_pipeline_in_subprocess(numbers, 1_000_000, opts())
        .unwrap()
        .into_iter();
    assert!(items.next().unwrap().is_ok());
    drop(items);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

/// Run in a child of the test process: start an endless subprocess, print its pid, exit
/// without any cleanup.
pub(crate) fn act_as_exiting_parent() -> ! {
    let mut sub = iterate_in_subprocess(endless, (), opts()).unwrap();
    assert!(sub.iter().next().unwrap().is_ok());
    println!("{}", sub.pid());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::exit(0)
}

fn the_child_ends_when_the_parent_process_exits() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .env(EXITING_PARENT_ENV, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let gone = || {
        // Gone, or a zombie waiting for init to reap it.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), gone),
        "subprocess {pid} outlived its parent"
    );
}

fn inactivity_times_out() {
    let opts = opts().timeout(Duration::from_millis(300));
    let mut sub = iterate_in_subprocess(stalling, (), opts).unwrap();
    let started = std::time::Instant::now();
    let results: Vec<_> = sub.iter().collect();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            results.as_slice(),
            [Ok(0), Err(SubprocessError::Timeout(_))]
        ),
        "{results:?}"
    );
    drop(sub);
    assert!(child_pids().is_empty());
}

fn initializer_and_factory_failures_fail_the_start() {
    let err = iterate_in_subprocess(endless, (), opts().initializer(setup, false)).unwrap_err();
    match &err {
        SubprocessError::Init { step, message } => {
            assert_eq!(*step, "initializer");
            assert_eq!(message, "the initializer refused");
        }
        other => panic!("expected Init, got {other:?}"),
    }
    assert!(iterate_in_subprocess(endless, (), opts().initializer(setup, true)).is_ok());
    let err = run_pipeline_in_subprocess(not_buildable, (), opts()).unwrap_err();
    assert!(
        matches!(
            &err,
            SubprocessError::Init {
                step: "factory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("aggregate"), "{err}");
    assert!(child_pids().is_empty());
}

fn unregistered(_: ()) -> Vec<u32> {
    vec![1]
}

fn an_unregistered_function_is_a_clear_error() {
    let err = iterate_in_subprocess(unregistered, (), opts()).unwrap_err();
    assert!(
        err.to_string()
            .contains("subprocess_fn!(iter unregistered)"),
        "{err}"
    );
    // A closure has no name the child could find it by.
    let err = iterate_in_subprocess(|n: u64| 0..n, 3, opts()).unwrap_err();
    assert!(
        err.to_string()
            .contains("a closure cannot run in a subprocess"),
        "{err}"
    );
}

fn the_output_is_a_stream_too() {
    let sub = run_pipeline_in_subprocess(numbers, 50, opts()).unwrap();
    let items: Vec<u64> =
        futures::executor::block_on(sub.into_stream().map(Result::unwrap).collect());
    assert_eq!(items, (0..50).map(|x| x * 2).collect::<Vec<_>>());

    // Dropping a stream whose child is idle (no timeout set) still ends the child.
    let mut stream = iterate_in_subprocess(stalling, (), opts())
        .unwrap()
        .into_stream();
    let first = futures::executor::block_on(stream.next()).unwrap().unwrap();
    assert_eq!(first, 0);
    drop(stream);
    assert!(
        wait_until(Duration::from_secs(10), || child_pids().is_empty()),
        "children left: {:?}",
        child_pids()
    );
}
