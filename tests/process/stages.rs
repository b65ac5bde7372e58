//! Process stages: results, workers started once, every way a worker can fail, sharing a
//! pool, the batch ("combined") pattern, build errors, and no child left behind.

use std::path::PathBuf;
use std::time::Duration;

use pipeline_runtime::error::StageFailureKind;
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::{
    pipeline, process_fn, MaxFailures, Pipeline, PipelineBuilder, PipelineError,
};

use crate::child_pids;

pub(crate) const TESTS: &[crate::Test] = crate::tests![
    "stages":
    outputs_come_back_and_workers_start_once,
    process_shapes_mean_what_thread_shapes_mean,
    calls_run_in_parallel_workers,
    every_fault_fails_only_its_item,
    a_worker_writing_garbage_on_its_pipe_fails_its_item_and_is_replaced,
    a_pool_serves_several_stages_and_pipelines,
    aggregate_then_collate_a_batch_in_a_worker,
    process_stage_in_the_macro,
    mistakes_are_build_errors,
    a_worker_cannot_start_a_pool,
    dropping_the_pool_ends_every_worker,
    dropping_the_pipeline_ends_every_worker,
    dropping_the_pipeline_ends_a_hung_worker,
    a_pool_outlives_the_thread_that_built_it,
];

fn square(x: u64) -> u64 {
    x * x
}

/// The output, and the process that computed it.
fn square_where(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// Waits (up to 20 s) until `n` calls have checked in under `dir`; true if they did, which
/// proves that `n` calls were running at the same time.
fn rendezvous(args: (String, usize)) -> bool {
    let (dir, n) = args;
    let dir = PathBuf::from(dir);
    std::fs::write(dir.join(std::process::id().to_string()), b"").unwrap();
    crate::wait_until(Duration::from_secs(20), || {
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) >= n
    })
}

/// Path where `fault` tells the parent which worker is about to hang.
fn hang_file(parent: u32) -> PathBuf {
    std::env::temp_dir().join(format!("pipeline-tests-{parent}.hang"))
}

/// Fails in the way its input says; returns the input otherwise.
fn fault(x: u64) -> u64 {
    match x {
        3 => std::process::abort(),
        // SAFETY: none; the point is a real segmentation fault in the worker.
        6 => unsafe { std::ptr::null_mut::<u64>().write_volatile(x) },
        8 => {
            // Say who we are, then wait to be killed by the test.
            // SAFETY: getppid has no preconditions.
            let parent = unsafe { libc::getppid() } as u32;
            std::fs::write(hang_file(parent), std::process::id().to_string()).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        10 => {
            let big = vec![1u8; 8 << 30];
            std::hint::black_box(&big);
        }
        12 => panic!("item {x} is bad"),
        _ => {}
    }
    x
}

/// Item 3 writes garbage on the worker's reply pipe (the protocol's own descriptor, found as
/// the write-only pipe among the worker's descriptors) before answering: a worker whose
/// memory a bug scribbled over. Returns the input and the process that computed it.
fn garble(x: u64) -> (u64, u32) {
    if x == 3 {
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let is_pipe = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"));
            // SAFETY: fcntl and write on a descriptor of this process, with a valid buffer.
            unsafe {
                if fd > 2
                    && is_pipe
                    && libc::fcntl(fd, libc::F_GETFL) & libc::O_ACCMODE == libc::O_WRONLY
                {
                    let junk = [0xffu8; 4096];
                    libc::write(fd, junk.as_ptr().cast(), junk.len());
                }
            }
        }
    }
    (x, std::process::id())
}

/// Sums each buffer of a batch: the "combined" pattern's decode-and-collate step.
fn collate(batch: Vec<Vec<u8>>) -> Vec<u64> {
    batch
        .iter()
        .map(|b| b.iter().map(|&v| u64::from(v)).sum())
        .collect()
}

fn slow_identity(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x
}

/// Never returns for item 1.
fn hang_on_one(x: u64) -> u64 {
    if x == 1 {
        std::thread::sleep(Duration::from_secs(3600));
    }
    x
}

