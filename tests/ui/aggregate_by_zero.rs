use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10u32) -> aggregate_by(|x: &u32| x % 3, 0) -> sink() };
}
