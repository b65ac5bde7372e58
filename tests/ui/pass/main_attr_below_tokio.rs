//! `#[pipeline_runtime::main]` below `#[tokio::main]` works too: it sees the plain `fn main`
//! that tokio made and calls `init()` first in it, before the runtime is built.

use futures::StreamExt;
use pipeline_runtime::{pipeline, process_fn, process::ProcessPool};

fn negate(x: i64) -> i64 {
    -x
}
process_fn!(negate);

#[tokio::main]
#[pipeline_runtime::main]
async fn main() {
    let pool = ProcessPool::builder().num_workers(2).build().unwrap();
    let pipeline = pipeline! {
        source(1..4i64) -> pipe(process negate, executor = pool, concurrency = 2) -> sink()
    }
    .unwrap();
    let mut out: Vec<i64> = pipeline.into_stream().map(Result::unwrap).collect().await;
    out.sort_unstable();
    assert_eq!(out, vec![-3, -2, -1]);
}
