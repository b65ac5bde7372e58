//! Concurrency caps items in flight; the executor caps parallelism.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::executor::{Executor, ThreadPool};
use pipeline_runtime::PipelineBuilder;
use pipeline_tests::{collect_ok, InFlight};

fn run_sync(concurrency: usize, threads: usize) -> usize {
    let tracker = InFlight::new();
    let t = tracker.clone();
    let p = PipelineBuilder::new()
        .source(0..(concurrency * 6) as u32)
        .pipe(move |x| {
            t.track(|| std::thread::sleep(Duration::from_millis(30)));
            x
        })
        .concurrency(concurrency)
        .sink()
        .buffer(64)
        .num_threads(threads)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p).len(), concurrency * 6);
    tracker.max()
}

#[test]
fn concurrency_is_reached_when_threads_allow() {
    assert_eq!(run_sync(4, 4), 4);
}

#[test]
fn the_pool_caps_parallelism() {
    // SPDL: concurrency 6 on 3 threads gave 3 in parallel.
    assert_eq!(run_sync(6, 3), 3);
}

#[test]
fn concurrency_caps_calls_when_threads_are_plenty() {
    // SPDL: concurrency 3 on 8 threads gave 3.
    assert_eq!(run_sync(3, 8), 3);
}

#[test]
fn async_stage_reaches_its_concurrency() {
    let tracker = InFlight::new();
    let t = tracker.clone();
    let p = PipelineBuilder::new()
        .source(0..64u32)
        .async_pipe(move |x| {
            let t = t.clone();
            async move {
                t.enter();
                tokio::time::sleep(Duration::from_millis(20)).await;
                t.exit();
                x
            }
        })
        .concurrency(16)
        .sink()
        .buffer(64)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p).len(), 64);
    assert_eq!(tracker.max(), 16);
}

thread_local! {
    static STATE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

#[test]
fn dedicated_thread_runs_every_call_on_one_thread_with_its_state() {
    let pool = ThreadPool::builder()
        .num_threads(1)
        .name("gpu")
        .on_thread_start(|index| STATE.with(|s| s.set(Some(100 + index))))
        .build()
        .unwrap();
    let p = PipelineBuilder::new()
        .source(0..50u32)
        .pipe(|x| {
            let name = std::thread::current().name().map(str::to_owned);
            (
                x,
                std::thread::current().id(),
                name,
                STATE.with(|s| s.get()),
            )
        })
        .concurrency(4)
        .executor(&pool)
        .sink()
        .buffer(8)
        .num_threads(2)
        .build()
        .unwrap();
    let out = collect_ok(p);
    assert_eq!(out.len(), 50);
    let ids: HashSet<_> = out.iter().map(|o| o.1).collect();
    assert_eq!(ids.len(), 1, "calls ran on several threads");
    assert!(out.iter().all(|o| o.2.as_deref() == Some("gpu-0")));
    assert!(out.iter().all(|o| o.3 == Some(100)));
}

#[test]
fn one_pool_serves_several_stages_and_pipelines() {
    let pool = ThreadPool::builder()
        .num_threads(2)
        .name("shared")
        .build()
        .unwrap();
    let names = Arc::new(Mutex::new(HashSet::new()));
    let record = |names: Arc<Mutex<HashSet<String>>>| {
        move |x: u32| {
            names
                .lock()
                .unwrap()
                .insert(std::thread::current().name().unwrap_or("").to_owned());
            x + 1
        }
    };
    let build = || {
        PipelineBuilder::new()
            .source(0..100u32)
            .pipe(record(names.clone()))
            .concurrency(2)
            .executor(&pool)
            .pipe(record(names.clone()))
            .concurrency(2)
            .executor(&pool)
            .sink()
            .buffer(4)
            .num_threads(1)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let ha = std::thread::spawn(move || collect_ok(a));
    let hb = std::thread::spawn(move || collect_ok(b));
    let (a, b) = (ha.join().unwrap(), hb.join().unwrap());
    assert_eq!(a.iter().sum::<u32>(), (2..102).sum::<u32>());
    assert_eq!(b.iter().sum::<u32>(), (2..102).sum::<u32>());
    let names = names.lock().unwrap();
    assert!(names.iter().all(|n| n.starts_with("shared-")), "{names:?}");
}

#[test]
fn small_pool_runs_a_long_chain_without_deadlock() {
    // Lanes waiting on queues give their thread back, so one thread serves ten stages.
    let mut b = PipelineBuilder::new().source(0..1000u32);
    for _ in 0..10 {
        b = b.pipe(|x| x + 1).concurrency(3);
    }
    let p = b
        .sink()
        .buffer(2)
        .num_threads(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let out = collect_ok(p);
    assert_eq!(
        out.iter().map(|&x| u64::from(x)).sum::<u64>(),
        (10..1010u64).sum::<u64>()
    );
}

#[test]
fn rayon_pool_runs_the_stage_and_allows_nested_rayon() {
    let pool = Arc::new(
        pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let p = PipelineBuilder::new()
        .source(0..20u64)
        .pipe(|x| {
            use pipeline_runtime::executor::rayon::prelude::*;
            let inside = pipeline_runtime::executor::rayon::current_thread_index().is_some();
            let s: u64 = (0..1000u64).into_par_iter().map(|i| i * x).sum();
            (inside, s)
        })
        .concurrency(2)
        .executor(Executor::Rayon(pool))
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    let out = collect_ok(p);
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|(inside, _)| *inside));
    let total: u64 = out.iter().map(|o| o.1).sum();
    assert_eq!(total, (0..20u64).map(|x| 499_500 * x).sum::<u64>());
}
