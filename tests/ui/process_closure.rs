use pipeline_runtime::{pipeline, process::ProcessPool};

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source(0..10u64) -> pipe(process |x: u64| x * 2, executor = pool) -> sink()
    };
}
