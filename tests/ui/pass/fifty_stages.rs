//! A 50-stage pipeline of every shape: compiles, runs, and keeps every item. Its expansion
//! and type check take about 45 ms over an empty file (see docs/src/macro.md).

use pipeline_runtime::pipeline;
fn inc(x: u64) -> u64 {
    x + 1
}
async fn fetch(x: u64) -> u64 {
    x
}
fn checked(x: u64) -> Result<u64, String> {
    Ok(x)
}
fn keep(x: u64) -> Option<u64> {
    Some(x)
}
fn main() {
    let p = pipeline! {
        source(0..10u64)
        -> pipe(inc, concurrency = 4)
        -> pipe(|x| x + 1)
        -> pipe(async fetch, concurrency = 8)
        -> pipe(try checked, max_failures = 3)
        -> pipe(opt keep)
        -> pipe(flat |x: u64| [x])
        -> pipe(|x: u64| x * 1, name = "mul", order = input)
        -> aggregate(4)
        -> disaggregate()
        -> pipe(inc)
        -> pipe(inc, concurrency = 4)
        -> pipe(|x| x + 1)
        -> pipe(async fetch, concurrency = 8)
        -> pipe(try checked, max_failures = 3)
        -> pipe(opt keep)
        -> pipe(flat |x: u64| [x])
        -> pipe(|x: u64| x * 1, name = "mul", order = input)
        -> aggregate(4)
        -> disaggregate()
        -> pipe(inc)
        -> pipe(inc, concurrency = 4)
        -> pipe(|x| x + 1)
        -> pipe(async fetch, concurrency = 8)
        -> pipe(try checked, max_failures = 3)
        -> pipe(opt keep)
        -> pipe(flat |x: u64| [x])
        -> pipe(|x: u64| x * 1, name = "mul", order = input)
        -> aggregate(4)
        -> disaggregate()
        -> pipe(inc)
        -> pipe(inc, concurrency = 4)
        -> pipe(|x| x + 1)
        -> pipe(async fetch, concurrency = 8)
        -> pipe(try checked, max_failures = 3)
        -> pipe(opt keep)
        -> pipe(flat |x: u64| [x])
        -> pipe(|x: u64| x * 1, name = "mul", order = input)
        -> aggregate(4)
        -> disaggregate()
        -> pipe(inc)
        -> pipe(inc, concurrency = 4)
        -> pipe(|x| x + 1)
        -> pipe(async fetch, concurrency = 8)
        -> pipe(try checked, max_failures = 3)
        -> pipe(opt keep)
        -> pipe(flat |x: u64| [x])
        -> pipe(|x: u64| x * 1, name = "mul", order = input)
        -> aggregate(4)
        -> disaggregate()
        -> pipe(inc)
        -> sink(buffer = 4)
    }
    .unwrap();
    assert_eq!(p.map(Result::unwrap).count(), 10);
}
