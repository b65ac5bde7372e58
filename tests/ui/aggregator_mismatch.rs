use pipeline_runtime::{pipeline, Batch};

fn main() {
    let _ = pipeline! { source(0..3u64) -> aggregate_with(Batch::<String>::new(2)) -> sink() };
}
