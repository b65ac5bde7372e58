use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10u32) -> pipe(concurrency = 2) -> sink() };
}
