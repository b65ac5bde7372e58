//! `#[pipeline_runtime::main]` above `#[tokio::main]`: `init()` runs before the runtime
//! starts, so the process stage's workers (this binary, re-run) enter worker mode; without
//! it the pool's `build()` fails ("did not enter worker mode").

use pipeline_runtime::{pipeline, process_fn, process::ProcessPool};

fn triple(x: u64) -> u64 {
    x * 3
}
process_fn!(triple);

#[pipeline_runtime::main]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPool::builder().num_workers(1).build()?;
    let pipeline = pipeline! {
        source(0..5u64) -> pipe(process triple, executor = pool) -> sink()
    }?;
    let out: Vec<u64> = tokio::task::spawn_blocking(move || pipeline.map(Result::unwrap).collect())
        .await?;
    assert_eq!(out, vec![0, 3, 6, 9, 12]);
    Ok(())
}
