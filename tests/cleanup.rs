//! SPDL's pipeline_cleanup_test: dropping a pipeline mid-stream ends every thread it started.
//!
//! Thread counts are per process, so these cases run one after another in one test.

use std::time::{Duration, Instant};

use pipeline_runtime::executor::ThreadPool;
use pipeline_runtime::PipelineBuilder;
use pipeline_tests::{thread_count, wait_until, CountingSource};

fn settles_back_to(before: usize, timeout: Duration) -> bool {
    wait_until(timeout, || thread_count() == before)
}

#[test]
fn no_thread_is_left_behind() {
    let before = thread_count();

    // 1. Consumer stops after k items; stages are blocked on full queues; sync and async.
    for k in [0usize, 1, 7] {
        let mut p = PipelineBuilder::new()
            .source(CountingSource::new())
            .pipe(|x| x + 1)
            .concurrency(4)
            .async_pipe(|x| async move { x })
            .concurrency(8)
            .aggregate(3)
            .sink()
            .buffer(2)
            .num_threads(4)
            .build()
            .unwrap();
        p.start().unwrap();
        for _ in 0..k {
            p.next().unwrap().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(thread_count() > before, "the pipeline runs threads");
        let t0 = Instant::now();
        drop(p);
        assert!(
            t0.elapsed() < Duration::from_millis(800),
            "drop took {:?}",
            t0.elapsed()
        );
        assert_eq!(
            thread_count(),
            before,
            "threads left after dropping at k={k}"
        );
    }

    // 2. Async stage mid-await on a long timer.
    let mut p = PipelineBuilder::new()
        .source(0..100u32)
        .async_pipe(|x| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            x
        })
        .concurrency(4)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    drop(p);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "drop took {:?}",
        t0.elapsed()
    );
    assert_eq!(thread_count(), before, "async runtime thread left behind");

    // 3. A synchronous stage stuck in a long call: drop returns after the stop timeout,
    //    and the thread ends by itself once the call returns.
    let mut p = PipelineBuilder::new()
        .source(0..100u32)
        .pipe(|x| {
            std::thread::sleep(Duration::from_millis(1500));
            x
        })
        .sink()
        .buffer(1)
        .num_threads(1)
        .stop_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    drop(p);
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "drop took {:?}",
        t0.elapsed()
    );
    assert!(
        settles_back_to(before, Duration::from_secs(5)),
        "the busy thread did not exit after its call returned"
    );

    // 4. A pipeline built but never started starts no thread.
    let p = PipelineBuilder::new()
        .source(0..10)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    assert_eq!(thread_count(), before);
    drop(p);

    // 5. A pipeline read to the end and dropped.
    let p = PipelineBuilder::new()
        .source(0..1000u32)
        .pipe(|x| x)
        .concurrency(3)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    assert_eq!(p.count(), 1000);
    assert_eq!(thread_count(), before);

    // 6. A user pool outlives the pipeline; its threads end when the pool is dropped.
    let pool = ThreadPool::builder()
        .num_threads(2)
        .name("mine")
        .build()
        .unwrap();
    let p = PipelineBuilder::new()
        .source(CountingSource::new())
        .pipe(|x| x)
        .executor(&pool)
        .concurrency(2)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    let mut p = p;
    p.next().unwrap().unwrap();
    drop(p);
    assert_eq!(thread_count(), before + 2, "the user's pool stays");
    assert!(pool.shutdown(Duration::from_secs(1)));
    drop(pool);
    assert_eq!(thread_count(), before);
}