/// Tries to build a process pool inside a worker; returns the error.
fn pool_inside_worker(_: u64) -> String {
    match ProcessPool::builder().build() {
        Ok(_) => "built".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// Fails 3 (a `Result` that crosses back: the `Err` fails the item, it is not a value).
fn checked(x: u64) -> Result<u64, String> {
    if x == 3 {
        Err(format!("{x} is bad"))
    } else {
        Ok(x * 10)
    }
}

fn maybe(x: u64) -> Option<u64> {
    checked(x).ok()
}

fn spread(x: u64) -> Vec<u64> {
    vec![x, x + 100]
}

/// For 3, an error after its first output.
fn spread_checked(x: u64) -> Vec<Result<u64, String>> {
    let second = if x == 3 {
        Err("3 fails midway".to_owned())
    } else {
        Ok(x + 100)
    };
    vec![Ok(x), second]
}

process_fn!(
    checked,
    maybe,
    spread,
    spread_checked,
    square,
    square_where,
    rendezvous,
    fault,
    garble,
    collate,
    slow_identity,
    hang_on_one,
    pool_inside_worker
);

fn pool(n: usize) -> ProcessPool {
    ProcessPool::builder()
        .num_workers(n)
        .name("test-worker")
        .build()
        .unwrap()
}

fn drain<T: Send + 'static>(p: Pipeline<T>) -> (Vec<T>, Option<PipelineError>) {
    let mut items = Vec::new();
    let mut error = None;
    for r in p {
        match r {
            Ok(x) => items.push(x),
            Err(e) => error = Some(e),
        }
    }
    (items, error)
}

fn outputs_come_back_and_workers_start_once() {
    let workers = pool(2);
    let pids = workers.worker_pids();
    assert_eq!(pids.len(), 2);
    let p = PipelineBuilder::new()
        .source(0..300u64)
        .process_pipe(square_where)
        .concurrency(4)
        .executor(&workers)
        .sink()
        .buffer(8)
        .build()
        .unwrap();
    let (items, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    let mut squares: Vec<u64> = items.iter().map(|(sq, _)| *sq).collect();
    squares.sort_unstable();
    assert_eq!(squares, (0..300u64).map(|x| x * x).collect::<Vec<_>>());
    for (_, pid) in &items {
        assert!(
            pids.contains(pid),
            "computed in {pid}, not in a worker of {pids:?}"
        );
    }
    assert_eq!(
        workers.workers_started(),
        2,
        "workers start once per pool, not per item"
    );
    assert_eq!(workers.worker_pids(), pids);
}

fn process_shapes_mean_what_thread_shapes_mean() {
    let workers = pool(2);
    let run = |stage: pipeline_runtime::StageBuilder<u64>| -> (Vec<u64>, u64) {
        let mut p = stage.name("shape").sink().build().unwrap();
        let mut items: Vec<u64> = p.by_ref().map(Result::unwrap).collect();
        items.sort_unstable();
        let stats = p.stats();
        let failures = stats
            .stages
            .iter()
            .find(|s| s.name == "shape")
            .unwrap()
            .failures;
        (items, failures)
    };
    let source = || PipelineBuilder::new().source(1..=6u64);
    let on = |b: pipeline_runtime::StageBuilder<u64>| b.executor(&workers).concurrency(2);
    assert_eq!(
        run(on(source().process_pipe(square))),
        (vec![1, 4, 9, 16, 25, 36], 0)
    );
    assert_eq!(
        run(on(source().process_try_pipe(checked))),
        (vec![10, 20, 40, 50, 60], 1),
        "an `Err` from the worker fails the item"
    );
    assert_eq!(
        run(on(source().process_opt_pipe(maybe))),
        (vec![10, 20, 40, 50, 60], 0)
    );
    let mut all: Vec<u64> = (1..=6).chain(101..=106).collect();
    all.sort_unstable();
    assert_eq!(run(on(source().process_flat_pipe(spread))), (all, 0));
    assert_eq!(
        run(on(source().process_try_flat_pipe(spread_checked))),
        (vec![1, 2, 3, 4, 5, 6, 101, 102, 104, 105, 106], 1)
    );

    // The same shapes in the macro.
    let p = pipeline! {
        source(1..=6u64)
        -> pipe(process try checked, executor = &workers, concurrency = 2, name = "shape")
        -> pipe(process flat spread, executor = &workers)
        -> sink()
    }
    .unwrap();
    let mut got: Vec<u64> = p.map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, [10, 20, 40, 50, 60, 110, 120, 140, 150, 160]);
}

fn calls_run_in_parallel_workers() {
    let dir = std::env::temp_dir().join(format!("pipeline-tests-rdv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let workers = pool(2);
    let arg = (dir.to_string_lossy().into_owned(), 2usize);
    let p = PipelineBuilder::new()
        .source(vec![arg.clone(), arg])
        .process_pipe(rendezvous)
        .concurrency(2)
        .executor(&workers)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let (met, error) = drain(p);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(met, vec![true, true], "both calls were in flight at once");
}

fn a_worker_writing_garbage_on_its_pipe_fails_its_item_and_is_replaced() {
    let workers = pool(1);
    let p = PipelineBuilder::new()
        .source(0..8u64)
        .process_pipe(garble)
        .executor(&workers)
        .sink()
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let mut items = Vec::new();
    let mut error = None;
    for r in p {
        match r {
            Ok(item) => items.push(item),
            Err(e) => error = Some(e),
        }
    }
    assert!(
        error.is_none(),
        "one failure is within the budget: {error:?}"
    );
    let xs: Vec<u64> = items.iter().map(|&(x, _)| x).collect();
    assert_eq!(xs, [0, 1, 2, 4, 5, 6, 7], "only the garbled item fails");
    let before: Vec<u32> = items
        .iter()
        .filter(|(x, _)| *x < 3)
        .map(|&(_, pid)| pid)
        .collect();
    let after: Vec<u32> = items
        .iter()
        .filter(|(x, _)| *x > 3)
        .map(|&(_, pid)| pid)
        .collect();
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "the worker that wrote garbage was replaced: {before:?} then {after:?}"
    );
}

fn every_fault_fails_only_its_item() {
    let _ = std::fs::remove_file(hang_file(std::process::id()));
    // One worker, so every item after a death runs on the replacement.
    let workers = ProcessPool::builder()
        .num_workers(1)
        .memory_limit(2 << 30)
        .build()
        .unwrap();
    let killer = std::thread::spawn(|| {
        let file = hang_file(std::process::id());
        let mut pid = None;
        crate::wait_until(Duration::from_secs(60), || {
            pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.parse::<i32>().ok());
            pid.is_some()
        });
        let _ = std::fs::remove_file(&file);
        // SAFETY: the worker's supervisor has not reaped it: it is waiting for its reply.
        unsafe { libc::kill(pid.expect("the worker said it hangs"), libc::SIGKILL) };
    });
    // Five faults; the budget allows four, so the pipeline ends at the last (item 12) and
    // reports every cause.
    let p = PipelineBuilder::new()
        .source(0..13u64)
        .process_pipe(fault)
        .executor(&workers)
        .sink()
        .buffer(4)
        .max_failures(MaxFailures::Count(4))
        .build()
        .unwrap();
    let (items, error) = drain(p);
    killer.join().unwrap();
    assert_eq!(items, vec![0, 1, 2, 4, 5, 7, 9, 11]);
    let error = error.expect("the fifth failure exceeds the budget");
    let StageFailureKind::BudgetExceeded { causes, .. } = error.first().kind() else {
        panic!("unexpected failure {error}");
    };
    let causes: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
    assert_eq!(causes.len(), 5, "{causes:#?}");
    assert!(
        causes[0].contains("aborted (signal 6, SIGABRT)"),
        "{}",
        causes[0]
    );
    assert!(causes[1].contains("segmentation fault"), "{}", causes[1]);
    assert!(
        causes[2].contains("killed by signal 9 (SIGKILL"),
        "{}",
        causes[2]
    );
    assert!(causes[3].contains("ran out of memory"), "{}", causes[3]);
    assert!(
        causes[4].contains("panicked: item 12 is bad"),
        "{}",
        causes[4]
    );
    for died in &causes[..4] {
        assert!(died.contains("while running this item"), "{died}");
        assert!(died.contains("stage `fault`"), "{died}");
    }
    // Four deaths, four replacements; the panic left its worker alive.
    assert_eq!(workers.workers_started(), 5);
    assert_eq!(workers.worker_pids().len(), 1);
}

fn a_pool_serves_several_stages_and_pipelines() {
    let workers = pool(2);
    let run = |offset: u64| {
        let p = PipelineBuilder::new()
            .source(offset..offset + 50)
            .process_pipe(square)
            .concurrency(2)
            .executor(&workers)
            .process_pipe(square_where)
            .concurrency(2)
            .executor(&workers)
            .sink()
            .buffer(4)
            .build()
            .unwrap();
        let (items, error) = drain(p);
        assert!(error.is_none(), "{error:?}");
        let mut got: Vec<u64> = items.into_iter().map(|(v, _)| v).collect();
        got.sort_unstable();
        got
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| run(0));
        let b = s.spawn(|| run(1000));
        assert_eq!(
            a.join().unwrap(),
            (0..50u64).map(|x| x.pow(4)).collect::<Vec<_>>()
        );
        assert_eq!(
            b.join().unwrap(),
            (1000..1050u64).map(|x| x.pow(4)).collect::<Vec<_>>()
        );
    });
    assert_eq!(workers.workers_started(), 2);
}

