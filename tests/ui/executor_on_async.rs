use pipeline_runtime::{pipeline, executor::ThreadPool};

async fn fetch(x: u32) -> u32 {
    x
}

fn main() {
    let pool = ThreadPool::builder().num_threads(2).build().unwrap();
    let _ = pipeline! {
        source(0..10u32) -> pipe(async fetch, executor = pool, concurrency = 8) -> sink()
    };
}
