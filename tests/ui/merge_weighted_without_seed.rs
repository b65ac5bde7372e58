use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        merge(source(0..10u32), source(0..5u32), policy = weighted([0.5, 0.5]))
        -> sink()
    };
}
