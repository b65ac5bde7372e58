//! Resizing a running pipeline, autotune, the memory limit and stall detection. Logged
//! events of `pipeline_runtime::tune` are captured by a process-wide subscriber of the
//! test's own (the supervisor logs from its own thread).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// A blob of `id` (sized for the memory budget), from `ids`.
fn blobs(ids: std::ops::Range<u64>) -> impl Iterator<Item = Blob> {
    ids.map(|id| Blob {
        bytes: 500 + (id as usize * 37) % 2000,
        id,
    })
}

/// Runs a structured pipeline under a memory budget: every item comes out once, the peak
/// stays under the budget, it binds, and everything is given back at the end.
fn budget_through(name: &str, limit: u64, n: u64, p: pipeline_runtime::Pipeline<Vec<Blob>>) {
    let mut p = p;
    let mut ids: Vec<u64> = p.by_ref().flat_map(|b| b.unwrap()).map(|b| b.id).collect();
    ids.sort_unstable();
    assert!(ids.iter().copied().eq(0..n), "{name}: every item once");
    let memory = p.stats().memory.expect("a budget is set");
    assert!(
        memory.peak <= limit,
        "{name}: peak {} over {limit}",
        memory.peak
    );
    assert!(memory.peak > limit / 2, "{name}: unused: {}", memory.peak);
    assert_eq!(memory.in_flight, 0, "{name}: everything given back");
}

async fn slowly(v: Vec<Blob>) -> Vec<Blob> {
    tokio::time::sleep(Duration::from_micros(300)).await;
    v
}

#[test]
fn the_memory_budget_holds_through_a_batched_route() {
    const LIMIT: u64 = 12_000;
    let n = 300;
    let p = PipelineBuilder::new()
        .source(blobs(0..n))
        .reported_bytes()
        .aggregate(3)
        .route_batched(|b: &Blob| (b.id % 2) as usize)
        .branch("slow", |b| b.async_pipe(slowly).concurrency(32))
        .branch("fast", |b| b.pipe(|v: Vec<Blob>| v))
        .join()
        .sink()
        .memory_limit(LIMIT)
        .build()
        .unwrap();
    budget_through("batched route", LIMIT, n, p);
}

