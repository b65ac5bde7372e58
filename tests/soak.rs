//! A randomised soak, driven as a user would drive the library: random mixes of stage shapes
//! (sync, fallible, panicking, filtering, one-to-many, async, aggregate + disaggregate), random
//! concurrency, order, executors, pool sizes, queue capacities and sink buffers, and random
//! early drops and `stop()`s.
//!
//! Every run is checked against a plain loop over the same stage functions: every source item
//! is delivered, failed or filtered exactly as the loop predicts (in input order the delivered
//! sequence is the prediction, or a prefix of it after an early stop), every drop returns well
//! under the stop timeout (no stage function here blocks), and no thread of the pipeline
//! survives it.
//!
//! `SOAK_RUNS` (default 300) and `SOAK_SEED` make it longer or different; thread counts are per
//! process, so this target holds this one test only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_runtime::executor::{Executor, ThreadPool};
use pipeline_runtime::{Order, Pipeline, PipelineBuilder, StageBuilder};
use pipeline_tests::{env_u64, settled_thread_count, thread_count, wait_until, SplitMix as Rng};

const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// A drop or stop that takes longer than this waited for something that never came.
const PROMPT: Duration = Duration::from_millis(1500);
const PANIC_TAG: &str = "soak: planned panic";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Map,
    Fallible,
    Panicking,
    Filter,
    Flat,
    AsyncMap,
    AsyncFallible,
    AsyncFilter,
    AsyncFlat,
    /// `aggregate(n)` then `disaggregate()`: the identity, in order.
    Batch(usize),
}

const SHAPES: [Shape; 10] = [
    Shape::Map,
    Shape::Fallible,
    Shape::Panicking,
    Shape::Filter,
    Shape::Flat,
    Shape::AsyncMap,
    Shape::AsyncFallible,
    Shape::AsyncFilter,
    Shape::AsyncFlat,
    Shape::Batch(0),
];

#[derive(Clone, Copy, Debug)]
enum Exec {
    Default,
    Own,
    Rayon,
}

#[derive(Clone, Debug)]
struct StagePlan {
    shape: Shape,
    concurrency: usize,
    order: Order,
    exec: Exec,
    /// Items with `x % modulus == residue` are the ones this stage fails, drops or panics on.
    modulus: u64,
    residue: u64,
    salt: u64,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Read everything.
    Full,
    /// Read `k` items, then drop the pipeline.
    DropAfter(usize),
    /// Read `k` items, `stop()`, read what is still buffered, then drop.
    StopAfter(usize),
}

#[derive(Clone, Debug)]
struct Plan {
    items: u64,
    stages: Vec<StagePlan>,
    num_threads: usize,
    queue_capacity: usize,
    sink_buffer: usize,
    ending: Ending,
}

/// What a stage does to one value: its outputs, or `Err(true)` for a failure (error or panic),
/// `Err(false)` for an item it drops.
fn apply(stage: &StagePlan, x: u64) -> Result<Vec<u64>, bool> {
    let hit = x % stage.modulus == stage.residue;
    match stage.shape {
        Shape::Map | Shape::AsyncMap => Ok(vec![x.wrapping_mul(3).wrapping_add(stage.salt)]),
        Shape::Fallible | Shape::AsyncFallible | Shape::Panicking if hit => Err(true),
        Shape::Fallible | Shape::AsyncFallible => Ok(vec![x.wrapping_add(1)]),
        Shape::Panicking => Ok(vec![x ^ 1]),
        Shape::Filter | Shape::AsyncFilter if hit => Err(false),
        Shape::Filter | Shape::AsyncFilter => Ok(vec![x]),
        Shape::Flat | Shape::AsyncFlat => Ok((0..x % 3).map(|i| (x << 2) | i).collect()),
        Shape::Batch(_) => Ok(vec![x]),
    }
}

/// The plain loop: what the pipeline must deliver, in source order, and the failures per stage.
fn predict(plan: &Plan) -> (Vec<u64>, Vec<u64>) {
    let mut out = Vec::new();
    let mut failures = vec![0u64; plan.stages.len()];
    for x in 0..plan.items {
        let mut values = vec![x];
        for (i, stage) in plan.stages.iter().enumerate() {
            let mut next = Vec::new();
            for v in values {
                match apply(stage, v) {
                    Ok(outs) => next.extend(outs),
                    Err(true) => failures[i] += 1,
                    Err(false) => {}
                }
            }
            values = next;
        }
        out.extend(values);
    }
    (out, failures)
}

