//! Resizing a running pipeline, autotune, the memory limit and stall detection. Logged
//! events of `pipeline_runtime::tune` are captured by a process-wide subscriber of the
//! test's own (the supervisor logs from its own thread).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline_runtime::error::StageFailureKind;
use pipeline_runtime::stats::TuneTarget;
use pipeline_runtime::tune::{self, ItemBytes};
use pipeline_runtime::{Order, PipelineBuilder};
use pipeline_tests::{settled_thread_count, thread_count, wait_until};

type Event = pipeline_tests::capture::Event;

fn capture() -> &'static pipeline_tests::capture::Capture {
    pipeline_tests::capture::capture(tune::TARGET)
}

fn events_for_stage(stage: &str) -> Vec<Event> {
    capture().for_stage(stage)
}

/// Runs `n` items through an async and a sync stage while `plan` resizes them (and the
/// pool) at the given item counts; checks every item arrives exactly once.
fn resize_under_load(order: Order, plan: &[(usize, usize)], n: u64) {
    let before = settled_thread_count();
    let mut p = PipelineBuilder::new()
        .source(0..n)
        .async_pipe(|x: u64| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            x
        })
        .name("fetch")
        .concurrency(2)
        .order(order)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_micros(50));
            x
        })
        .name("work")
        .concurrency(2)
        .order(order)
        .sink()
        .num_threads(2)
        .build()
        .unwrap();
    let mut got = Vec::with_capacity(n as usize);
    let mut plan = plan.iter().peekable();
    while let Some(item) = p.next() {
        got.push(item.expect("no failure"));
        while let Some(&&(at, c)) = plan.peek() {
            if got.len() < at {
                break;
            }
            p.resize("fetch", c).unwrap();
            p.resize("work", c).unwrap();
            p.resize_pool(c.clamp(1, 4)).unwrap();
            let stats = p.stats();
            assert_eq!(stats.stages[1].concurrency, c, "fetch shows its new target");
            assert_eq!(stats.stages[2].concurrency, c, "work shows its new target");
            assert_eq!(stats.pool_threads, c.clamp(1, 4));
            plan.next();
        }
    }
    assert_eq!(got.len() as u64, n, "every item once");
    match order {
        Order::Input => assert!(
            got.iter().copied().eq(0..n),
            "input order kept across resizes"
        ),
        Order::Completion => {
            let unique: HashSet<u64> = got.iter().copied().collect();
            assert_eq!(unique.len() as u64, n, "no item twice");
            assert!(unique.iter().all(|&x| x < n));
        }
    }
    let tuning = p.stats().tuning;
    assert!(
        tuning
            .iter()
            .any(|d| d.target == TuneTarget::Stage("work".into()) && d.reason == "user"),
        "user resizes are logged in the stats: {tuning:?}"
    );
    drop(p);
    assert!(
        wait_until(Duration::from_secs(3), || thread_count() <= before),
        "threads gone after the drop (retired ones included)"
    );
}

#[test]
fn resizing_up_then_down_under_load_loses_and_duplicates_nothing() {
    resize_under_load(
        Order::Completion,
        &[(200, 8), (800, 1), (1400, 5), (2000, 1)],
        3000,
    );
}

#[test]
fn resizing_down_then_up_under_load_loses_and_duplicates_nothing() {
    resize_under_load(Order::Completion, &[(200, 1), (900, 8), (1600, 2)], 3000);
}

#[test]
fn resizing_keeps_input_order_in_both_directions() {
    resize_under_load(Order::Input, &[(200, 8), (800, 1), (1400, 6)], 2500);
    resize_under_load(Order::Input, &[(200, 1), (800, 7), (1400, 2)], 2500);
}