#[test]
fn the_memory_budget_holds_through_a_merge() {
    const LIMIT: u64 = 12_000;
    let n = 300;
    // Each input numbers its own positions from 0: the budget must keep them apart.
    let input = |ids: std::ops::Range<u64>| {
        PipelineBuilder::new()
            .source(blobs(ids))
            .reported_bytes()
            .async_pipe(|b: Blob| async move {
                tokio::time::sleep(Duration::from_micros(300)).await;
                b
            })
            .concurrency(32)
    };
    let p = PipelineBuilder::new()
        .merge([input(0..100), input(100..n)])
        .aggregate(2)
        .sink()
        .memory_limit(LIMIT)
        .build()
        .unwrap();
    budget_through("merge", LIMIT, n, p);
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
    // `slow_io` is saturated at any number of lanes (an async stage's waits count as busy)
    // and each doubling doubles what it can pass (a 5 ms timer per item: 200, 400, 800
    // items/s), far beyond the 3% a raise must gain and whatever noise a loaded machine
    // adds; the light stages spend next to no time in their functions, far below the 75%
    // busy a raise needs. The run lasts until the raises have come (a wait, not a deadline).
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .pipe(|x: u64| x + 1)
        .name("light_a")
        .async_pipe(|x: u64| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
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
    let slow_io = |p: &pipeline_runtime::Pipeline<u64>| {
        p.stats()
            .stages
            .iter()
            .find(|s| s.name == "slow_io")
            .map_or(0, |s| s.concurrency)
    };
    let limit = Instant::now() + Duration::from_secs(60);
    while slow_io(&p) < 4 && Instant::now() < limit {
        for _ in 0..25 {
            p.next().unwrap().unwrap();
        }
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
    for d in &stats.tuning {
        assert!(
            d.target != TuneTarget::Stage("light_a".into())
                && d.target != TuneTarget::Stage("light_b".into()),
            "a light stage resized: {:#?}",
            stats.tuning
        );
        if d.to > d.from {
            let busy = raise_busy_percent(&d.reason)
                .unwrap_or_else(|| panic!("a raise for an unknown reason: {d}"));
            assert!(busy >= 75.0, "raised below saturation: {d}");
        }
    }
}

/// Lets calls through at most one per `period`, on one clock shared by every lane: the k-th
/// call returns at `start + k × period`, or at once when that time has passed (so a lane that
/// was held up catches up). Whatever the number of lanes, the k-th item cannot be done
/// before `k × period`; and one lane keeps the pace, since a call spends the rest of its
/// period waiting (busy, for the stage). More lanes gain nothing, by construction, on an
/// idle or a loaded machine alike.
#[derive(Clone)]
struct Metronome {
    period: Duration,
    start: Arc<std::sync::OnceLock<Instant>>,
    calls: Arc<AtomicU64>,
}

impl Metronome {
    fn new(period: Duration) -> Self {
        Self {
            period,
            start: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn tick(&self) {
        let start = *self.start.get_or_init(Instant::now);
        let k = self.calls.fetch_add(1, Ordering::SeqCst);
        let due = start + self.period.mul_f64(k as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// The two throughputs in an undo's reason, "no gain (A -> B items/s): undone".
fn no_gain_figures(reason: &str) -> Option<(f64, f64)> {
    let inner = reason.strip_prefix("no gain (")?;
    let (figures, rest) = inner.split_once(" items/s)")?;
    if rest != ": undone" {
        return None;
    }
    let (before, after) = figures.split_once(" -> ")?;
    Some((before.parse().ok()?, after.parse().ok()?))
}

/// The busy share in a raise's reason, "busiest stage, N% busy" or "default pool N% busy".
fn raise_busy_percent(reason: &str) -> Option<f64> {
    let figure = reason
        .strip_prefix("busiest stage, ")
        .or_else(|| reason.strip_prefix("default pool "))?;
    figure.strip_suffix("% busy")?.parse().ok()
}

#[test]
fn autotune_backs_off_a_stage_that_gains_nothing() {
    // What autotune guarantees, not what a run usually measures: on a busy machine a
    // trial's windows are noisy, so any one raise may be kept or undone; these hold either
    // way. The stage is saturated at any number of lanes (its calls wait for their slot)
    // and cannot go faster with more (one item per period), so raises are tried, and an
    // undo is bound to come: a trial is kept only when its windows measure 3% above the
    // window before it, which the pace allows only by noise, and every kept raise is
    // followed by another trial, up to the stage's bound.
    const STAGE: &str = "backoff_paced";
    const THREAD_LIMIT: usize = 4;
    const BOUND: usize = 8;
    const PERIOD: Duration = Duration::from_millis(2);
    // Autotune's rules (tune/controller.rs): the least gain kept, the saturation a raise
    // needs, the first hold after an undo. The hold is checked a second short of it.
    const MIN_GAIN: f64 = 0.03;
    const SATURATED_PERCENT: f64 = 75.0;
    const HELD: Duration = Duration::from_secs(4);
    let events = capture();
    let metronome = Metronome::new(PERIOD);
    let calls = pipeline_tests::InFlight::new();
    let calls_in = calls.clone();
    let mut p = PipelineBuilder::new()
        .source(0u64..)
        .pipe(move |x: u64| {
            calls_in.track(|| metronome.tick());
            x
        })
        .name(STAGE)
        .concurrency_auto(1..=BOUND)
        .sink()
        .num_threads(1)
        .thread_limit(THREAD_LIMIT)
        .autotune(true)
        .build()
        .unwrap();
    let stage = TuneTarget::Stage(STAGE.into());
    let undone = |p: &pipeline_runtime::Pipeline<u64>| {
        p.stats()
            .tuning
            .iter()
            .find(|d| d.target == stage && d.reason.starts_with("no gain"))
            .map(|d| d.at)
    };
    // Until the first undo (a wait, not a deadline: a loaded machine only takes longer),
    // then two seconds more, within the hold that follows it.
    let limit = Instant::now() + Duration::from_secs(60);
    let mut first_undo: Option<Instant> = None;
    while Instant::now() < limit {
        for _ in 0..25 {
            p.next().unwrap().unwrap();
        }
        match first_undo {
            None if undone(&p).is_some() => first_undo = Some(Instant::now()),
            Some(at) if at.elapsed() >= Duration::from_secs(2) => break,
            _ => {}
        }
    }
    let stats = p.stats();
    drop(p);
    let tuning = &stats.tuning;

    // Backed off: a raise that gained nothing was undone (none would be, were undo broken).
    assert!(
        first_undo.is_some(),
        "no raise of `{STAGE}` undone within 60 s: {tuning:#?}"
    );
    for (i, d) in tuning.iter().enumerate() {
        // Within the bounds: the stage's, and the thread limit for the pool.
        match &d.target {
            TuneTarget::Pool => assert!(
                (1..=THREAD_LIMIT).contains(&d.to),
                "the pool beyond the thread limit: {d}"
            ),
            _ => assert!((1..=BOUND).contains(&d.to), "beyond the bounds: {d}"),
        }
        if d.to > d.from {
            // Raised only when saturated.
            let busy = raise_busy_percent(&d.reason)
                .unwrap_or_else(|| panic!("a raise for an unknown reason: {d}"));
            assert!(busy >= SATURATED_PERCENT, "raised below saturation: {d}");
            continue;
        }
        // Every step down is an undo: it restores the value from before the raise it undoes
        // (the last change of the same knob), and the raise gained less than MIN_GAIN.
        let (before, after) = no_gain_figures(&d.reason)
            .unwrap_or_else(|| panic!("a step down that is not an undo: {d}"));
        let raise = tuning[..i]
            .iter()
            .rev()
            .find(|r| r.target == d.target)
            .unwrap_or_else(|| panic!("an undo with no raise before it: {d}"));
        assert!(
            raise.from == d.to && raise.to == d.from,
            "the undo does not restore the value before its raise: {raise} then {d}"
        );
        // The figures are the raise's throughput (before) and the one measured on trial,
        // rounded to whole items/s in the reason.
        assert!(
            (raise.throughput - before).abs() <= 0.5 && (d.throughput - after).abs() <= 0.5,
            "the reason's figures are not the measured ones: {raise} then {d}"
        );
        assert!(
            d.throughput < raise.throughput * (1.0 + MIN_GAIN),
            "undone with a gain of at least {MIN_GAIN}: {raise} then {d}"
        );
    }
    // The last decision on each knob is where it stands; the pool's size caps the calls
    // under way, the thread limit caps the pool.
    let last = |target: &TuneTarget| {
        tuning
            .iter()
            .rev()
            .find(|d| &d.target == target)
            .map(|d| d.to)
    };
    assert_eq!(
        stats.stages[1].concurrency,
        last(&stage).unwrap_or(1),
        "{tuning:#?}"
    );
    assert_eq!(
        stats.pool_threads,
        last(&TuneTarget::Pool).unwrap_or(1),
        "{tuning:#?}"
    );
    let most_threads = tuning
        .iter()
        .filter(|d| d.target == TuneTarget::Pool)
        .map(|d| d.to)
        .fold(1, usize::max);
    assert!(
        calls.max() <= most_threads,
        "{} calls at once on a pool of at most {most_threads} threads",
        calls.max()
    );

    // Held: after an undo the stage is not raised above the value it went back to for the
    // hold (5 s, checked over 4 s), unless autotune lifted every hold because the workload
    // changed (logged; any pipeline's lifting in this process excuses it). Were holds broken,
    // the stage (saturated) would be raised again at the next window. Times from the log,
    // where the decisions of this stage are logged too.
    let logged = events.events();
    let of_stage = |e: &&Event| e.field("target_kind") == Some(&*format!("{stage}"));
    let number =
        |e: &Event, field: &str| -> usize { e.field(field).and_then(|v| v.parse().ok()).unwrap() };
    let decisions: Vec<&Event> = logged.iter().filter(of_stage).collect();
    let lifted: Vec<Instant> = logged
        .iter()
        .filter(|e| {
            e.field("message")
                .is_some_and(|m| m.contains("holds lifted"))
        })
        .map(|e| e.at)
        .collect();
    for (i, undo) in decisions.iter().enumerate() {
        if !undo
            .field("reason")
            .is_some_and(|r| r.starts_with("no gain"))
        {
            continue;
        }
        let ceiling = number(undo, "to");
        for raise in &decisions[i + 1..] {
            let early = raise.at < undo.at + HELD;
            let excused = lifted.iter().any(|&t| undo.at < t && t <= raise.at);
            assert!(
                !(early && number(raise, "to") > ceiling) || excused,
                "raised within its hold: {:?} then {:?}",
                undo.field("message"),
                raise.field("message")
            );
        }
    }
}

#[test]
fn autotune_follows_the_bottleneck_when_the_workload_changes() {
    use std::sync::atomic::AtomicBool;
    // Until `switched`, `first_io` sleeps and `second_io` does not; then the other way round.
    // The sleeping stage is saturated at any number of lanes and each doubling doubles what
    // it can pass (a 5 ms timer per item), far beyond the 3% a raise must gain and any noise
    // of a loaded machine; the other one's futures are ready at once, never near the 75%
    // busy a raise needs. Each phase lasts until its raises have come (a wait, not a
    // deadline).
    let switched = Arc::new(AtomicBool::new(false));
    let sleep_unless = |slow_after_switch: bool| {
        let switched = switched.clone();
        move |x: u64| {
            let slow = switched.load(Ordering::Relaxed) == slow_after_switch;
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(5)).await;
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
    run_until(&mut p, Duration::from_secs(60), &|p| {
        concurrency(p, "first_io") >= 4
    });
    assert!(concurrency(&p, "first_io") >= 4, "{}", p.stats());
    assert_eq!(concurrency(&p, "second_io"), 1, "{}", p.stats());
    let decisions_before = p.stats().tuning.len();
    switched.store(true, Ordering::Relaxed);
    run_until(&mut p, Duration::from_secs(60), &|p| {
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
