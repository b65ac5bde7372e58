use pipeline_runtime::pipeline;

fn double(x: u32) -> u32 {
    x * 2
}

fn main() {
    let _ = pipeline! { source(0..10u32) -> pipe(try double) -> sink() };
}
