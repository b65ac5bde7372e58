use pipeline_runtime::pipeline;

fn label(x: u32) -> String {
    x.to_string()
}

fn main() {
    let _ = pipeline! {
        merge(source(0..10u32), source(0..5u32) -> pipe(label))
        -> sink()
    };
}
