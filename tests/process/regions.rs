//! Process regions: a chain of stages (aggregate included) run as a nested pipeline in each
//! worker of a pool; outputs against a plain loop, the stages in the parent's statistics,
//! a crashing worker, stop and drop, build errors, and the ledger through a region (exact
//! resume, the memory budget, the accounts).

use std::collections::BTreeSet;
use std::time::Duration;

use pipeline_runtime::error::StageFailureKind;
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::resume_check::{Attempt, Checked, ResumeCheck};
use pipeline_runtime::{
    pipeline, process_region, BoxError, MaxFailures, Order, Pipeline, PipelineBuilder,
    PipelineError, ResumeState, StageBuilder,
};

use crate::child_pids;

pub(crate) const TESTS: &[crate::Test] = crate::tests![
    "regions":
    outputs_match_a_plain_loop_and_stages_merge_in_the_stats,
    the_bottleneck_report_sees_inside_the_region,
    a_worker_crash_fails_only_the_items_it_held_and_is_replaced,
    a_stage_budget_inside_the_region_fails_the_pipeline,
    dropping_the_pipeline_ends_every_worker_and_thread,
    stopping_ends_every_worker_and_thread,
    mistakes_are_build_errors,
    a_region_in_the_macro,
    epochs_pass_through_the_region,
    a_region_resumes_exactly_in_input_and_completion_order,
    the_memory_budget_and_the_accounts_count_items_through_a_region,
    a_region_with_a_flat_stage_resumes_exactly,
    fan_outs_inside_a_region_that_tracking_cannot_follow_are_refused,
];

fn square_slowly(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(500));
    x * x
}

fn keep_even(x: u64) -> Option<u64> {
    x.is_multiple_of(2).then_some(x)
}

/// A batch, and the worker that formed it.
fn tag_batch(batch: Vec<u64>) -> (u32, Vec<u64>) {
    (std::process::id(), batch)
}

/// square → keep even → batches of 4 → tag: every value between the stages stays in the
/// worker; only `u64`s enter and `(u32, Vec<u64>)`s leave.
fn batches(items: StageBuilder<u64>) -> StageBuilder<(u32, Vec<u64>)> {
    items
        .pipe(square_slowly)
        .concurrency(2)
        .opt_pipe(keep_even)
        .aggregate(4)
        .pipe(tag_batch)
}

fn busy_wait(x: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_millis(3);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    x
}

fn quick(x: u64) -> u64 {
    x + 1
}

/// A quick stage, then a slow one.
fn slow_second(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.pipe(quick).pipe(busy_wait)
}

/// Item 13 kills its worker.
fn abort_on_13(x: u64) -> u64 {
    if x == 13 {
        std::process::abort();
    }
    std::thread::sleep(Duration::from_millis(1));
    x
}

fn crashing(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items.pipe(abort_on_13).aggregate(2)
}

fn fail_odd(x: u64) -> Result<u64, String> {
    if !x.is_multiple_of(2) {
        Err(format!("{x} is odd"))
    } else {
        Ok(x)
    }
}

/// A stage whose own budget trips inside the worker.
fn strict(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.try_pipe(fail_odd).max_failures(MaxFailures::Count(2))
}

fn slow_identity(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x
}

fn slow(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items.pipe(slow_identity).aggregate(2)
}

/// Not registered.
fn unregistered(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.pipe(quick)
}

fn fail_on_3_mod_7(x: u64) -> Result<u64, String> {
    match x % 7 {
        3 => Err(format!("{x} fails")),
        _ => Ok(x),
    }
}

fn keep_not_1_mod_5(x: u64) -> Option<u64> {
    (x % 5 != 1).then_some(x)
}

/// Failures, a filter and batches of 3, all inside the region.
fn fail_filter_batch(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items
        .try_pipe(fail_on_3_mod_7)
        .opt_pipe(keep_not_1_mod_5)
        .aggregate(3)
}

fn twice(x: u64) -> [u64; 2] {
    [x, x + 1000]
}

/// A one-to-many stage inside the region.
fn fan_out(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.flat_pipe(twice)
}

fn outputs_of(x: u64) -> impl Iterator<Item = u64> {
    (0..x % 4).map(move |k| x * 10 + k)
}

/// A flat stage (0 to 3 outputs per input), a filter and batches of 3, inside the region.
fn flat_filter_batch(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items
        .flat_pipe(outputs_of)
        .opt_pipe(|y: u64| (!y.is_multiple_of(7)).then_some(y))
        .aggregate(3)
}

