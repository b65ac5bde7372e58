//! Output order: completion (default) and input.

use std::time::Duration;

use pipeline_runtime::{Order, PipelineBuilder};
use pipeline_tests::collect_ok;

/// Item 0 is the slowest by far, so in completion order it cannot come first.
fn slow_first(x: u32) -> u32 {
    if x == 0 {
        std::thread::sleep(Duration::from_millis(200));
    } else {
        std::thread::sleep(Duration::from_millis(x as u64 % 3));
    }
    x
}

#[test]
fn completion_order_passes_fast_items_first() {
    let p = PipelineBuilder::new()
        .source(0..12u32)
        .pipe(slow_first)
        .concurrency(4)
        .sink()
        .buffer(16)
        .num_threads(4)
        .build()
        .unwrap();
    let out = collect_ok(p);
    assert_ne!(out[0], 0, "the slow item came first: {out:?}");
    let mut sorted = out.clone();
    sorted.sort();
    assert_eq!(sorted, (0..12).collect::<Vec<_>>());
}

#[test]
fn input_order_keeps_source_order() {
    let p = PipelineBuilder::new()
        .source(0..40u32)
        .pipe(slow_first)
        .concurrency(4)
        .order(Order::Input)
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), (0..40).collect::<Vec<_>>());
}

#[test]
fn input_order_skips_dropped_and_failed_items_without_gaps() {
    let p = PipelineBuilder::new()
        .source(0..60u32)
        .opt_pipe(|x| {
            std::thread::sleep(Duration::from_millis(u64::from((60 - x) % 4)));
            (x % 3 != 0).then_some(x)
        })
        .concurrency(5)
        .order(Order::Input)
        .try_pipe(|x| if x % 5 == 0 { Err("five") } else { Ok(x) })
        .concurrency(3)
        .order(Order::Input)
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .unwrap();
    let expected: Vec<u32> = (0..60).filter(|x| x % 3 != 0 && x % 5 != 0).collect();
    assert_eq!(collect_ok(p), expected);
}

#[test]
fn input_order_for_async_stages() {
    let p = PipelineBuilder::new()
        .source(0..50u64)
        .async_pipe(|x| async move {
            tokio::time::sleep(Duration::from_millis((50 - x) % 7)).await;
            x
        })
        .concurrency(8)
        .order(Order::Input)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), (0..50).collect::<Vec<_>>());
}

#[test]
fn concurrency_one_keeps_order_in_completion_mode() {
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .pipe(|x| x)
        .pipe(|x| x)
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), (0..100).collect::<Vec<_>>());
}
