use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10) -> pipe(|x: i32| x + 1, concurrency = ) -> sink() };
}
