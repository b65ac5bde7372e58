use pipeline_runtime::pipeline;

fn main() {
    let _ = pipeline! {
        source(0..10u32)
        -> route(|x: &u32| x % 2)
        -> sink()
    };
}
