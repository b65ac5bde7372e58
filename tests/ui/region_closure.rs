use pipeline_runtime::{pipeline, StageBuilder, process::ProcessPool};

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source(0..10u64)
        -> process_region(|s: StageBuilder<u64>| s.aggregate(2), executor = pool)
        -> sink()
    };
}