fn random_plan(rng: &mut Rng) -> Plan {
    let stage_count = rng.range(1, 5);
    let stages = (0..stage_count)
        .map(|_| {
            let mut shape = SHAPES[rng.below(SHAPES.len() as u64) as usize];
            if shape == Shape::Batch(0) {
                shape = Shape::Batch(rng.range(1, 12));
            }
            let mut concurrency = [1, 1, 2, 3, 4, 8][rng.below(6) as usize];
            let order = if rng.chance(50) {
                Order::Input
            } else {
                Order::Completion
            };
            // One-to-many in input order runs with one lane (more is a build error).
            if matches!(shape, Shape::Flat | Shape::AsyncFlat) && order == Order::Input {
                concurrency = 1;
            }
            let exec = match rng.below(6) {
                0 => Exec::Own,
                1 => Exec::Rayon,
                _ => Exec::Default,
            };
            StagePlan {
                shape,
                concurrency,
                order,
                exec,
                modulus: rng.range(2, 9) as u64,
                residue: rng.below(2),
                salt: rng.below(1000),
            }
        })
        .collect();
    let items = [0, 1, 5, 50, 300, 2000][rng.below(6) as usize];
    let ending = match rng.below(4) {
        0 => Ending::Full,
        1 | 2 => Ending::DropAfter(rng.range(0, 600)),
        _ => Ending::StopAfter(rng.range(0, 600)),
    };
    Plan {
        items,
        stages,
        num_threads: rng.range(1, 4),
        queue_capacity: [1, 2, 4, 8, 64][rng.below(5) as usize],
        sink_buffer: rng.range(1, 8),
        ending,
    }
}

/// Pools given to the stages that ask for one; dropped with the run.
struct Pools {
    own: ThreadPool,
    rayon: Arc<pipeline_runtime::executor::rayon::ThreadPool>,
}

fn add_stage(
    b: StageBuilder<u64>,
    stage: &StagePlan,
    index: usize,
    pools: &Pools,
) -> StageBuilder<u64> {
    let s = stage.clone();
    let b = match stage.shape {
        Shape::Map => b.pipe(move |x| apply(&s, x).unwrap()[0]),
        Shape::Fallible => {
            b.try_pipe(move |x| apply(&s, x).map(|v| v[0]).map_err(|_| "planned failure"))
        }
        Shape::Panicking => b.pipe(move |x| match apply(&s, x) {
            Ok(v) => v[0],
            Err(_) => panic!("{PANIC_TAG}"),
        }),
        Shape::Filter => b.opt_pipe(move |x| apply(&s, x).ok().map(|v| v[0])),
        Shape::Flat => b.flat_pipe(move |x| apply(&s, x).unwrap()),
        Shape::AsyncMap => b.async_pipe(move |x| {
            let v = apply(&s, x).unwrap()[0];
            async move {
                if v.is_multiple_of(7) {
                    tokio::task::yield_now().await;
                }
                v
            }
        }),
        Shape::AsyncFallible => b.async_try_pipe(move |x| {
            let r = apply(&s, x).map(|v| v[0]).map_err(|_| "planned failure");
            async move { r }
        }),
        Shape::AsyncFilter => b.async_opt_pipe(move |x| {
            let r = apply(&s, x).ok().map(|v| v[0]);
            async move {
                tokio::task::yield_now().await;
                r
            }
        }),
        Shape::AsyncFlat => {
            b.async_flat_pipe(move |x| futures::stream::iter(apply(&s, x).unwrap()))
        }
        Shape::Batch(n) => return b.aggregate(n).disaggregate(),
    };
    let b = b
        .concurrency(stage.concurrency)
        .order(stage.order)
        .name(format!("s{index}"));
    let sync = !matches!(
        stage.shape,
        Shape::AsyncMap | Shape::AsyncFallible | Shape::AsyncFilter | Shape::AsyncFlat
    );
    match stage.exec {
        Exec::Own if sync => b.executor(&pools.own),
        Exec::Rayon if sync => b.executor(Executor::Rayon(pools.rayon.clone())),
        _ => b,
    }
}

fn build(plan: &Plan, pools: &Pools) -> Pipeline<u64> {
    let mut b = PipelineBuilder::new().source(0..plan.items);
    for (i, stage) in plan.stages.iter().enumerate() {
        b = add_stage(b, stage, i, pools);
    }
    b.sink()
        .buffer(plan.sink_buffer)
        .num_threads(plan.num_threads)
        .queue_capacity(plan.queue_capacity)
        .stop_timeout(STOP_TIMEOUT)
        .build()
        .expect("a valid plan builds")
}

fn order_preserved(plan: &Plan) -> bool {
    plan.stages
        .iter()
        .all(|s| s.order == Order::Input || s.concurrency == 1)
}

fn multiset(values: &[u64]) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for v in values {
        *m.entry(*v).or_default() += 1;
    }
    m
}

