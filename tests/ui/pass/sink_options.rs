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
        )
    }
    .unwrap();
    assert_eq!(pipeline.map(Result::unwrap).count(), 17);

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

    // A build error from the runtime still comes back as a value.
    let threads = 0;
    assert!(pipeline! { source(0..1) -> sink(num_threads = threads) }.is_err());
}
