//! Start, stop, timeouts, resuming, and SPDL's cancel-while-blocked case.

use std::time::{Duration, Instant};

use pipeline_runtime::error::GetError;
use pipeline_runtime::PipelineBuilder;
use pipeline_tests::CountingSource;

#[test]
fn starting_twice_is_an_error() {
    let mut p = PipelineBuilder::new()
        .source(0..3)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    p.start().unwrap();
    assert!(p
        .start()
        .unwrap_err()
        .to_string()
        .contains("already started"));
}

#[test]
fn reading_starts_the_pipeline() {
    let mut p = PipelineBuilder::new()
        .source(0..3)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    assert_eq!(p.next().unwrap().unwrap(), 0);
}

#[test]
fn stop_is_idempotent_and_buffered_items_stay_readable() {
    // SPDL's TestPipelineCancel: sink 1, read 5, stop, one more item readable, then the end.
    let mut p = PipelineBuilder::new()
        .source(CountingSource::new())
        .pipe(|x| x)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    for i in 0..5 {
        assert_eq!(p.next().unwrap().unwrap(), i);
    }
    pipeline_tests::wait_until(Duration::from_secs(2), || p.stats().stages[1].outputs >= 6);
    p.stop().unwrap();
    p.stop().unwrap();
    assert_eq!(p.next().unwrap().unwrap(), 5);
    assert!(p.next().is_none());
}

#[test]
fn get_timeout_times_out_then_succeeds() {
    let mut p = PipelineBuilder::new()
        .source(0..2u32)
        .pipe(|x| {
            std::thread::sleep(Duration::from_millis(300));
            x
        })
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    assert!(matches!(
        p.get_timeout(Duration::from_millis(20)),
        Err(GetError::Timeout)
    ));
    assert_eq!(p.get_timeout(Duration::from_secs(5)).unwrap(), 0);
    assert_eq!(p.next().unwrap().unwrap(), 1); // blocking, without a limit
    assert!(matches!(
        p.get_timeout(Duration::from_secs(5)),
        Err(GetError::Finished)
    ));
}

#[test]
fn breaking_out_and_iterating_again_loses_nothing() {
    let mut p = PipelineBuilder::new()
        .source(0..10)
        .pipe(|x| x)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let first: Vec<i32> = p.by_ref().take(4).map(Result::unwrap).collect();
    let rest: Vec<i32> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(first, vec![0, 1, 2, 3]);
    assert_eq!(rest, (4..10).collect::<Vec<_>>());
}

#[test]
fn stop_while_stages_are_blocked_returns_promptly() {
    let mut p = PipelineBuilder::new()
        .source(CountingSource::new())
        .pipe(|x| x)
        .concurrency(4)
        .async_pipe(|x| async move { x })
        .concurrency(4)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    p.stop().unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn an_empty_source_ends_at_once() {
    let mut p = PipelineBuilder::new()
        .source(std::iter::empty::<u8>())
        .pipe(|x| x)
        .concurrency(3)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    assert!(p.next().is_none());
    assert!(p.stop().is_ok());
}

#[test]
fn a_slow_source_does_not_stall_other_stages() {
    // The source blocks in `next()`; items already pulled still flow to the consumer.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let mut p = PipelineBuilder::new()
        .source(rx)
        .pipe(|x| x * 2)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    tx.send(1).unwrap();
    assert_eq!(p.get_timeout(Duration::from_secs(5)).unwrap(), 2);
    tx.send(2).unwrap();
    assert_eq!(p.get_timeout(Duration::from_secs(5)).unwrap(), 4);
    drop(tx);
    assert!(p.next().is_none());
}

#[test]
fn stopping_before_starting_leaves_a_finished_pipeline() {
    let mut p = PipelineBuilder::new()
        .source(0..3)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    p.stop().unwrap();
    assert!(p.next().is_none());
    assert!(p.start().is_err());
    assert!(p.stats().stages.is_empty(), "no stage ran");
}
