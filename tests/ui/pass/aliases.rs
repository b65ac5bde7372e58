//! The builder's method names work as stage names too.

use futures::stream;
use pipeline_runtime::pipeline;

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
        -> sink()
    }
    .unwrap();
    let mut out: Vec<u32> = pipeline.map(Result::unwrap).collect();
    out.sort();
    assert_eq!(out, vec![1, 2, 4, 5, 6]);

    let mut epochs = pipeline! { continuous_source([1, 2]) -> sink() }.unwrap();
    assert_eq!(epochs.epoch().map(Result::unwrap).collect::<Vec<i32>>(), vec![1, 2]);
    let streamed = pipeline! { async_source(stream::iter([7])) -> sink() }.unwrap();
    assert_eq!(streamed.map(Result::unwrap).collect::<Vec<i32>>(), vec![7]);
}
