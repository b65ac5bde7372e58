use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10) -> pipee(|x: i32| x + 1) -> sink() };
}
