//! Continuous mode (SPDL's continuous_pipeline_test): one iterator per epoch, aggregates
//! flush at each boundary, many epochs without rebuilding.

use std::time::Duration;

use pipeline_runtime::{Order, PipelineBuilder};

#[test]
fn each_epoch_yields_the_whole_source() {
    let mut p = PipelineBuilder::new()
        .continuous_source(vec![0, 10, 20])
        .pipe(|x| x + 1)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    for _ in 0..3 {
        let epoch: Vec<i32> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(epoch, vec![1, 11, 21]);
    }
    p.stop().unwrap();
}

#[test]
fn no_batch_spans_two_epochs() {
    let mut p = PipelineBuilder::new()
        .continuous_source(0..7)
        .aggregate(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    for _ in 0..4 {
        let batches: Vec<Vec<i32>> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(batches, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }
}

#[test]
fn drop_last_discards_each_epochs_partial_batch() {
    let mut p = PipelineBuilder::new()
        .continuous_source(0..7)
        .aggregate(3)
        .drop_last(true)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    for _ in 0..3 {
        let batches: Vec<Vec<i32>> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(batches, vec![vec![0, 1, 2], vec![3, 4, 5]]);
    }
}

#[test]
fn a_concurrent_stage_keeps_items_within_their_epoch() {
    // Items take different times; the boundary must wait for every item of its epoch.
    let mut p = PipelineBuilder::new()
        .continuous_source(0..24u64)
        .pipe(|x| {
            std::thread::sleep(Duration::from_millis((24 - x) % 5));
            x
        })
        .concurrency(6)
        .async_pipe(|x| async move {
            tokio::time::sleep(Duration::from_millis(x % 3)).await;
            x
        })
        .concurrency(4)
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .unwrap();
    for _ in 0..5 {
        let mut epoch: Vec<u64> = p.epoch().map(Result::unwrap).collect();
        epoch.sort();
        assert_eq!(epoch, (0..24).collect::<Vec<_>>());
    }
}

#[test]
fn input_order_holds_across_epochs() {
    let mut p = PipelineBuilder::new()
        .continuous_source(0..30u64)
        .pipe(|x| {
            std::thread::sleep(Duration::from_millis((30 - x) % 4));
            x
        })
        .concurrency(4)
        .order(Order::Input)
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .unwrap();
    for _ in 0..3 {
        let epoch: Vec<u64> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(epoch, (0..30).collect::<Vec<_>>());
    }
}

#[test]
fn breaking_out_of_an_epoch_resumes_where_it_left_off() {
    let mut p = PipelineBuilder::new()
        .continuous_source(0..10)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let first: Vec<i32> = p.epoch().take(4).map(Result::unwrap).collect();
    assert_eq!(first, vec![0, 1, 2, 3]);
    let rest: Vec<i32> = p.epoch().map(Result::unwrap).collect();
    assert_eq!(rest, (4..10).collect::<Vec<_>>());
    let next: Vec<i32> = p.epoch().map(Result::unwrap).collect();
    assert_eq!(next, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_one_pass_pipeline_is_a_single_epoch() {
    let mut p = PipelineBuilder::new()
        .source(0..5)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(
        p.epoch().map(Result::unwrap).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(p.epoch().count(), 0);
}
