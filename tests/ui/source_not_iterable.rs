use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(42u32) -> pipe(|x: u32| x + 1) -> sink() };
}
