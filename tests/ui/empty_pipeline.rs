use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {};
}
