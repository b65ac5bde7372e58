//! A pipeline is an `Iterator` only: with `futures::StreamExt` in scope, `next`, `map` and
//! `count` still resolve to the iterator's (no E0034 "multiple applicable items"), and the
//! async consumer asks for a stream by name.

use futures::StreamExt;
use pipeline_runtime::{Order, Pipeline, PipelineBuilder};

fn doubled(n: u64) -> Pipeline<u64> {
    PipelineBuilder::new()
        .source(0..n)
        .pipe(|x| x * 2)
        .concurrency(2)
        .order(Order::Input)
        .sink()
        .buffer(4)
        .build()
        .unwrap()
}

#[test]
fn iterator_methods_resolve_with_stream_ext_in_scope() {
    let mut p = doubled(5);
    let first: Option<Result<u64, _>> = p.next();
    assert_eq!(first.unwrap().unwrap(), 0);

    let mapped: Vec<u64> = doubled(5).map(|item| item.unwrap() + 1).collect();
    assert_eq!(mapped, vec![1, 3, 5, 7, 9]);

    let count: usize = doubled(7).count();
    assert_eq!(count, 7);
}

#[test]
fn into_stream_is_read_with_stream_ext_next() {
    let mut stream = doubled(6).into_stream();
    let items = futures::executor::block_on(async {
        let mut items = Vec::new();
        while let Some(item) = StreamExt::next(&mut stream).await {
            items.push(item.unwrap());
        }
        items
    });
    assert_eq!(items, vec![0, 2, 4, 6, 8, 10]);
    assert_eq!(stream.get_ref().stats().stages.last().unwrap().outputs, 6);
    // After the end, the pipeline stays ended.
    assert!(stream.into_inner().next().is_none());
}

#[test]
fn a_borrowed_stream_leaves_the_pipeline_readable() {
    let mut p = doubled(10);
    let firsts: Vec<u64> =
        futures::executor::block_on(p.stream().take(3).map(Result::unwrap).collect());
    assert_eq!(firsts, vec![0, 2, 4]);
    let rest: Vec<u64> = p.map(Result::unwrap).collect();
    assert_eq!(rest, vec![6, 8, 10, 12, 14, 16, 18]);
}
