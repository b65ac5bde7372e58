//! With no consumer, an endless source is pulled only as far as the queues and lanes hold:
//! `1 + Q0 + Σ (c_i + Q_i)` (docs/src/backpressure.md), checked for several configurations
//! as SPDL's spec §3.3 does.

use std::time::Duration;

use pipeline_runtime::PipelineBuilder;
use pipeline_tests::CountingSource;

fn settle(src: &CountingSource) -> usize {
    src.settle(Duration::from_millis(300), Duration::from_secs(10))
}

/// A chain of identity stages with the given concurrencies; returns the items pulled.
fn pulled(concurrencies: &[usize], queue_capacity: usize, sink: usize) -> usize {
    let src = CountingSource::new();
    let mut b = PipelineBuilder::new().source(src.clone());
    for &c in concurrencies {
        b = b.pipe(|x| x).concurrency(c);
    }
    let mut p = b
        .sink()
        .buffer(sink)
        .queue_capacity(queue_capacity)
        .num_threads(4)
        .build()
        .unwrap();
    p.start().unwrap();
    let n = settle(&src);
    // The bound holds, it does not creep up.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(src.pulled(), n);
    drop(p);
    n
}

fn formula(concurrencies: &[usize], q: usize, sink: usize) -> usize {
    let mut caps = vec![q; concurrencies.len()];
    caps.push(sink);
    // caps[0] is the queue in front of the first stage (or the sink when there is none).
    1 + caps[0]
        + concurrencies
            .iter()
            .zip(&caps[1..])
            .map(|(c, q)| c + q)
            .sum::<usize>()
}

#[test]
fn no_stage() {
    assert_eq!(pulled(&[], 2, 3), formula(&[], 2, 3));
    assert_eq!(formula(&[], 2, 3), 4);
}

#[test]
fn one_stage_concurrency_one() {
    assert_eq!(pulled(&[1], 2, 3), formula(&[1], 2, 3));
}

#[test]
fn one_stage_concurrency_four() {
    assert_eq!(pulled(&[4], 2, 3), 10);
}

#[test]
fn two_stages() {
    assert_eq!(pulled(&[1, 1], 2, 3), formula(&[1, 1], 2, 3));
}

#[test]
fn wide_stage_small_sink() {
    assert_eq!(pulled(&[8], 2, 1), formula(&[8], 2, 1));
}

#[test]
fn default_queue_capacity_and_large_sink() {
    let q = pipeline_runtime::SinkBuilder::DEFAULT_QUEUE_CAPACITY;
    assert_eq!(pulled(&[1, 3], q, 10), formula(&[1, 3], q, 10));
}

#[test]
fn per_stage_buffer_overrides_the_queue_capacity() {
    let src = CountingSource::new();
    let mut p = PipelineBuilder::new()
        .source(src.clone())
        .pipe(|x| x)
        .buffer(5)
        .pipe(|x| x)
        .concurrency(2)
        .buffer(1)
        .sink()
        .buffer(2)
        .queue_capacity(50)
        .build()
        .unwrap();
    p.start().unwrap();
    // 1 (source) + 5 (in front of stage 1) + 1 (stage 1) + 1 (in front of stage 2)
    // + 2 (stage 2) + 2 (sink)
    assert_eq!(settle(&src), 12);
}

#[test]
fn aggregate_holds_one_batch_and_its_queue() {
    let src = CountingSource::new();
    let mut p = PipelineBuilder::new()
        .source(src.clone())
        .aggregate(4)
        .sink()
        .buffer(2)
        .queue_capacity(3)
        .build()
        .unwrap();
    p.start().unwrap();
    // 1 + 3 (in front of aggregate) + 4 (batch held while blocked) + 2 × 4 (sink batches)
    assert_eq!(settle(&src), 16);
}

#[test]
fn reading_releases_backpressure_one_item_at_a_time() {
    let src = CountingSource::new();
    let mut p = PipelineBuilder::new()
        .source(src.clone())
        .pipe(|x| x)
        .sink()
        .buffer(2)
        .queue_capacity(2)
        .build()
        .unwrap();
    p.start().unwrap();
    let before = settle(&src);
    for _ in 0..5 {
        p.next().unwrap().unwrap();
    }
    assert_eq!(settle(&src), before + 5);
}

/// An async stage of `concurrency` lanes with no consumer; returns the items pulled.
fn pulled_async(concurrency: usize, queue_capacity: Option<usize>, sink: usize) -> usize {
    let src = CountingSource::new();
    let b = PipelineBuilder::new()
        .source(src.clone())
        .async_pipe(|x| async move { x })
        .concurrency(concurrency)
        .sink()
        .buffer(sink);
    let b = match queue_capacity {
        Some(q) => b.queue_capacity(q),
        None => b,
    };
    let mut p = b.build().unwrap();
    p.start().unwrap();
    let n = settle(&src);
    drop(p);
    n
}

#[test]
fn an_async_stage_input_holds_one_item_per_lane_unless_queue_capacity_is_set() {
    let q = pipeline_runtime::SinkBuilder::DEFAULT_QUEUE_CAPACITY;
    let c = q + 36;
    // By default the input queue holds `max(64, c)` items: one per lane.
    assert_eq!(pulled_async(c, None, 3), 1 + c + c + 3);
    // Below the default, the default stays.
    assert_eq!(pulled_async(4, None, 3), 1 + q + 4 + 3);
    // A chosen capacity is kept, even below the lanes.
    assert_eq!(pulled_async(c, Some(2), 3), 1 + 2 + c + 3);
}
