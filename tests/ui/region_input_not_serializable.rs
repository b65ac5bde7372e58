use pipeline_runtime::{pipeline, StageBuilder, process::ProcessPool};

struct Handle(u64);

fn open(x: u64) -> Handle {
    Handle(x)
}

fn size(h: Handle) -> u64 {
    h.0
}

// Only the region's input and output cross into the workers: `Handle` enters it.
fn sizes(handles: StageBuilder<Handle>) -> StageBuilder<Vec<u64>> {
    handles.pipe(size).aggregate(4)
}

fn main() {
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source(0..10u64) -> pipe(open) -> process_region(sizes, executor = pool) -> sink()
    };
}
