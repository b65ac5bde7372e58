//! SPDL's aggregate_test: batching, the last partial batch, custom aggregators.

use pipeline_runtime::{Aggregator, BoxError, PipelineBuilder};
use pipeline_tests::collect_ok;

#[test]
fn batches_with_the_partial_last_one() {
    let p = PipelineBuilder::new()
        .source(0..7)
        .aggregate(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
}

#[test]
fn drop_last_drops_the_partial_batch() {
    let p = PipelineBuilder::new()
        .source(0..7)
        .aggregate(3)
        .drop_last(true)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![vec![0, 1, 2], vec![3, 4, 5]]);
}

#[test]
fn exact_multiple_has_no_empty_batch() {
    let p = PipelineBuilder::new()
        .source(0..6)
        .aggregate(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![vec![0, 1, 2], vec![3, 4, 5]]);
}

#[test]
fn empty_source_gives_no_batch() {
    let p = PipelineBuilder::new()
        .source(std::iter::empty::<u8>())
        .aggregate(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert!(collect_ok(p).is_empty());
}

/// Emits the running sum whenever it reaches a threshold; flushes the rest.
struct SumTo {
    threshold: u32,
    acc: u32,
}

impl Aggregator<u32> for SumTo {
    type Output = u32;

    fn accumulate(&mut self, item: u32) -> Result<Option<u32>, BoxError> {
        self.acc += item;
        if self.acc >= self.threshold {
            Ok(Some(std::mem::take(&mut self.acc)))
        } else {
            Ok(None)
        }
    }

    fn flush(&mut self) -> Result<Option<u32>, BoxError> {
        Ok((self.acc > 0).then(|| std::mem::take(&mut self.acc)))
    }
}

#[test]
fn custom_aggregator() {
    let p = PipelineBuilder::new()
        .source(1..=10u32)
        .aggregate_with(SumTo {
            threshold: 10,
            acc: 0,
        })
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    // 1+2+3+4=10, 5+6=11, 7+8=15, 9+10=19
    assert_eq!(collect_ok(p), vec![10, 11, 15, 19]);
}

#[test]
fn custom_aggregator_drop_last_skips_the_final_flush() {
    let p = PipelineBuilder::new()
        .source(1..=5u32)
        .aggregate_with(SumTo {
            threshold: 10,
            acc: 0,
        })
        .drop_last(true)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![10]);
}

#[test]
fn aggregate_after_a_concurrent_stage_loses_nothing() {
    let p = PipelineBuilder::new()
        .source(0..1000u32)
        .pipe(|x| x)
        .concurrency(4)
        .aggregate(32)
        .pipe(|b: Vec<u32>| (b.len(), b.iter().sum::<u32>()))
        .sink()
        .buffer(2)
        .num_threads(2)
        .build()
        .unwrap();
    let out = collect_ok(p);
    assert_eq!(out.iter().map(|o| o.0).sum::<usize>(), 1000);
    assert_eq!(
        out.iter().map(|o| o.1).sum::<u32>(),
        (0..1000u32).sum::<u32>()
    );
    assert_eq!(out.len(), 32);
    assert!(out[..31].iter().all(|o| o.0 == 32));
}
