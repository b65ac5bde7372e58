use pipeline_runtime::{pipeline, process::ProcessPool};

struct Handle(u64);

fn open(x: u64) -> Handle {
    Handle(x)
}

fn main() {
    second();
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source(0..10u64) -> pipe(process open, executor = pool) -> sink()
    };
}

fn unsendable(_: Handle) -> u64 {
    0
}

fn second() {
    let pool = ProcessPool::builder().build().unwrap();
    let _ = pipeline! {
        source((0..10u64).map(Handle)) -> pipe(process unsendable, executor = pool) -> sink()
    };
}
