use pipeline_runtime::{pipeline, StageBuilder, process::ProcessPool};

struct Handle(u64);

fn open(x: u64) -> Handle {
    Handle(x)
}

// The values between the region's stages may be anything; the last one leaves it.
fn opened(paths: StageBuilder<u64>) -> StageBuilder<Handle> {
    paths.pipe(open)
}

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source(0..10u64) -> process_region(opened, executor = pool) -> sink()
    };
}