/// A batch taken apart inside the region.
fn batch_apart(items: StageBuilder<u64>) -> StageBuilder<u64> {
    items.aggregate(2).disaggregate()
}

process_region!(
    batches,
    slow_second,
    crashing,
    strict,
    slow,
    fail_filter_batch,
    fan_out,
    flat_filter_batch,
    batch_apart
);

fn pool(n: usize) -> ProcessPool {
    ProcessPool::builder()
        .num_workers(n)
        .name("region-worker")
        .build()
        .unwrap()
}

fn drain<T: Send + 'static>(p: &mut Pipeline<T>) -> (Vec<T>, Option<PipelineError>) {
    let mut items = Vec::new();
    let mut error = None;
    for r in p.by_ref() {
        match r {
            Ok(x) => items.push(x),
            Err(e) => error = Some(e),
        }
    }
    (items, error)
}

fn outputs_match_a_plain_loop_and_stages_merge_in_the_stats() {
    let workers = pool(2);
    let pids: BTreeSet<u32> = workers.worker_pids().into_iter().collect();
    let n = 400u64;
    let mut p = PipelineBuilder::new()
        .source(0..n)
        .process_region(batches)
        .executor(&workers)
        .sink()
        .build()
        .unwrap();
    let (got, error) = drain(&mut p);
    assert!(error.is_none(), "{error:?}");
    // The plain loop: the same stages, one item after another.
    let expected: Vec<u64> = (0..n).map(|x| x * x).filter(|x| x % 2 == 0).collect();
    let mut values: Vec<u64> = got.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    values.sort_unstable();
    assert_eq!(values, expected);
    // Batches are formed per worker: at most one partial batch each.
    let partial = got.iter().filter(|(_, b)| b.len() < 4).count();
    assert!(got.iter().all(|(_, b)| !b.is_empty() && b.len() <= 4));
    assert!(partial <= 2, "{partial} partial batches from 2 workers");
    let formed_in: BTreeSet<u32> = got.iter().map(|(pid, _)| *pid).collect();
    assert_eq!(formed_in, pids, "both workers ran the region");
    // Every stage inside the region is in the parent's statistics, with both workers'
    // figures added up.
    let stats = p.stats();
    let names: Vec<&str> = stats.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source",
            "square_slowly",
            "keep_even",
            "aggregate(4, drop_last=false)",
            "tag_batch"
        ]
    );
    assert_eq!(stats.queues.len(), stats.stages.len());
    let stage = |name: &str| stats.stages.iter().find(|s| s.name == name).unwrap();
    assert_eq!(stage("square_slowly").tasks, n);
    assert_eq!(
        stage("square_slowly").concurrency,
        4,
        "2 lanes in each of 2 workers"
    );
    assert_eq!(stage("square_slowly").task_time.count, n);
    assert!(stage("square_slowly").task_time.p50 >= Duration::from_micros(400));
    assert_eq!(stage("keep_even").outputs, expected.len() as u64);
    assert_eq!(
        stage("aggregate(4, drop_last=false)").tasks,
        expected.len() as u64
    );
    assert_eq!(stage("tag_batch").outputs, got.len() as u64);
    assert_eq!(stats.queues.last().unwrap().items, got.len() as u64);
    assert_eq!(workers.workers_started(), 2);
}

fn the_bottleneck_report_sees_inside_the_region() {
    let mut p = PipelineBuilder::new()
        .source(0..300u64)
        .process_region(slow_second)
        .executor(pool(2))
        .sink()
        .build()
        .unwrap();
    let (got, error) = drain(&mut p);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(got.len(), 300);
    let stats = p.stats();
    let busiest = stats.busiest_stage().expect("a busy stage");
    assert_eq!(busiest.name, "busy_wait", "{stats:#?}");
    assert!(stats.stages.iter().any(|s| s.name == "quick"));
}

