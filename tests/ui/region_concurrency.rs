use pipeline_runtime::{pipeline, process_region, StageBuilder, process::ProcessPool};

fn batches(items: StageBuilder<u64>) -> StageBuilder<Vec<u64>> {
    items.aggregate(4)
}
process_region!(batches);

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    // Each worker runs the region's stages with their own options.
    let _ = pipeline! {
        source(0..10u64) -> process_region(batches, executor = pool, concurrency = 2) -> sink()
    };
}
