//! How things end, beyond the happy path (issue 30's exit matrix): a pipeline stopped while
//! its process stage is stuck in a call must give the stuck workers back to a pool the user
//! keeps, and a parent killed by a signal must take its children, and a subprocess's
//! shared-memory ring, with it.
//!
//! The parent-death tests start a helper: this test binary again, with
//! [`HELPER_ENV`] naming what to play. The helper starts a child (a subprocess, or a pool's
//! worker) that reports its pid and the ring it mapped into a file and then blocks forever;
//! the test kills the helper with a real signal and watches the child.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pipeline_runtime::error::BuildError;
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::subprocess::{
    iterate_in_subprocess, run_pipeline_in_subprocess, SubprocessOptions,
};
use pipeline_runtime::{process_fn, subprocess_fn, MaxFailures, Pipeline, PipelineBuilder};

use crate::{child_pids, wait_until};

/// Set in a helper child of the test process: what it plays (see [`act_as_helper`]).
pub(crate) const HELPER_ENV: &str = "PIPELINE_TESTS_EXIT_HELPER";
/// The file the helper's own child reports into.
const REPORT_ENV: &str = "PIPELINE_TESTS_EXIT_REPORT";

pub(crate) const TESTS: &[crate::Test] = crate::tests!("exits":
    a_kept_pool_of_1_serves_fully_after_a_stuck_pipeline_is_dropped,
    a_kept_pool_of_2_serves_fully_after_a_stuck_pipeline_is_dropped,
    a_kept_pool_of_1_serves_fully_after_a_stuck_pipeline_stalls_fatally,
    a_kept_pool_of_2_serves_fully_after_a_stuck_pipeline_stalls_fatally,
    a_kept_pool_of_2_serves_fully_after_a_stuck_stage_trips_its_budget,
    a_subprocess_whose_parent_is_killed_in_the_factory_leaves_nothing,
    a_subprocess_whose_parent_is_terminated_in_the_initializer_leaves_nothing,
    a_subprocess_whose_parent_is_interrupted_in_the_factory_leaves_nothing,
    a_stuck_stage_worker_dies_with_its_killed_parent,
);

/// Writes this process's pid and the mapping of its shared-memory ring (if any) to `report`,
/// for the test that watches it.
fn report_to(report: &Path) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let ring = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|name| name.contains("pipeline-runtime"))
        .unwrap_or("-")
        .to_owned();
    let tmp = report.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n{ring}\n", std::process::id())).unwrap();
    std::fs::rename(tmp, report).unwrap();
}

fn block_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A process stage: with a directory, marks this worker as stuck there and never returns;
/// without one, answers with the worker's pid after a short call.
fn stick_or_answer((dir, _x): (String, u64)) -> u32 {
    if !dir.is_empty() {
        std::fs::write(Path::new(&dir).join(std::process::id().to_string()), b"").unwrap();
        block_forever();
    }
    std::thread::sleep(Duration::from_millis(2));
    std::process::id()
}

/// A process stage that reports its worker to the helper's report file and blocks.
fn report_and_block(_: u64) -> u64 {
    report_to(Path::new(&std::env::var_os(REPORT_ENV).unwrap()));
    block_forever()
}

/// A process stage: unless `fail`, marks this worker as stuck in `dir` and never returns;
/// with `fail`, waits until another worker is stuck there and fails.
fn stick_or_fail((dir, fail): (String, bool)) -> Result<u32, String> {
    if !fail {
        stick_or_answer((dir.clone(), 0));
    }
    let stuck = || std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !stuck() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Err("this item fails on purpose".to_owned())
}

process_fn!(stick_or_answer, stick_or_fail, report_and_block);

/// A subprocess factory and initialiser that report and block.
fn blocking_pipeline(report: PathBuf) -> Result<Pipeline<u64>, BuildError> {
    report_to(&report);
    block_forever()
}

fn blocking_iter(report: PathBuf) -> std::iter::Empty<u64> {
    report_to(&report);
    block_forever()
}

fn blocking_init(report: PathBuf) -> Result<(), String> {
    report_to(&report);
    block_forever()
}

fn nothing(_: ()) -> std::iter::Empty<u64> {
    std::iter::empty()
}

subprocess_fn!(
    pipeline blocking_pipeline,
    iter blocking_iter,
    iter nothing,
    init blocking_init,
);

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipeline-exits-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How the first pipeline ends while all its calls are stuck.
#[derive(Clone, Copy)]
enum End {
    Drop,
    StallFatal,
    /// The stage's failure budget trips on another worker's failing call.
    Budget,
}

