use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10) -> aggregate(0) -> sink() };
}
