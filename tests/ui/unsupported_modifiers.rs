use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        source(0..10u32) -> pipe(opt flat |x: u32| Some([x])) -> sink()
    };
}