#[test]
fn resize_says_what_is_wrong() {
    let mut p = PipelineBuilder::new()
        .source(0..10u64)
        .pipe(|x: u64| x)
        .name("double")
        .pipe(|x: u64| x)
        .name("ordered")
        .order(Order::Input)
        .sink()
        .build()
        .unwrap();
    let early = p.resize("double", 2).unwrap_err().to_string();
    assert!(early.contains("not started"), "{early}");
    assert_eq!(p.next().unwrap().unwrap(), 0);
    let unknown = p.resize("nope", 2).unwrap_err().to_string();
    assert!(
        unknown.contains("`nope`") && unknown.contains("double"),
        "{unknown}"
    );
    let zero = p.resize("double", 0).unwrap_err().to_string();
    assert!(zero.contains("at least 1"), "{zero}");
    let fixed = p.resize("ordered", 2).unwrap_err().to_string();
    assert!(fixed.contains("concurrency_auto"), "{fixed}");
    assert!(p.resize_pool(0).is_err());
    p.resize("double", 3).unwrap();
    let rest: Vec<u64> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest, (1..10).collect::<Vec<_>>());
    assert!(p
        .resize("double", 1)
        .unwrap_err()
        .to_string()
        .contains("ended"));
}

/// An item that reports its size.
struct Blob {
    bytes: usize,
    id: u64,
}

impl ItemBytes for Blob {
    fn item_bytes(&self) -> usize {
        self.bytes
    }
}

#[test]
fn the_memory_budget_is_never_exceeded() {
    const LIMIT: u64 = 10_000;
    let n = 400u64;
    // Bytes of the items between the first stage (just admitted) and the last one, counted
    // by the test itself; checked at every admission.
    let live = Arc::new(AtomicU64::new(0));
    let worst = Arc::new(AtomicU64::new(0));
    let (live_in, worst_in, live_out) = (live.clone(), worst.clone(), live.clone());
    let mut p = PipelineBuilder::new()
        .source((0..n).map(|id| Blob {
            bytes: 500 + (id as usize * 37) % 2000,
            id,
        }))
        .reported_bytes()
        .pipe(move |b: Blob| {
            let now = live_in.fetch_add(b.bytes as u64, Ordering::SeqCst) + b.bytes as u64;
            worst_in.fetch_max(now, Ordering::SeqCst);
            b
        })
        .async_pipe(|b: Blob| async move {
            tokio::time::sleep(Duration::from_micros(300)).await;
            b
        })
        .concurrency(64)
        .pipe(move |b: Blob| {
            live_out.fetch_sub(b.bytes as u64, Ordering::SeqCst);
            b
        })
        .sink()
        .memory_limit(LIMIT)
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for b in p.by_ref() {
        ids.push(b.unwrap().id);
    }
    ids.sort_unstable();
    assert!(ids.iter().copied().eq(0..n), "every item delivered once");
    let memory = p.stats().memory.expect("a budget is set");
    assert!(memory.peak <= LIMIT, "peak {} over {LIMIT}", memory.peak);
    assert!(worst.load(Ordering::SeqCst) <= LIMIT);
    // 64 lanes of the async stage would hold far more than the budget: it was binding.
    assert!(
        memory.peak > LIMIT / 2,
        "the budget was used: {}",
        memory.peak
    );
    assert_eq!(memory.in_flight, 0, "everything given back");
}

#[test]
fn an_item_larger_than_the_budget_is_a_clear_error() {
    let mut p = PipelineBuilder::new()
        .source(vec![vec![0u8; 10], vec![0u8; 100], vec![0u8; 10]])
        .reported_bytes()
        .pipe(|v: Vec<u8>| v.len())
        .sink()
        .memory_limit(50)
        .build()
        .unwrap();
    let first = p.next().unwrap().unwrap();
    assert_eq!(first, 10);
    let error = p.next().unwrap().unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("100 bytes") && message.contains("memory_limit of 50"),
        "{message}"
    );
    assert!(p.next().is_none());
}

