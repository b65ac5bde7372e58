use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        merge(source(0..10u32), pipe(|x: u32| x))
        -> sink()
    };
}