/// Runs one plan and checks it; returns a description of what went wrong.
fn run(plan: &Plan, baseline_threads: usize) -> Result<(), String> {
    let (expected, expected_failures) = predict(plan);
    let pools = Pools {
        own: ThreadPool::builder()
            .num_threads(2)
            .name("soak-own")
            .build()
            .map_err(|e| e.to_string())?,
        rayon: Arc::new(
            pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .thread_name(|i| format!("soak-rayon-{i}"))
                .build()
                .map_err(|e| e.to_string())?,
        ),
    };
    let mut p = build(plan, &pools);
    let limit = match plan.ending {
        Ending::Full => usize::MAX,
        Ending::DropAfter(k) | Ending::StopAfter(k) => k,
    };
    let mut delivered = Vec::new();
    while delivered.len() < limit {
        match p.next() {
            Some(Ok(v)) => delivered.push(v),
            Some(Err(e)) => return Err(format!("pipeline failed: {e}")),
            None => break,
        }
    }
    let mut slow = None;
    if let Ending::StopAfter(_) = plan.ending {
        let t0 = Instant::now();
        p.stop().map_err(|e| format!("stop returned {e}"))?;
        if t0.elapsed() > PROMPT {
            slow = Some(format!("stop took {:?}", t0.elapsed()));
        }
        // Items already in the sink stay readable after stop.
        for r in p.by_ref() {
            delivered.push(r.map_err(|e| format!("after stop: {e}"))?);
        }
    }
    let finished_early = delivered.len() < expected.len();
    let stats = p.stats();
    let t0 = Instant::now();
    drop(p);
    let drop_time = t0.elapsed();
    drop(pools);
    if let Some(slow) = slow {
        return Err(slow);
    }
    if drop_time > PROMPT {
        return Err(format!("drop took {drop_time:?}"));
    }
    if !wait_until(Duration::from_secs(3), || {
        thread_count() <= baseline_threads
    }) {
        return Err(format!(
            "{} threads left behind",
            thread_count() as isize - baseline_threads as isize
        ));
    }

    if order_preserved(plan) {
        if delivered[..] != expected[..delivered.len().min(expected.len())] {
            let at = delivered
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(expected.len());
            return Err(format!(
                "input order: delivered differs from the plain loop at position {at} \
                 ({} delivered, {} expected)",
                delivered.len(),
                expected.len()
            ));
        }
    } else {
        let want = multiset(&expected);
        for (v, n) in multiset(&delivered) {
            if want.get(&v).copied().unwrap_or(0) < n {
                return Err(format!(
                    "value {v} delivered {n} times, more than predicted"
                ));
            }
        }
    }
    if matches!(plan.ending, Ending::Full) || !finished_early && delivered.len() < limit {
        if delivered.len() != expected.len() {
            return Err(format!(
                "read to the end: {} delivered, {} predicted",
                delivered.len(),
                expected.len()
            ));
        }
        let failures: Vec<u64> = stats
            .stages
            .iter()
            .filter(|s| s.name.starts_with('s') && s.name[1..].parse::<usize>().is_ok())
            .map(|s| s.failures)
            .collect();
        let wanted: Vec<u64> = plan
            .stages
            .iter()
            .zip(&expected_failures)
            .filter(|(s, _)| !matches!(s.shape, Shape::Batch(_)))
            .map(|(_, f)| *f)
            .collect();
        if failures != wanted {
            return Err(format!(
                "failures per stage {failures:?}, predicted {wanted:?}"
            ));
        }
    }
    Ok(())
}

/// Thread counts are per process and libtest runs each test on a thread of its own, so the
/// two soaks run one after the other in one test.
#[test]
fn soak() {
    breaking_out_of_an_input_order_pipeline_drops_promptly();
    random_pipelines_deliver_exactly_and_leave_nothing_behind();
}

fn random_pipelines_deliver_exactly_and_leave_nothing_behind() {
    // Planned panics are expected by the hundreds; keep the output readable.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|s| s == PANIC_TAG);
        if !planned {
            default_hook(info);
        }
    }));
    let runs = env_u64("SOAK_RUNS", 300);
    let seed = env_u64("SOAK_SEED", 0x50A4);
    let mut baseline = settled_thread_count();
    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..runs {
        let plan = random_plan(&mut rng);
        if let Err(why) = run(&plan, baseline) {
            eprintln!("run {i} (seed {seed}): {why}\n  plan: {plan:?}");
            // A thread left behind stays; count the next runs from here.
            baseline = settled_thread_count();
            failures.push(i);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    eprintln!(
        "soak: {runs} runs in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed runs: {failures:?}");
}

/// The user's report, as written in the issue: a loop that breaks out of an input-order
/// pipeline early and drops it; every drop is prompt and no thread outlives the loop.
fn breaking_out_of_an_input_order_pipeline_drops_promptly() {
    let baseline = settled_thread_count();
    let mut slow = 0;
    for it in 0..200u64 {
        let mut p = PipelineBuilder::new()
            .source(0..2000u64)
            .pipe(|x| x)
            .concurrency(3)
            .order(Order::Input)
            .aggregate(8)
            .disaggregate()
            .sink()
            .buffer(4)
            .num_threads(2)
            .queue_capacity(8)
            .stop_timeout(STOP_TIMEOUT)
            .build()
            .unwrap();
        for (i, r) in p.by_ref().enumerate() {
            assert_eq!(r.unwrap(), i as u64, "input order");
            if i as u64 >= 100 + (it * 37) % 500 {
                break;
            }
        }
        let t0 = Instant::now();
        drop(p);
        if t0.elapsed() > PROMPT {
            slow += 1;
        }
    }
    assert_eq!(slow, 0, "slow drops");
    assert!(
        wait_until(Duration::from_secs(3), || thread_count() <= baseline),
        "{} threads left behind",
        thread_count() - baseline
    );
}
