use pipeline_runtime::pipeline;

fn main() {
    let offsets = vec![1u32, 2, 3];
    let _ = pipeline! { source(0..10u32) -> pipe(|x| x + offsets[0]) -> sink() };
}
