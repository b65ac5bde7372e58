use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! { source(0..10u32) -> pipe(|x: u32| x, concurrency = "four") -> sink() };
}
