//! The randomised soak of `tests/soak.rs`, over worker processes: process stages whose
//! workers crash and panic on planned items, mixed with thread stages, aggregate and
//! disaggregate, in random orders and concurrencies, with random early drops and stops; and
//! `iterate_in_subprocess` / `run_pipeline_in_subprocess` dropped at random points.
//!
//! Each run checks the items against a plain loop (in input order, the delivered sequence is
//! the prediction or its prefix), that drop and stop return promptly, and that no child
//! process and no thread survives. `SOAK_RUNS` scales the run count (default: 40 process-stage
//! runs and 40 subprocess runs) and `SOAK_SEED` changes the plans.

use std::time::{Duration, Instant};

use pipeline_runtime::error::BuildError;
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::subprocess::{iterate_in_subprocess, run_pipeline_in_subprocess};
use pipeline_runtime::subprocess::{SubprocessError, SubprocessOptions};
use pipeline_runtime::{process_fn, subprocess_fn, Order, Pipeline, PipelineBuilder};

use pipeline_tests::{env_u64, settled_thread_count, thread_count, SplitMix as Rng};

use crate::{child_pids, wait_until};

pub(crate) const TESTS: &[crate::Test] = crate::tests![
    "soak":
    process_stages_with_crashing_workers,
    subprocesses_dropped_at_random_points,
];

const PROMPT: Duration = Duration::from_millis(2000);

/// Items that make a worker die (abort) or panic.
fn crashes(x: u64) -> bool {
    x % 29 == 5
}
fn panics(x: u64) -> bool {
    x % 13 == 4
}

/// The process stage: dies or panics on planned items, doubles the others.
fn soak_work(x: u64) -> u64 {
    if crashes(x) {
        std::process::abort();
    }
    if panics(x) {
        panic!("soak: planned panic on {x}");
    }
    x * 2
}

fn soak_numbers(n: u64) -> Result<Pipeline<u64>, BuildError> {
    PipelineBuilder::new()
        .source(0..n)
        .pipe(|x| x + 1)
        .concurrency(3)
        .order(Order::Input)
        .aggregate(5)
        .disaggregate()
        .sink()
        .buffer(4)
        .build()
}

fn soak_endless(_: ()) -> impl Iterator<Item = u64> {
    0u64..
}

process_fn!(soak_work);
subprocess_fn!(pipeline soak_numbers, iter soak_endless);

fn seed() -> u64 {
    env_u64("SOAK_SEED", 0x50A4)
}

fn no_child_and_threads_back(baseline: usize) -> Result<(), String> {
    if !wait_until(Duration::from_secs(3), || child_pids().is_empty()) {
        return Err(format!("children left: {:?}", child_pids()));
    }
    if !wait_until(Duration::from_secs(3), || thread_count() <= baseline) {
        return Err(format!(
            "{} threads left behind",
            thread_count() as isize - baseline as isize
        ));
    }
    Ok(())
}