fn aggregate_then_collate_a_batch_in_a_worker() {
    let workers = pool(2);
    let buffers: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
    let p = PipelineBuilder::new()
        .source(buffers)
        .aggregate(8)
        .process_pipe(collate)
        .concurrency(2)
        .executor(&workers)
        .disaggregate()
        .sink()
        .buffer(8)
        .build()
        .unwrap();
    let (mut sums, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    sums.sort_unstable();
    assert_eq!(sums, (0..20u64).map(|i| i * 1000).collect::<Vec<_>>());
}

fn process_stage_in_the_macro() {
    let workers = pool(2);
    let p = pipeline! {
        source(0..100u64)
        -> pipe(process square, executor = workers, concurrency = 2)
        -> aggregate(10)
        -> sink(buffer = 2)
    }
    .unwrap();
    let (batches, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    let mut all: Vec<u64> = batches.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
}

fn not_registered(x: u64) -> u64 {
    x
}

fn mistakes_are_build_errors() {
    let workers = pool(1);
    let closure = PipelineBuilder::new()
        .source(0..3u64)
        .process_pipe(|x: u64| x)
        .executor(&workers)
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    assert!(
        closure
            .message()
            .contains("a closure cannot run in a worker process"),
        "{closure}"
    );
    let unregistered = PipelineBuilder::new()
        .source(0..3u64)
        .process_pipe(not_registered)
        .executor(&workers)
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    assert!(
        unregistered
            .message()
            .contains("process_fn!(not_registered)"),
        "{unregistered}"
    );
    let pointer: fn(u64) -> u64 = square;
    let by_pointer = PipelineBuilder::new()
        .source(0..3u64)
        .process_pipe(pointer)
        .executor(&workers)
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    assert!(
        by_pointer.message().contains("function pointer"),
        "{by_pointer}"
    );
    let no_pool = PipelineBuilder::new()
        .source(0..3u64)
        .process_pipe(square)
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    assert!(
        no_pool.message().contains("give it a `ProcessPool`"),
        "{no_pool}"
    );
    let sync_on_pool = PipelineBuilder::new()
        .source(0..3u64)
        .pipe(square)
        .executor(&workers)
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    assert!(
        sync_on_pool.message().contains("runs process stages only"),
        "{sync_on_pool}"
    );
    let zero = ProcessPool::builder().num_workers(0).build().unwrap_err();
    assert!(zero.message().contains("at least 1"), "{zero}");
}

fn a_worker_cannot_start_a_pool() {
    let workers = pool(1);
    let p = PipelineBuilder::new()
        .source(0..1u64)
        .process_pipe(pool_inside_worker)
        .executor(&workers)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    let (answers, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    assert!(
        answers[0].contains("workers never start workers"),
        "{}",
        answers[0]
    );
    assert_eq!(workers.workers_started(), 1);
}

fn dropping_the_pool_ends_every_worker() {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    let workers = pool(3);
    assert_eq!(child_pids().len(), 3);
    let clone = workers.clone();
    drop(workers);
    assert_eq!(child_pids().len(), 3, "a clone keeps the workers");
    drop(clone);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn dropping_the_pipeline_ends_every_worker() {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    // The pipeline holds the only handle; its source never ends and calls are in flight.
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .process_pipe(slow_identity)
        .concurrency(4)
        .executor(pool(2))
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    for _ in 0..3 {
        p.next().unwrap().unwrap();
    }
    assert_eq!(child_pids().len(), 2);
    drop(p);
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn dropping_the_pipeline_ends_a_hung_worker() {
    assert!(
        child_pids().is_empty(),
        "children before: {:?}",
        child_pids()
    );
    let mut p = PipelineBuilder::new()
        .source(0..3u64)
        .process_pipe(hang_on_one)
        .concurrency(2)
        .executor(pool(2))
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let mut got = vec![p.next().unwrap().unwrap(), p.next().unwrap().unwrap()];
    got.sort_unstable();
    assert_eq!(got, vec![0, 2]); // item 1 is stuck in its worker
                                 // Dropping kills the stuck worker rather than waiting for its call (an hour); a
                                 // watchdog turns a hang into a failure.
    let dropper = std::thread::spawn(move || drop(p));
    assert!(
        crate::wait_until(Duration::from_secs(60), || dropper.is_finished()),
        "dropping the pipeline hung on the stuck worker"
    );
    dropper.join().unwrap();
    assert!(child_pids().is_empty(), "children left: {:?}", child_pids());
}

fn a_pool_outlives_the_thread_that_built_it() {
    // Workers must not be tied to the thread that started them (`PR_SET_PDEATHSIG` is).
    let workers = std::thread::spawn(|| pool(2)).join().unwrap();
    let p = PipelineBuilder::new()
        .source(0..20u64)
        .process_pipe(square)
        .concurrency(2)
        .executor(&workers)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    let (mut items, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    items.sort_unstable();
    assert_eq!(items, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(
        workers.workers_started(),
        2,
        "no worker died with its starting thread"
    );
}
