use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        source(0..10u32) -> pipe(|x: u32| x.to_string()) -> pipe(|n: u64| n + 1) -> sink()
    };
}
