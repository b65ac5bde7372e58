//! Every sink (pipeline-wide) option, and the default sink.

use std::time::Duration;

use pipeline_runtime::{pipeline, MaxFailures};

fn main() {
    let pipeline = pipeline! {
        source(0..20u32)
        -> pipe(try |x: u32| if x < 3 { Err("small") } else { Ok(x) })
        -> sink(
            buffer = 1,
            num_threads = 2,
            max_failures = 5,
            queue_capacity = 2,
            stop_timeout = Duration::from_millis(500),
            report_interval = Duration::from_secs(60),
        )
    }
    .unwrap();
    assert_eq!(pipeline.map(Result::unwrap).count(), 17);

    // Statistics off: counts stay, timings and queue figures go.
    let quiet = pipeline! { source(0..5u32) -> pipe(|x: u32| x) -> sink(stats = false) }.unwrap();
    let mut quiet = quiet;
    assert_eq!(quiet.by_ref().count(), 5);
    let stats = quiet.stats();
    assert_eq!(stats.stages[1].tasks, 5);
    assert!(stats.queues.is_empty());

    // A failure rate, and a `MaxFailures` value.
    let rate = pipeline! {
        source(0..10u32) -> pipe(|x: u32| x) -> sink(max_failures = 0.25)
    }
    .unwrap();
    assert_eq!(rate.count(), 10);
    let budget = MaxFailures::Count(0);
    let strict = pipeline! {
        source(0..10u32)
        -> pipe(try |x: u32| if x == 5 { Err("five") } else { Ok(x) })
        -> sink(max_failures = budget)
    }
    .unwrap();
    assert!(strict.last().unwrap().is_err(), "the pipeline-wide budget ends the pipeline");

    // Resume tracking, and resuming from a state taken from the same shape.
    let mut tracked = pipeline! {
        source(0..10u32) -> pipe(|x: u32| x) -> sink(track_resume = true)
    }
    .unwrap();
    assert_eq!(tracked.by_ref().take(4).count(), 4);
    let state = tracked.resume_state().unwrap();
    drop(tracked);
    let resumed = pipeline! {
        source(0..10u32) -> pipe(|x: u32| x) -> sink(resume_from = state)
    }
    .unwrap();
    assert_eq!(resumed.map(Result::unwrap).collect::<Vec<_>>(), (4..10).collect::<Vec<_>>());

    // A build error from the runtime still comes back as a value.
    let threads = 0;
    assert!(pipeline! { source(0..1) -> sink(num_threads = threads) }.is_err());
}
