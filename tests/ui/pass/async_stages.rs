//! Async stages: plain, fallible, optional, and one-to-many (`stream`), with
//! async fns and closures returning futures.

use futures::stream;
use pipeline_runtime::pipeline;

async fn triple(x: u32) -> u32 {
    x * 3
}

async fn not_five(x: u32) -> Result<u32, std::io::Error> {
    if x == 15 {
        Err(std::io::Error::other("five"))
    } else {
        Ok(x)
    }
}

fn main() {
    let pipeline = pipeline! {
        source(0..10u32)
        -> pipe(async triple, concurrency = 4)
        -> pipe(try async not_five)
        -> pipe(opt async |x: u32| async move { (x % 2 == 0).then_some(x) })
        -> pipe(async flat |x: u32| stream::iter([x, x + 1]))
        -> pipe(async move |x| async move { u64::from(x) })
        -> sink(buffer = 2)
    }
    .unwrap();
    let mut out: Vec<u64> = pipeline.map(Result::unwrap).collect();
    out.sort();
    // 0..10 tripled: 0,3,..,27; 15 fails; evens: 0,6,12,18,24; each with its successor.
    assert_eq!(out, vec![0, 1, 6, 7, 12, 13, 18, 19, 24, 25]);
}
