//! The builder's method names work as stage names too, for every shape.

use futures::stream;
use pipeline_runtime::{pipeline, process_fn, process::ProcessPool};

fn halve(x: u32) -> Result<u32, String> {
    if x % 2 == 0 {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}
fn twice(x: u32) -> Vec<u32> {
    vec![x, x]
}
process_fn!(halve, twice);

#[pipeline_runtime::main]
fn main() {
    let items: Vec<Result<u32, String>> = (0..6).map(Ok).collect();
    let pipeline = pipeline! {
        try_source(items)
        -> try_pipe(|x: u32| Ok::<_, String>(x + 1))
        -> opt_pipe(|x: u32| (x != 3).then_some(x))
        -> flat_pipe(|x: u32| [x])
        -> try_flat_pipe(|x: u32| [Ok::<_, String>(x)])
        -> async_pipe(|x: u32| async move { x })
        -> async_try_pipe(|x: u32| async move { Ok::<_, String>(x) })
        -> async_opt_pipe(|x: u32| async move { Some(x) })
        -> async_flat_pipe(|x: u32| stream::iter([x]))
        -> async_try_flat_pipe(|x: u32| stream::iter([Ok::<_, String>(x)]))
        -> sink()
    }
    .unwrap();
    let mut out: Vec<u32> = pipeline.map(Result::unwrap).collect();
    out.sort();
    assert_eq!(out, vec![1, 2, 4, 5, 6]);

    let pool = ProcessPool::builder().num_workers(1).build().unwrap();
    let pipeline = pipeline! {
        source(0..6u32)
        -> process_try_pipe(halve, executor = &pool)
        -> process_flat_pipe(twice, executor = &pool)
        -> sink()
    }
    .unwrap();
    let mut out: Vec<u32> = pipeline.map(Result::unwrap).collect();
    out.sort();
    assert_eq!(out, vec![0, 0, 1, 1, 2, 2]);

    let mut epochs = pipeline! { continuous_source([1, 2]) -> sink() }.unwrap();
    assert_eq!(epochs.epoch().map(Result::unwrap).collect::<Vec<i32>>(), vec![1, 2]);
    let streamed = pipeline! { async_source(stream::iter([7])) -> sink() }.unwrap();
    assert_eq!(streamed.map(Result::unwrap).collect::<Vec<i32>>(), vec![7]);
}
