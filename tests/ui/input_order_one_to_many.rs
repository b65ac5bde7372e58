use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        source(0..10u32) -> pipe(flat |x: u32| [x, x], concurrency = 4, order = input) -> sink()
    };
}
