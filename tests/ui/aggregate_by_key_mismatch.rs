use pipeline_runtime::pipeline;

fn len_bucket(s: &String) -> usize {
    s.len() / 8
}

fn main() {
    let _ = pipeline! {
        source(0..10u32) -> aggregate_by(len_bucket, 4) -> sink()
    };
}
