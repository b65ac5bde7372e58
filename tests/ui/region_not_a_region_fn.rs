use pipeline_runtime::{pipeline, process::ProcessPool};

fn double(x: u64) -> u64 {
    x * 2
}

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    // A stage function, not a fn that adds stages to a builder.
    let _ = pipeline! {
        source(0..10u64) -> process_region(double, executor = pool) -> sink()
    };
}
