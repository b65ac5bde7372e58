//! Every option of a `pipe` stage: concurrency, name, order (both keywords and an
//! expression), max_failures (count, rate, expression), executor (thread pool, reference to
//! one, rayon pool) and buffer.

use std::sync::Arc;

use pipeline_runtime::{pipeline, MaxFailures, Order, executor::ThreadPool};

fn slow_identity(x: u32) -> u32 {
    std::thread::sleep(std::time::Duration::from_micros(u64::from(50 - x % 50)));
    x
}

fn main() {
    let pool = ThreadPool::builder().num_threads(2).build().unwrap();
    let rayon = Arc::new(pipeline_runtime::executor::rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let order = Order::Completion;
    let budget = MaxFailures::Count(100);
    let mut pipeline = pipeline! {
        source(0..200u32)
        -> pipe(slow_identity, concurrency = 8, order = input, name = "ordered", buffer = 4)
        -> pipe(|x: u32| x, order = completion, executor = pool.clone())
        -> pipe(|x: u32| x, order = order, executor = &pool)
        -> pipe(|x: u32| x, executor = rayon, concurrency = 2)
        -> pipe(try |x: u32| if x == 7 { Err("seven") } else { Ok(x) }, max_failures = 1)
        -> pipe(try |x: u32| if x == 8 { Err("eight") } else { Ok(x) }, max_failures = 0.5)
        -> pipe(try |x: u32| if x == 9 { Err("nine") } else { Ok(x) }, max_failures = budget)
        -> sink()
    }
    .unwrap();
    let out: Vec<u32> = pipeline.by_ref().map(Result::unwrap).collect();
    assert_eq!(out.len(), 197);
    let stats = pipeline.stats();
    assert!(stats.stages.iter().any(|s| s.name == "ordered"));
    assert!(stats.stages.iter().any(|s| s.name == "slow_identity") == false);

    // Input order survives a concurrent stage.
    let ordered = pipeline! {
        source(0..100u32) -> pipe(slow_identity, concurrency = 8, order = input) -> sink()
    }
    .unwrap();
    let out: Vec<u32> = ordered.map(Result::unwrap).collect();
    assert_eq!(out, (0..100).collect::<Vec<_>>());

    // A stage's own budget ends the pipeline when exceeded.
    let failing = pipeline! {
        source(0..10u32)
        -> pipe(try |_x: u32| Err::<u32, _>("always"), max_failures = 2, name = "always")
        -> sink()
    }
    .unwrap();
    let results: Vec<_> = failing.collect();
    let error = results.last().unwrap().as_ref().unwrap_err();
    assert!(error.to_string().contains("always"), "{error}");
}