fn a_worker_crash_fails_only_the_items_it_held_and_is_replaced() {
    let workers = pool(2);
    let n = 200u64;
    let mut p = PipelineBuilder::new()
        .source(0..n)
        .process_region(crashing)
        .executor(&workers)
        .sink()
        .build()
        .unwrap();
    let (got, error) = drain(&mut p);
    assert!(
        error.is_none(),
        "failures are within the (unlimited) budget: {error:?}"
    );
    let delivered: Vec<u64> = got.iter().flatten().copied().collect();
    assert!(
        !delivered.contains(&13),
        "the item that killed its worker is not delivered"
    );
    let unique: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(unique.len(), delivered.len(), "no item is delivered twice");
    let stats = p.stats();
    let failed: u64 = stats.stages.iter().map(|s| s.failures).sum();
    assert!(failed >= 1, "the worker's items failed");
    assert_eq!(
        delivered.len() as u64 + failed,
        n,
        "each item is delivered or failed, once: {failed} failed"
    );
    assert!(
        failed < n / 2,
        "only the dead worker's items fail ({failed} of {n})"
    );
    assert_eq!(workers.workers_started(), 3, "the dead worker was replaced");
    drop(p);
    // The replacement serves the next pipeline.
    let mut again = PipelineBuilder::new()
        .source(20..40u64)
        .process_region(crashing)
        .executor(&workers)
        .sink()
        .build()
        .unwrap();
    let (got, error) = drain(&mut again);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(got.iter().flatten().count(), 20);
    assert_eq!(workers.workers_started(), 3);
}

fn a_stage_budget_inside_the_region_fails_the_pipeline() {
    let mut p = PipelineBuilder::new()
        .source(0..100u64)
        .process_region(strict)
        .executor(pool(1))
        .sink()
        .build()
        .unwrap();
    let (got, error) = drain(&mut p);
    let error = error.expect("the stage's budget trips in the worker");
    let failure = error.first();
    assert_eq!(failure.stage(), "fail_odd");
    assert!(
        matches!(failure.kind(), StageFailureKind::InWorker(_)),
        "{failure:?}"
    );
    assert!(error.to_string().contains("in a worker process"), "{error}");
    assert!(
        got.len() < 50,
        "the pipeline ended early: {} items",
        got.len()
    );
}

/// Runs an endless pipeline with a region on a pool of 2 (which only the pipeline holds),
/// reads three items, lets `end` end it, and checks that no worker and no thread is left.
fn ends_every_worker_and_thread(end: impl FnOnce(Pipeline<Vec<u64>>)) {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    let threads = pipeline_tests::settled_thread_count();
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .process_region(slow)
        .executor(pool(2))
        .sink()
        .build()
        .unwrap();
    for _ in 0..3 {
        p.next().unwrap().unwrap();
    }
    assert_eq!(child_pids().len(), 2);
    end(p);
    assert!(
        crate::wait_until(Duration::from_secs(5), || child_pids().is_empty()),
        "children left: {:?}",
        child_pids()
    );
    assert_eq!(pipeline_tests::settled_thread_count(), threads);
}

fn dropping_the_pipeline_ends_every_worker_and_thread() {
    // Drop returns once every worker is reaped: nothing to wait for afterwards.
    ends_every_worker_and_thread(|p| {
        drop(p);
        assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
    });
}

fn stopping_ends_every_worker_and_thread() {
    // The stopped pipeline is kept until the checks have run.
    let mut stopped = None;
    ends_every_worker_and_thread(|mut p| {
        p.stop().unwrap();
        stopped = Some(p);
    });
    drop(stopped);
}

fn build_error<T: Send + 'static>(chain: StageBuilder<T>) -> String {
    match chain.sink().build() {
        Ok(_) => panic!("built"),
        Err(e) => e.to_string(),
    }
}

fn mistakes_are_build_errors() {
    let workers = pool(1);
    let src = || PipelineBuilder::new().source(0..4u64);
    let e = build_error(src().process_region(unregistered).executor(&workers));
    assert!(
        e.contains("`pipeline_runtime::process_region!(unregistered);`"),
        "{e}"
    );
    let e = build_error(src().process_region(slow));
    assert!(e.contains("give it a `ProcessPool`"), "{e}");
    let e = build_error(src().process_region(slow).executor(&workers).concurrency(2));
    assert!(
        e.contains("`concurrency` is not an option of process region `slow`"),
        "{e}"
    );
    let e = build_error(
        src()
            .process_region(|items: StageBuilder<u64>| items.pipe(quick))
            .executor(&workers),
    );
    assert!(
        e.contains("a closure cannot run in a worker process"),
        "{e}"
    );
    // A mistake inside the region is this pipeline's build error.
    fn zero_batch(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
        items.aggregate(0)
    }
    let e = build_error(src().process_region(zero_batch).executor(&workers));
    assert!(e.contains("in process region `zero_batch`"), "{e}");
    assert!(e.contains("batch size must be at least 1"), "{e}");
    assert_eq!(workers.workers_started(), 1);
}

