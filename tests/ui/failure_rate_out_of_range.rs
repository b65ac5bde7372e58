use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10u32) -> sink(max_failures = 1.5) };
}
