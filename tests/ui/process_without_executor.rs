use pipeline_runtime::{pipeline, process_fn};

fn double(x: u64) -> u64 {
    x * 2
}
process_fn!(double);

fn main() {
    let _ = pipeline! {
        source(0..10u64) -> pipe(process double, concurrency = 2) -> sink()
    };
}
