//! `aggregate_by(key, size)`: batches whose items share a key; full buckets go out at once,
//! partial ones at the end of each epoch and of the stream (unless `drop_last`).

use std::collections::HashSet;
use std::time::Duration;

use pipeline_runtime::{MaxFailures, Order, Pipeline, PipelineBuilder, ResumeState};

fn collect<T: Send + 'static>(pipeline: Pipeline<T>) -> Vec<T> {
    pipeline.map(Result::unwrap).collect()
}

#[test]
fn full_buckets_go_out_at_once_and_partial_ones_at_the_end_in_first_seen_order() {
    let batches = collect(
        PipelineBuilder::new()
            .source([10u32, 21, 12, 33, 14, 25, 16, 17])
            .aggregate_by(|x: &u32| x % 2, 3)
            .sink()
            .build()
            .unwrap(),
    );
    // Even: 10 12 14 fills first; odd: 21 33 25 next; the leftovers in first-seen order
    // of their keys (even before odd).
    assert_eq!(
        batches,
        [vec![10, 12, 14], vec![21, 33, 25], vec![16], vec![17]]
    );
}

#[test]
fn drop_last_drops_every_partial_bucket() {
    let batches = collect(
        PipelineBuilder::new()
            .source(0..11u32)
            .aggregate_by(|x: &u32| x % 3, 2)
            .drop_last(true)
            .sink()
            .build()
            .unwrap(),
    );
    assert!(batches.iter().all(|b| b.len() == 2), "{batches:?}");
    // Keys 0: 0 3 6 9 (two batches); 1: 1 4 7 10 (two); 2: 2 5 8 (one, 8 dropped).
    assert_eq!(batches.len(), 5);
    for batch in &batches {
        assert_eq!(batch[0] % 3, batch[1] % 3, "{batch:?} mixes keys");
    }
}

#[test]
fn every_item_comes_out_once_in_a_batch_of_its_key_after_a_concurrent_stage() {
    let n = 2_000u64;
    let batches = collect(
        PipelineBuilder::new()
            .source(0..n)
            .pipe(|x| {
                std::thread::sleep(Duration::from_micros(x % 7));
                x
            })
            .concurrency(8)
            .aggregate_by(|x: &u64| x % 5, 16)
            .sink()
            .build()
            .unwrap(),
    );
    let mut seen = HashSet::new();
    for batch in &batches {
        assert!(!batch.is_empty() && batch.len() <= 16);
        let key = batch[0] % 5;
        assert!(batch.iter().all(|x| x % 5 == key), "{batch:?} mixes keys");
        for x in batch {
            assert!(seen.insert(*x), "{x} delivered twice");
        }
    }
    assert_eq!(seen.len() as u64, n);
    // 400 items per key: 25 full batches each, no partial one.
    assert_eq!(batches.len(), 125);
}

#[test]
fn no_batch_spans_two_epochs() {
    let mut pipeline = PipelineBuilder::new()
        .continuous_source(0..7u32)
        .aggregate_by(|x: &u32| x % 2, 3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    for _ in 0..3 {
        let batches: Vec<Vec<u32>> = pipeline.epoch().map(Result::unwrap).collect();
        assert_eq!(batches, [vec![0, 2, 4], vec![1, 3, 5], vec![6]]);
    }
}

#[test]
fn a_panicking_key_fails_that_item_only() {
    let mut pipeline = PipelineBuilder::new()
        .source(0..10u32)
        .aggregate_by(
            |x: &u32| {
                assert!(*x != 4, "no key for 4");
                x % 2
            },
            5,
        )
        .sink()
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let batches: Vec<Vec<u32>> = pipeline.by_ref().map(Result::unwrap).collect();
    assert_eq!(batches, [vec![1, 3, 5, 7, 9], vec![0, 2, 6, 8]]);
    let stats = pipeline.stats();
    let stage = stats.stages.iter().find(|s| s.name == "aggregate_by#1");
    assert_eq!(stage.expect("named aggregate_by#1").failures, 1);
}

#[test]
fn a_rate_budget_counts_the_items_whose_key_was_found() {
    // A panicking key for 20 of the last 500 items: 2% of all, under a 5% budget that is
    // checked from the 10th item on. Counting failures alone, it would read 100%.
    let batches = collect(
        PipelineBuilder::new()
            .source(0..1_000u32)
            .aggregate_by(
                |x: &u32| {
                    assert!(*x < 500 || x % 25 != 7, "no key for {x}");
                    x % 4
                },
                10,
            )
            .sink()
            .max_failures(MaxFailures::Rate {
                rate: 0.05,
                min_invocations: 10,
            })
            .build()
            .unwrap(),
    );
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 980);
}

#[test]
fn resuming_delivers_every_item_once() {
    let run = |state: Option<ResumeState>| {
        PipelineBuilder::new()
            .source(0..500u32)
            .pipe(|x| x)
            .concurrency(4)
            .order(Order::Completion)
            .aggregate_by(|x: &u32| x % 3, 8)
            .sink()
            .buffer(2)
            .queue_capacity(3)
            .track_resume(true)
            .resume_from(state)
            .build()
            .unwrap()
    };
    for k in [1, 9, 30] {
        let mut first = run(None);
        let mut items: Vec<u32> = first.by_ref().take(k).flat_map(Result::unwrap).collect();
        std::thread::sleep(Duration::from_millis(10));
        let state = first.resume_state().expect("tracking is on");
        drop(first);
        items.extend(run(Some(state)).flat_map(Result::unwrap));
        items.sort_unstable();
        assert_eq!(
            items,
            (0..500).collect::<Vec<_>>(),
            "stopped after {k} batches"
        );
    }
}

#[test]
fn its_mistakes_are_build_errors() {
    let zero = PipelineBuilder::new()
        .source(0..3u32)
        .aggregate_by(|x: &u32| *x, 0)
        .sink()
        .build();
    let message = zero.unwrap_err().to_string();
    assert!(
        message.contains("batch size must be at least 1"),
        "{message}"
    );

    let misplaced = PipelineBuilder::new()
        .source(0..3u32)
        .aggregate_by(|x: &u32| *x, 2)
        .concurrency(2)
        .sink()
        .build();
    let message = misplaced.unwrap_err().to_string();
    assert!(
        message.contains("`concurrency` is not an option of an `aggregate_by` stage"),
        "{message}"
    );
}
