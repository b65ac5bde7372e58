//! Executors beyond what `concurrency.rs` covers: k calls truly at once on each kind of
//! pool, thread-local state kept across calls, panics and errors on dedicated and rayon
//! pools, and a rayon pool shared with the user's own rayon work.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pipeline_runtime::error::StageFailureKind;
use pipeline_runtime::executor::rayon::prelude::*;
use pipeline_runtime::executor::{Executor, ThreadPool};
use pipeline_runtime::{pipeline, MaxFailures, PipelineBuilder};
use pipeline_tests::collect_ok;

/// Lets calls wait for each other: `arrive` returns true once `k` calls are inside at the
/// same time, false if that did not happen within the timeout (a test fails, never hangs).
#[derive(Clone)]
struct Rendezvous {
    k: usize,
    state: Arc<(Mutex<usize>, Condvar)>,
}

impl Rendezvous {
    fn new(k: usize) -> Self {
        Self {
            k,
            state: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    fn arrive(&self) -> bool {
        let (count, cv) = &*self.state;
        let mut n = count.lock().unwrap();
        *n += 1;
        cv.notify_all();
        let (n, timeout) = cv
            .wait_timeout_while(n, Duration::from_secs(20), |n| *n < self.k)
            .unwrap();
        drop(n);
        !timeout.timed_out()
    }
}

fn k_calls_at_once(executor: Executor, k: usize) -> Vec<bool> {
    let rdv = Rendezvous::new(k);
    let p = PipelineBuilder::new()
        .source(0..k as u32)
        .pipe(move |_| rdv.arrive())
        .concurrency(k)
        .executor(executor)
        .sink()
        .buffer(k)
        .num_threads(1)
        .build()
        .unwrap();
    collect_ok(p)
}

#[test]
fn a_dedicated_pool_of_k_threads_runs_k_calls_at_once() {
    let pool = ThreadPool::builder().num_threads(3).build().unwrap();
    // The pipeline's own pool has one thread: only the dedicated pool can give three.
    assert_eq!(k_calls_at_once(Executor::Threads(pool), 3), vec![true; 3]);
}

#[test]
fn a_rayon_pool_of_k_threads_runs_k_calls_at_once() {
    let pool = Arc::new(
        pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    assert_eq!(k_calls_at_once(Executor::Rayon(pool), 3), vec![true; 3]);
}

#[test]
fn the_default_pool_of_k_threads_runs_k_calls_at_once() {
    let rdv = Rendezvous::new(4);
    let p = PipelineBuilder::new()
        .source(0..4u32)
        .pipe(move |_| rdv.arrive())
        .concurrency(4)
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![true; 4]);
}

thread_local! {
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

#[test]
fn thread_local_state_persists_across_calls_on_a_dedicated_thread() {
    let pool = ThreadPool::builder()
        .num_threads(1)
        .name("stream-owner")
        .on_thread_start(|_| CALLS.with(|c| c.set(1000)))
        .build()
        .unwrap();
    let p = PipelineBuilder::new()
        .source(0..40u32)
        .pipe(|_| {
            CALLS.with(|c| {
                c.set(c.get() + 1);
                c.get()
            })
        })
        .concurrency(4)
        .executor(&pool)
        .sink()
        .buffer(4)
        .num_threads(2)
        .build()
        .unwrap();
    let mut seen = collect_ok(p);
    seen.sort_unstable();
    // One counter, initialised once, saw every call: the state never moved thread.
    assert_eq!(seen, (1001..=1040).collect::<Vec<_>>());
}

fn panics_on_seven(x: u32) -> u32 {
    if x == 7 {
        panic!("seven is unlucky");
    }
    x
}

/// Runs a stage that panics on item 7 and fails (returns `Err`) on item 9, with a budget
/// that trips on the second failure; returns the delivered items and the causes.
fn faults_on(executor: Executor) -> (Vec<u32>, Vec<String>, HashSet<String>) {
    let names = Arc::new(Mutex::new(HashSet::new()));
    let n = names.clone();
    let p = PipelineBuilder::new()
        .source(0..10u32)
        .try_pipe(move |x| {
            n.lock()
                .unwrap()
                .insert(format!("{:?}", std::thread::current().id()));
            let x = panics_on_seven(x);
            if x == 9 {
                Err("nine failed".to_owned())
            } else {
                Ok(x)
            }
        })
        .executor(executor)
        .name("faulty")
        .sink()
        .buffer(16)
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let mut items = Vec::new();
    let mut causes = Vec::new();
    for r in p {
        match r {
            Ok(x) => items.push(x),
            Err(e) => match e.first().kind() {
                StageFailureKind::BudgetExceeded { causes: c, .. } => {
                    causes = c.iter().map(|c| c.to_string()).collect()
                }
                other => panic!("unexpected failure {other:?}"),
            },
        }
    }
    let names = names.lock().unwrap().clone();
    (items, causes, names)
}

#[test]
fn panics_and_errors_on_a_dedicated_thread_fail_only_their_item() {
    let pool = ThreadPool::builder().num_threads(1).build().unwrap();
    let (items, causes, threads) = faults_on(Executor::Threads(pool));
    assert_eq!(items, vec![0, 1, 2, 3, 4, 5, 6, 8]);
    assert_eq!(
        causes,
        vec![
            "stage `faulty` panicked: seven is unlucky".to_owned(),
            "stage `faulty`: nine failed".to_owned()
        ]
    );
    assert_eq!(
        threads.len(),
        1,
        "the thread survived the panic: {threads:?}"
    );
}

#[test]
fn panics_and_errors_on_a_rayon_pool_fail_only_their_item() {
    let pool = Arc::new(
        pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap(),
    );
    let (items, causes, _) = faults_on(Executor::Rayon(pool.clone()));
    assert_eq!(items, vec![0, 1, 2, 3, 4, 5, 6, 8]);
    assert_eq!(causes.len(), 2);
    assert!(causes[0].contains("seven is unlucky"), "{causes:?}");
    // The pool still works for its owner.
    assert_eq!(pool.install(|| (0..10u32).into_par_iter().sum::<u32>()), 45);
}

#[test]
fn a_rayon_pool_is_shared_with_the_users_own_rayon_work() {
    let pool = Arc::new(
        pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let p = pipeline! {
        source(0..200u64)
        -> pipe(|x: u64| (0..100u64).into_par_iter().map(|i| i * x).sum::<u64>(),
                executor = pool.clone(), concurrency = 2)
        -> sink(buffer = 4)
    }
    .unwrap();
    let pipeline_thread = std::thread::spawn(move || collect_ok(p));
    // Meanwhile, the user's own work on the same pool.
    let own: u64 = pool.install(|| (0..100_000u64).into_par_iter().sum());
    let out = pipeline_thread.join().unwrap();
    assert_eq!(own, 4_999_950_000);
    assert_eq!(
        out.iter().sum::<u64>(),
        (0..200u64).map(|x| 4950 * x).sum::<u64>()
    );
}