/// A pool the user keeps: a pipeline whose every call is stuck ends (`end`); the next
/// pipeline on the same pool gets all its items, served by every worker slot, none of them
/// a stuck worker.
fn kept_pool_serves_fully_after(num_workers: usize, end: End) {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    // Built on a thread that ends at once: the workers must not die with it.
    let workers = std::thread::spawn(move || {
        ProcessPool::builder()
            .num_workers(num_workers)
            .name("exits-worker")
            .build()
            .unwrap()
    })
    .join()
    .unwrap();
    let dir = scratch_dir(&format!("stuck{num_workers}"));
    let stuck_dir = dir.to_string_lossy().into_owned();
    // Every worker stuck; with a budget, all but one, whose failing call trips it.
    let stuck_count = match end {
        End::Budget => num_workers - 1,
        _ => num_workers,
    };
    let mut stuck = match end {
        End::Budget => PipelineBuilder::new()
            .source((0..num_workers).map(move |i| (stuck_dir.clone(), i + 1 == num_workers)))
            .process_try_pipe(stick_or_fail)
            .concurrency(num_workers)
            .max_failures(MaxFailures::Count(0))
            .executor(&workers)
            .sink()
            .build()
            .unwrap(),
        _ => {
            let builder = PipelineBuilder::new()
                .source((0..num_workers as u64).map(move |x| (stuck_dir.clone(), x)))
                .process_pipe(stick_or_answer)
                .concurrency(num_workers)
                .executor(&workers)
                .sink();
            match end {
                End::StallFatal => builder
                    .stall_timeout(Duration::from_millis(200))
                    .stall_fatal(Duration::from_millis(600)),
                _ => builder,
            }
            .build()
            .unwrap()
        }
    };
    stuck.start().unwrap();
    let stuck_pids = || -> Vec<u32> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || stuck_pids().len()
            == stuck_count),
        "the workers did not all get stuck: {:?}",
        stuck_pids()
    );
    let stuck_pids = stuck_pids();
    match end {
        // Bounded: dropping must not wait for the stuck calls.
        End::Drop => within(
            Duration::from_secs(20),
            "dropping the pipeline",
            move || drop(stuck),
        ),
        End::StallFatal | End::Budget => {
            within(Duration::from_secs(30), "the failure", move || {
                let results: Vec<_> = stuck.collect();
                assert!(
                    results.iter().any(Result::is_err),
                    "a stalled or failed pipeline ended without an error: {results:?}"
                );
            })
        }
    }
    // The stuck workers were killed (and reaped) and the pool replaced them.
    for pid in &stuck_pids {
        assert!(
            wait_until(Duration::from_secs(10), || gone(*pid)),
            "stuck worker {pid} was not killed"
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || workers.worker_pids().len()
            == num_workers),
        "the pool did not replace its stuck workers: {:?}",
        workers.worker_pids()
    );
    let next = PipelineBuilder::new()
        .source((0..200u64).map(|x| (String::new(), x)))
        .process_pipe(stick_or_answer)
        .concurrency(num_workers)
        .executor(&workers)
        .sink()
        .build()
        .unwrap();
    let served: Vec<u32> = within(Duration::from_secs(60), "the next pipeline", move || {
        next.collect::<Result<_, _>>().unwrap()
    });
    assert_eq!(served.len(), 200, "the next pipeline lost items");
    let mut by = served.clone();
    by.sort_unstable();
    by.dedup();
    assert_eq!(
        by.len(),
        num_workers,
        "not every worker slot served items: {by:?} (stuck were {stuck_pids:?})"
    );
    assert!(by.iter().all(|pid| !stuck_pids.contains(pid)));
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        wait_until(Duration::from_secs(10), || child_pids().is_empty()),
        "children left: {:?}",
        child_pids()
    );
}

fn a_kept_pool_of_2_serves_fully_after_a_stuck_stage_trips_its_budget() {
    kept_pool_serves_fully_after(2, End::Budget);
}

/// Runs `f` on a thread of its own and fails the test if it takes longer than `limit`.
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{what} did not end within {limit:?}: {e}"))
}

/// Whether process `pid` is gone, or a zombie waiting to be reaped.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn a_kept_pool_of_1_serves_fully_after_a_stuck_pipeline_is_dropped() {
    kept_pool_serves_fully_after(1, End::Drop);
}

