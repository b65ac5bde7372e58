//! A process stage: a registered `fn` run in worker processes (this very binary, re-run;
//! hence `init()` first in `main`).

use pipeline_runtime::{pipeline, process_fn, process::ProcessPool};

fn double(x: u64) -> u64 {
    x * 2
}
process_fn!(double);

fn main() {
    pipeline_runtime::process::init();
    let pool = ProcessPool::builder().num_workers(2).build().unwrap();
    let pipeline = pipeline! {
        source(0..10u64) -> pipe(process double, executor = pool, concurrency = 2) -> sink()
    }
    .unwrap();
    let mut out: Vec<u64> = pipeline.map(Result::unwrap).collect();
    out.sort_unstable();
    assert_eq!(out, (0..10u64).map(|x| x * 2).collect::<Vec<_>>());
}