/// What `fail_filter_batch` delivers of 0..n, item by item.
fn fail_filter_expected(n: u64) -> Vec<u64> {
    (0..n).filter(|x| x % 7 != 3 && x % 5 != 1).collect()
}

fn a_region_resumes_exactly_in_input_and_completion_order() {
    // One worker keeps input order (its batches are made again the same after a resume);
    // two give completion order.
    for (order, workers) in [(Order::Input, 1), (Order::Completion, 2)] {
        let build = |attempt: &Attempt<'_, ResumeState>| -> Result<Checked<Vec<u64>>, BoxError> {
            let pipeline = PipelineBuilder::new()
                .source(0..120u64)
                .process_region(fail_filter_batch)
                .executor(pool(workers))
                .sink()
                .buffer(2)
                .resume_from(attempt.own_state().cloned())
                .build()?;
            Ok(Checked::from(pipeline))
        };
        for seed in 0..2 {
            let report = ResumeCheck::new()
                .order(order)
                .seed(seed)
                .preemptions(3)
                .run_batches(build)
                .unwrap_or_else(|e| panic!("{order:?}, seed {seed}: {e}"));
            assert!(report.items > 0);
        }
    }
    // Across epochs of a continuous source (each worker flushes its batches at a boundary).
    let build = |attempt: &Attempt<'_, ResumeState>| -> Result<Checked<Vec<u64>>, BoxError> {
        let pipeline = PipelineBuilder::new()
            .continuous_source(0..50u64)
            .process_region(fail_filter_batch)
            .executor(pool(2))
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    ResumeCheck::new()
        .order(Order::Completion)
        .epochs(3)
        .preemptions(4)
        .seed(5)
        .run_batches(build)
        .unwrap_or_else(|e| panic!("continuous: {e}"));
    // Stopped after a few batches: what the state leaves pending comes again, and only
    // that, with the accounts balanced at the end.
    let build = |state: Option<ResumeState>| {
        PipelineBuilder::new()
            .source(0..120u64)
            .process_region(fail_filter_batch)
            .executor(pool(2))
            .sink()
            .buffer(1)
            .resume_from(state)
            .build()
            .unwrap()
    };
    let mut first = build(None);
    let mut got: Vec<u64> = first.by_ref().take(5).flat_map(Result::unwrap).collect();
    let state = first.resume_state().unwrap();
    drop(first);
    assert!(state.frontier() > 0, "{state:?}");
    let mut rest = build(Some(state));
    got.extend(rest.by_ref().flat_map(Result::unwrap));
    got.sort_unstable();
    assert_eq!(got, fail_filter_expected(120));
    let account = &rest.accounts()[0];
    assert!(account.ended && account.balanced(), "{account}");
    assert_eq!(account.sourced, 120, "{account}");
    drop(rest);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn the_memory_budget_and_the_accounts_count_items_through_a_region() {
    // 1 KB per input, 6 KB budget: the source waits for the region's outputs to be
    // delivered (or filtered, or failed inside) before it sends more.
    let mut p = PipelineBuilder::new()
        .source(0..200u64)
        .item_bytes(|_| 1000)
        .process_region(fail_filter_batch)
        .executor(pool(2))
        .sink()
        .memory_limit(6000)
        .build()
        .unwrap();
    let (batches, error) = drain(&mut p);
    assert!(error.is_none(), "{error:?}");
    let mut items: Vec<u64> = batches.into_iter().flatten().collect();
    items.sort_unstable();
    assert_eq!(items, fail_filter_expected(200));
    let stats = p.stats();
    let memory = stats.memory.unwrap();
    assert!(memory.peak <= 6000 && memory.in_flight == 0, "{memory:?}");
    let account = &stats.accounts[0];
    let failed = (0..200u64).filter(|x| x % 7 == 3).count() as u64;
    let filtered = (0..200u64).filter(|x| x % 7 != 3 && x % 5 == 1).count() as u64;
    assert_eq!(
        (account.sourced, account.failed, account.filtered),
        (200, failed, filtered),
        "{account}"
    );
    assert!(account.ended && account.balanced(), "{account}");
    // A fan-out inside a region is followed by its input's tokens under a budget.
    let mut p = PipelineBuilder::new()
        .source(0..100u64)
        .item_bytes(|_| 1000)
        .process_region(fan_out)
        .executor(pool(2))
        .sink()
        .memory_limit(4000)
        .build()
        .unwrap();
    let (mut items, error) = drain(&mut p);
    assert!(error.is_none(), "{error:?}");
    items.sort_unstable();
    let mut expected: Vec<u64> = (0..100).flat_map(twice).collect();
    expected.sort_unstable();
    assert_eq!(items, expected);
    assert!(p.stats().memory.unwrap().peak <= 4000);
    drop(p);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn a_region_with_a_flat_stage_resumes_exactly() {
    // Stops fall inside an input's outputs: those delivered before are skipped in the
    // worker after the resume.
    for (order, workers) in [(Order::Input, 1), (Order::Completion, 2)] {
        let build = |attempt: &Attempt<'_, ResumeState>| -> Result<Checked<Vec<u64>>, BoxError> {
            let pipeline = PipelineBuilder::new()
                .source(0..100u64)
                .process_region(flat_filter_batch)
                .executor(pool(workers))
                .sink()
                .buffer(1)
                .resume_from(attempt.own_state().cloned())
                .build()?;
            Ok(Checked::from(pipeline))
        };
        for seed in 0..3 {
            ResumeCheck::new()
                .order(order)
                .seed(seed)
                .preemptions(4)
                .run_batches(build)
                .unwrap_or_else(|e| panic!("{order:?}, seed {seed}: {e}"));
        }
    }
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn fan_outs_inside_a_region_that_tracking_cannot_follow_are_refused() {
    let workers = pool(1);
    let start = |track: bool| {
        let mut p = PipelineBuilder::new()
            .source(0..4u64)
            .process_region(batch_apart)
            .executor(&workers)
            .sink()
            .track_resume(track)
            .build()
            .unwrap();
        p.start().map(|()| p.by_ref().count())
    };
    let e = start(true).unwrap_err().to_string();
    assert!(
        e.contains("process region `batch_apart`") && e.contains("move that stage out"),
        "{e}"
    );
    assert_eq!(start(false).unwrap(), 4);
    // A flat stage in the region after one before it: two on one path.
    let mut p = PipelineBuilder::new()
        .source(0..4u64)
        .flat_pipe(|x: u64| [x, x])
        .process_region(fan_out)
        .executor(&workers)
        .sink()
        .track_resume(true)
        .build()
        .unwrap();
    let e = p.start().unwrap_err().to_string();
    assert!(e.contains("second on its path"), "{e}");
}

fn double(x: u64) -> u64 {
    x * 2
}

fn a_region_in_the_macro() {
    let workers = pool(2);
    let p = pipeline! {
        source(0..100u64)
        -> pipe(double)
        -> process_region(batches, executor = workers, buffer = 8)
        -> pipe(|(_, batch): (u32, Vec<u64>)| batch.len())
        -> sink()
    }
    .unwrap();
    let sizes: Vec<usize> = p.map(Result::unwrap).collect();
    // 100 doubled values, all even after squaring: 25 batches of 4 if the workers split
    // evenly, one partial batch more per worker otherwise.
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!((25..=27).contains(&sizes.len()), "{sizes:?}");
}

fn epochs_pass_through_the_region() {
    let threads = pipeline_tests::settled_thread_count();
    let mut p = PipelineBuilder::new()
        .continuous_source(0..40u64)
        .process_region(batches)
        .executor(pool(2))
        .sink()
        .build()
        .unwrap();
    // Each epoch's outputs, and only those, come before its boundary: the plain loop's
    // values, in batches formed per worker and per epoch.
    let expected: Vec<u64> = (0..40u64).map(|x| x * x).filter(|x| x % 2 == 0).collect();
    for epoch in 0..3 {
        let batches: Vec<Vec<u64>> = p.epoch().map(|b| b.unwrap().1).collect();
        assert!(
            batches.iter().filter(|b| b.len() < 4).count() <= 2,
            "epoch {epoch}: {batches:?}"
        );
        let mut values: Vec<u64> = batches.into_iter().flatten().collect();
        values.sort_unstable();
        assert_eq!(values, expected, "epoch {epoch}");
    }
    drop(p);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
    assert_eq!(pipeline_tests::settled_thread_count(), threads);
}