fn a_kept_pool_of_2_serves_fully_after_a_stuck_pipeline_is_dropped() {
    kept_pool_serves_fully_after(2, End::Drop);
}

fn a_kept_pool_of_1_serves_fully_after_a_stuck_pipeline_stalls_fatally() {
    kept_pool_serves_fully_after(1, End::StallFatal);
}

fn a_kept_pool_of_2_serves_fully_after_a_stuck_pipeline_stalls_fatally() {
    kept_pool_serves_fully_after(2, End::StallFatal);
}

/// What a helper plays: `sub-pipeline`, `sub-iter`, `sub-init` (a subprocess whose factory,
/// or initialiser, reports and blocks) or `stage` (a pipeline whose process stage does).
/// Never returns: the test kills it.
pub(crate) fn act_as_helper(mode: &str) -> ! {
    let report = PathBuf::from(std::env::var_os(REPORT_ENV).expect("a report file"));
    // Large slots, as the defect was found with (a 32 MiB sparse ring).
    let opts = || SubprocessOptions::new().slot_size(4 << 20).buffer_size(8);
    match mode {
        "sub-pipeline" => drop(run_pipeline_in_subprocess(
            blocking_pipeline,
            report,
            opts(),
        )),
        "sub-iter" => drop(iterate_in_subprocess(blocking_iter, report, opts())),
        "sub-init" => drop(iterate_in_subprocess(
            nothing,
            (),
            opts().initializer(blocking_init, report),
        )),
        "stage" => {
            let workers = ProcessPool::builder().num_workers(1).build().unwrap();
            let p = PipelineBuilder::new()
                .source(0..1u64)
                .process_pipe(report_and_block)
                .executor(&workers)
                .sink()
                .build()
                .unwrap();
            drop(p.collect::<Vec<_>>());
        }
        other => panic!("unknown helper mode {other}"),
    }
    unreachable!("the helper's child returned")
}

/// A helper process, killed and reaped if a check fails before the test kills it.
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a helper playing `mode`, waits for its child's report, kills the helper with
/// `signal` and checks that the child dies too and that no ring file of the helper's is left
/// in `/dev/shm`.
fn kill_helper_and_check(mode: &str, signal: i32) {
    let dir = scratch_dir(&format!("helper-{mode}-{signal}"));
    let report = dir.join("report");
    let mut helper = Helper(
        Command::new(std::env::current_exe().unwrap())
            .env(HELPER_ENV, mode)
            .env(REPORT_ENV, &report)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let helper_pid = helper.0.id();
    assert!(
        wait_until(Duration::from_secs(30), || report.exists()),
        "the helper's child never reported"
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let mut lines = text.lines();
    let child: u32 = lines.next().unwrap().parse().unwrap();
    let ring = lines.next().unwrap_or("-").to_owned();
    assert!(!gone(child), "the child {child} is not running");
    if mode.starts_with("sub") {
        // The ring is mapped before any user code runs, and has no name left by then.
        assert_ne!(ring, "-", "the subprocess has no ring mapped");
        assert!(
            !ring.starts_with("/dev/shm") || !Path::new(&ring).exists(),
            "the ring {ring} still has a file while the factory runs"
        );
    }
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(helper_pid as i32, signal) }, 0);
    let status = helper.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(signal),
        "the helper ended otherwise: {status:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || gone(child)),
        "the child {child} outlived its parent {helper_pid} (killed by signal {signal})"
    );
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("pipeline-runtime-{helper_pid}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "ring files left in /dev/shm: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn a_subprocess_whose_parent_is_killed_in_the_factory_leaves_nothing() {
    kill_helper_and_check("sub-pipeline", libc::SIGKILL);
    kill_helper_and_check("sub-iter", libc::SIGKILL);
}

fn a_subprocess_whose_parent_is_terminated_in_the_initializer_leaves_nothing() {
    kill_helper_and_check("sub-init", libc::SIGTERM);
    kill_helper_and_check("sub-pipeline", libc::SIGTERM);
}

fn a_subprocess_whose_parent_is_interrupted_in_the_factory_leaves_nothing() {
    kill_helper_and_check("sub-iter", libc::SIGINT);
}

fn a_stuck_stage_worker_dies_with_its_killed_parent() {
    kill_helper_and_check("stage", libc::SIGKILL);
}