#[test]
fn tuning_options_are_checked_by_build() {
    let no_sizes = PipelineBuilder::new()
        .source(0..3u64)
        .sink()
        .memory_limit(100)
        .build()
        .unwrap_err();
    assert!(no_sizes.to_string().contains("item_bytes"), "{no_sizes}");
    let no_autotune = PipelineBuilder::new()
        .source(0..3u64)
        .pipe(|x: u64| x)
        .concurrency_auto(1..=8)
        .sink()
        .build()
        .unwrap_err();
    assert!(
        no_autotune.to_string().contains("autotune"),
        "{no_autotune}"
    );
    let misplaced = PipelineBuilder::new()
        .source(0..3u64)
        .aggregate(2)
        .concurrency_auto(1..=8)
        .sink()
        .autotune(true)
        .build()
        .unwrap_err();
    assert!(
        misplaced
            .to_string()
            .contains("`concurrency_auto` is not an option"),
        "{misplaced}"
    );
    let (low, high) = (4, 2);
    let bad_bounds = PipelineBuilder::new()
        .source(0..3u64)
        .pipe(|x: u64| x)
        .concurrency_auto(low..=high)
        .sink()
        .autotune(true)
        .build()
        .unwrap_err();
    assert!(bad_bounds.to_string().contains("bounds"), "{bad_bounds}");
    let stall = PipelineBuilder::new()
        .source(0..3u64)
        .sink()
        .stall_timeout(Duration::from_secs(2))
        .stall_fatal(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(stall.to_string().contains("longer"), "{stall}");
}

#[test]
fn a_stall_is_reported_naming_the_stage_that_holds_the_items() {
    capture();
    let release = Arc::new(AtomicUsize::new(0));
    let gate = release.clone();
    let mut p = PipelineBuilder::new()
        .source(0..20u64)
        .pipe(|x: u64| x)
        .name("before_stuck_w")
        .async_pipe(move |x: u64| {
            let gate = gate.clone();
            async move {
                while x == 5 && gate.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                x
            }
        })
        .name("stuck_w")
        .order(Order::Input)
        .concurrency(2)
        .sink()
        .stall_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let first: Vec<u64> = p.by_ref().take(5).map(Result::unwrap).collect();
    assert_eq!(first, [0, 1, 2, 3, 4]);
    assert!(
        wait_until(Duration::from_secs(5), || !events_for_stage("stuck_w")
            .is_empty()),
        "a stall warning"
    );
    let warning = &events_for_stage("stuck_w")[0];
    assert_eq!(warning.level, tracing::Level::WARN);
    assert!(
        warning.field("in_flight").is_some_and(|n| n != "0"),
        "{warning:?}"
    );
    let message = warning.field("message").unwrap_or_default().to_owned();
    assert!(message.contains("`stuck_w`"), "{message}");
    assert!(events_for_stage("before_stuck_w").is_empty());
    release.store(1, Ordering::SeqCst);
    let rest: Vec<u64> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(
        rest,
        (5..20).collect::<Vec<_>>(),
        "a warning only: it goes on"
    );
}

#[test]
fn a_fatal_stall_ends_the_pipeline_with_its_own_error_and_every_thread_gone() {
    let before = settled_thread_count();
    let started = Instant::now();
    let mut p = PipelineBuilder::new()
        .source(0..100u64)
        .pipe(|x: u64| x)
        .async_pipe(|x: u64| async move {
            if x == 3 {
                std::future::pending::<()>().await;
            }
            x
        })
        .name("never_returns")
        .order(Order::Input)
        .concurrency(2)
        .sink()
        .stall_timeout(Duration::from_millis(100))
        .stall_fatal(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut items = Vec::new();
    let error = loop {
        match p.next() {
            Some(Ok(x)) => items.push(x),
            Some(Err(e)) => break e,
            None => panic!("the pipeline ended without the stall error"),
        }
    };
    assert_eq!(items, [0, 1, 2]);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let failure = error.first();
    assert_eq!(failure.stage(), "never_returns");
    match failure.kind() {
        StageFailureKind::Stalled { in_flight, .. } => assert!(*in_flight >= 1),
        other => panic!("not a stall: {other:?}"),
    }
    assert!(error.to_string().contains("stalled"), "{error}");
    assert!(p.next().is_none());
    drop(p);
    assert!(
        wait_until(Duration::from_secs(3), || thread_count() <= before),
        "every thread gone"
    );
}

#[test]
fn autotune_raises_the_one_bottleneck_and_leaves_the_others() {
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .pipe(|x: u64| x + 1)
        .name("light_a")
        .async_pipe(|x: u64| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            x
        })
        .name("slow_io")
        .pipe(|x: u64| x * 2)
        .name("light_b")
        .sink()
        .num_threads(1)
        .autotune(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        p.next().unwrap().unwrap();
        n += 1;
    }
    let stats = p.stats();
    let by_name = |name: &str| stats.stages.iter().find(|s| s.name == name).unwrap();
    assert!(
        by_name("slow_io").concurrency >= 4,
        "the bottleneck raised: {}",
        stats
    );
    assert_eq!(by_name("light_a").concurrency, 1, "{stats}");
    assert_eq!(by_name("light_b").concurrency, 1, "{stats}");
    assert!(!stats.tuning.is_empty());
    assert!(
        stats
            .tuning
            .iter()
            .all(|d| d.target != TuneTarget::Stage("light_a".into())
                && d.target != TuneTarget::Stage("light_b".into())),
        "{:?}",
        stats.tuning
    );
    // One lane would give at most 500 items/s.
    assert!(n > 0);
}

#[test]
fn autotune_backs_off_a_stage_that_gains_nothing() {
    // Every call holds one lock: more lanes (or threads) cannot go faster.
    let lock = Arc::new(Mutex::new(()));
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .pipe(move |x: u64| {
            let _one_at_a_time = lock.lock().unwrap();
            std::thread::sleep(Duration::from_micros(500));
            x
        })
        .name("serial")
        .sink()
        .num_threads(1)
        .thread_limit(4)
        .autotune(true)
        .build()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        p.next().unwrap().unwrap();
    }
    let stats = p.stats();
    let tuning = &stats.tuning;
    let serial = TuneTarget::Stage("serial".into());
    assert!(
        tuning
            .iter()
            .any(|d| d.reason.contains("no gain") && d.to < d.from),
        "a raise undone: {tuning:?}"
    );
    // Backed off: it never climbs towards its bound of 64 (one noisy window may keep a
    // step, the next one undoes it).
    assert!(stats.stages[1].concurrency <= 2, "backed off: {tuning:?}");
    assert!(stats.pool_threads <= 2, "{tuning:?}");
    // Held off after failing: not raised again and again.
    let raises = tuning
        .iter()
        .filter(|d| d.target == serial && d.to > d.from)
        .count();
    assert!(raises <= 3, "no oscillation: {tuning:?}");
}