fn process_stages_with_crashing_workers() {
    let runs = env_u64("SOAK_RUNS", 40);
    let mut rng = Rng(seed());
    let mut baseline = settled_thread_count();
    let mut failed = Vec::new();
    for run in 0..runs {
        let items = rng.pick(&[0u64, 7, 40, 120]);
        let thread_conc = rng.pick(&[1usize, 2, 4]);
        let process_conc = rng.pick(&[1usize, 2, 3]);
        let order = rng.pick(&[Order::Input, Order::Completion]);
        let workers = rng.pick(&[1usize, 2]);
        let batch = rng.pick(&[0usize, 1, 4]);
        let take = rng.pick(&[usize::MAX, usize::MAX, 0, 3, 25]);
        let stop_first = rng.pick(&[false, true]);
        let plan = format!(
            "items {items}, thread stage c={thread_conc}, process stage c={process_conc} on \
             {workers} workers, {order:?}, batch {batch}, take {take}, stop {stop_first}"
        );
        let outcome = (|| -> Result<(), String> {
            let expected: Vec<u64> = (0..items)
                .map(|x| x + 3)
                .filter(|&x| !crashes(x) && !panics(x))
                .map(|x| x * 2)
                .collect();
            let expected_failures = (0..items)
                .map(|x| x + 3)
                .filter(|&x| crashes(x) || panics(x))
                .count() as u64;
            let pool = ProcessPool::builder()
                .num_workers(workers)
                .name("soak-worker")
                .build()
                .map_err(|e| e.to_string())?;
            let mut b = PipelineBuilder::new()
                .source(0..items)
                .pipe(|x| x + 3)
                .concurrency(thread_conc)
                .order(order)
                .process_pipe(soak_work)
                .concurrency(process_conc)
                .order(order)
                .executor(&pool);
            if batch > 0 {
                b = b.aggregate(batch).disaggregate();
            }
            let mut p = b
                .sink()
                .buffer(2)
                .num_threads(2)
                .queue_capacity(4)
                .stop_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            while got.len() < take {
                match p.next() {
                    Some(Ok(x)) => got.push(x),
                    Some(Err(e)) => return Err(format!("pipeline failed: {e}")),
                    None => break,
                }
            }
            let read_all = got.len() < take;
            if stop_first {
                let t0 = Instant::now();
                p.stop().map_err(|e| format!("stop: {e}"))?;
                if t0.elapsed() > PROMPT {
                    return Err(format!("stop took {:?}", t0.elapsed()));
                }
                for r in p.by_ref() {
                    got.push(r.map_err(|e| e.to_string())?);
                }
            }
            let stats = p.stats();
            let t0 = Instant::now();
            drop(p);
            drop(pool);
            if t0.elapsed() > PROMPT {
                return Err(format!("drop took {:?}", t0.elapsed()));
            }
            no_child_and_threads_back(baseline)?;
            let in_order = order == Order::Input || (thread_conc == 1 && process_conc == 1);
            if in_order {
                if got[..] != expected[..got.len().min(expected.len())] {
                    return Err(format!("not the plain loop's prefix: {got:?}"));
                }
            } else {
                let mut sorted_got = got.clone();
                sorted_got.sort_unstable();
                let mut sorted_want = expected.clone();
                sorted_want.sort_unstable();
                if read_all && !stop_first && sorted_got != sorted_want {
                    return Err(format!(
                        "delivered {sorted_got:?}, predicted {sorted_want:?}"
                    ));
                }
                if sorted_got
                    .iter()
                    .any(|v| sorted_want.binary_search(v).is_err())
                {
                    return Err(format!("unpredicted items in {got:?}"));
                }
            }
            if read_all && !stop_first {
                if got.len() != expected.len() {
                    return Err(format!(
                        "{} delivered, {} predicted",
                        got.len(),
                        expected.len()
                    ));
                }
                let failures = stats
                    .stages
                    .iter()
                    .find(|s| s.name == "soak_work")
                    .map(|s| s.failures);
                if failures != Some(expected_failures) {
                    return Err(format!(
                        "process stage failures {failures:?}, predicted {expected_failures}"
                    ));
                }
            }
            Ok(())
        })();
        if let Err(why) = outcome {
            eprintln!("process soak run {run}: {why}\n  plan: {plan}");
            failed.push(run);
            baseline = settled_thread_count();
        }
    }
    assert!(failed.is_empty(), "failed runs: {failed:?}");
}

fn subprocesses_dropped_at_random_points() {
    let runs = env_u64("SOAK_RUNS", 40);
    let mut rng = Rng(seed() ^ 0xD00D);
    let mut baseline = settled_thread_count();
    let mut failed = Vec::new();
    for run in 0..runs {
        let pipeline = rng.pick(&[true, false]);
        let n = rng.pick(&[0u64, 1, 30, 500]);
        let take = rng.pick(&[0usize, 1, 10, 200, usize::MAX]);
        let again = rng.pick(&[0usize, 0, 5]);
        let plan = format!("pipeline {pipeline}, n {n}, take {take}, again {again}");
        let outcome = (|| -> Result<(), String> {
            let opts = SubprocessOptions::new().timeout(Duration::from_secs(20));
            let mut got = Vec::new();
            let t0;
            if pipeline {
                let mut sub =
                    run_pipeline_in_subprocess(soak_numbers, n, opts).map_err(|e| e.to_string())?;
                for r in sub.iter().take(take) {
                    got.push(r.map_err(|e: SubprocessError| e.to_string())?);
                }
                for r in sub.iter().take(again) {
                    got.push(r.map_err(|e| e.to_string())?);
                }
                t0 = Instant::now();
                drop(sub);
                let want: Vec<u64> = (0..n).map(|x| x + 1).collect();
                if got[..] != want[..got.len().min(want.len())] || got.len() > want.len() {
                    return Err(format!("not in order: {got:?}"));
                }
            } else {
                let mut sub =
                    iterate_in_subprocess(soak_endless, (), opts).map_err(|e| e.to_string())?;
                let take = take.min(1000);
                for r in sub.iter().take(take) {
                    got.push(r.map_err(|e| e.to_string())?);
                }
                for r in sub.iter().take(again) {
                    got.push(r.map_err(|e| e.to_string())?);
                }
                t0 = Instant::now();
                drop(sub);
                let want: Vec<u64> = (0..got.len() as u64).collect();
                if got != want {
                    return Err(format!("lost or repeated items: {got:?}"));
                }
            }
            if t0.elapsed() > PROMPT {
                return Err(format!("drop took {:?}", t0.elapsed()));
            }
            no_child_and_threads_back(baseline)
        })();
        if let Err(why) = outcome {
            eprintln!("subprocess soak run {run}: {why}\n  plan: {plan}");
            failed.push(run);
            baseline = settled_thread_count();
        }
    }
    assert!(failed.is_empty(), "failed runs: {failed:?}");
}
