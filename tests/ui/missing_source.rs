use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { pipe(|x: i32| x + 1) -> sink() };
}