#[test]
fn autotune_follows_the_bottleneck_when_the_workload_changes() {
    use std::sync::atomic::AtomicBool;
    // Until `switched`, `first_io` sleeps and `second_io` does not; then the other way round.
    let switched = Arc::new(AtomicBool::new(false));
    let sleep_unless = |slow_after_switch: bool| {
        let switched = switched.clone();
        move |x: u64| {
            let slow = switched.load(Ordering::Relaxed) == slow_after_switch;
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                x
            }
        }
    };
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .async_pipe(sleep_unless(false))
        .name("first_io")
        .async_pipe(sleep_unless(true))
        .name("second_io")
        .sink()
        .num_threads(1)
        .autotune(true)
        .build()
        .unwrap();
    let concurrency = |p: &pipeline_runtime::Pipeline<u64>, name: &str| {
        let stats = p.stats();
        stats
            .stages
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .concurrency
    };
    let run_until = |p: &mut pipeline_runtime::Pipeline<u64>,
                     limit: Duration,
                     done: &dyn Fn(&pipeline_runtime::Pipeline<u64>) -> bool| {
        // The first reads start the pipeline: its statistics exist from then on.
        let started = Instant::now();
        loop {
            for _ in 0..100 {
                p.next().unwrap().unwrap();
            }
            if done(p) || started.elapsed() >= limit {
                break;
            }
        }
    };
    run_until(&mut p, Duration::from_secs(6), &|p| {
        concurrency(p, "first_io") >= 4
    });
    assert!(concurrency(&p, "first_io") >= 4, "{}", p.stats());
    assert_eq!(concurrency(&p, "second_io"), 1, "{}", p.stats());
    let decisions_before = p.stats().tuning.len();
    switched.store(true, Ordering::Relaxed);
    run_until(&mut p, Duration::from_secs(10), &|p| {
        concurrency(p, "second_io") >= 4
    });
    let stats = p.stats();
    assert!(
        concurrency(&p, "second_io") >= 4,
        "the new bottleneck raised: {stats}"
    );
    assert!(
        stats.tuning[decisions_before..]
            .iter()
            .any(|d| d.target == TuneTarget::Stage("second_io".into()) && d.to > d.from),
        "{:?}",
        stats.tuning
    );
}
