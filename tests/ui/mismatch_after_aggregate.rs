use pipeline_runtime::pipeline;

fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = pipeline! { source(0..10u64) -> aggregate(4) -> pipe(square) -> sink() };
}
