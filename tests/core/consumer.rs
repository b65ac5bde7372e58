//! The consumer's wait and step times: a consumer that works a known time per item, a stage
//! that takes a known time per item, and both. Sleeps never end early but may end late on a
//! loaded machine, so the bounds are floors, ratios and orderings, not exact timings.

use std::time::Duration;

use pipeline_runtime::stats::ConsumerStats;
use pipeline_runtime::PipelineBuilder;

/// Runs `items` items through one stage sleeping `stage` per item, read by a consumer that
/// sleeps `step` per item.
fn run(items: u64, stage: Duration, step: Duration) -> ConsumerStats {
    let mut p = PipelineBuilder::new()
        .source(0..items)
        .pipe(move |x: u64| {
            std::thread::sleep(stage);
            x
        })
        .name("stage")
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    let mut n = 0;
    for item in p.by_ref() {
        item.unwrap();
        std::thread::sleep(step);
        n += 1;
    }
    assert_eq!(n, items);
    let stats = p.stats();
    assert_eq!(stats.consumer.items, items, "{stats}");
    stats.consumer
}

#[test]
fn a_slow_consumer_hardly_waits() {
    let step = Duration::from_millis(8);
    let c = run(40, Duration::ZERO, step);
    // One step per item: the `for` loop's last `next()` (which finds the end) ends the last.
    assert_eq!(c.step.count, 40);
    assert!(c.step.mean >= step, "{c:?}");
    assert!(c.step_total >= step * 40, "{c:?}");
    // The stage is far ahead: waits are the hand-over only, far below the step.
    assert!(c.wait.p50 < step / 2, "{c:?}");
    assert!(c.wait_share() < 0.5, "{c:?}");
}

#[test]
fn a_slow_stage_makes_the_consumer_wait() {
    let stage = Duration::from_millis(10);
    let c = run(30, stage, Duration::ZERO);
    // One item per 10 ms at best: the consumer spent at least that per item, nearly all of
    // it waiting.
    assert!(c.mean_cycle() >= stage.mul_f64(0.95), "{c:?}");
    assert!(c.wait_total + c.step_total >= stage * 29, "{c:?}");
    assert!(c.wait.p50 >= stage / 2, "{c:?}");
    assert!(c.wait_share() > 0.5, "{c:?}");
}

#[test]
fn wait_and_step_add_up_to_the_slower_side() {
    let (stage, step) = (Duration::from_millis(12), Duration::from_millis(4));
    let c = run(30, stage, step);
    assert!(c.step.mean >= step, "{c:?}");
    // The stage sets the pace: wait + step per item is at least its 12 ms.
    assert!(c.mean_cycle() >= stage.mul_f64(0.95), "{c:?}");
    assert!(c.wait_share() > 0.0 && c.wait_share() < 1.0, "{c:?}");
    // And the share sits between the two extremes above.
    let starving = run(20, stage, Duration::ZERO);
    assert!(
        c.wait_share() < starving.wait_share(),
        "{c:?} vs {starving:?}"
    );
}

#[test]
fn the_table_and_the_stream_tell_the_wait_too() {
    let stage = Duration::from_millis(5);
    let mut p = PipelineBuilder::new()
        .source(0..20u64)
        .pipe(move |x: u64| {
            std::thread::sleep(stage);
            x
        })
        .name("slow")
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let got: Vec<u64> =
        futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(p.stream()))
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(got.len(), 20);
    let stats = p.stats();
    assert_eq!(stats.consumer.items, 20);
    assert!(
        stats.consumer.wait_total >= stage * 15,
        "{:?}",
        stats.consumer
    );
    let table = stats.to_string();
    assert!(
        table.contains("the consumer waited") && table.contains("over 20 items"),
        "{table}"
    );
}

#[test]
fn statistics_off_time_nothing() {
    let mut p = PipelineBuilder::new()
        .source(0..10u64)
        .pipe(|x: u64| x)
        .sink()
        .buffer(2)
        .stats(false)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 10);
    assert_eq!(p.stats().consumer, ConsumerStats::default());
    assert!(p.stats_series().is_empty());
}
