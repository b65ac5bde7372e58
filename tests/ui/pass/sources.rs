//! The four sources: an iterator, an iterator of `Result`s, a continuous (epoch) source and
//! an async stream.

use futures::stream;
use pipeline_runtime::pipeline;

fn main() {
    let plain = pipeline! { source(vec![1, 2, 3]) -> sink() }.unwrap();
    assert_eq!(plain.map(Result::unwrap).collect::<Vec<i32>>(), vec![1, 2, 3]);

    let items: Vec<Result<u8, String>> = vec![Ok(1), Ok(2), Err("broken".to_owned())];
    let mut fallible = pipeline! { source(try items) -> sink() }.unwrap();
    assert_eq!(fallible.next().unwrap().unwrap(), 1);
    assert_eq!(fallible.next().unwrap().unwrap(), 2);
    assert!(fallible.next().unwrap().is_err(), "a failing source ends with an error");

    let mut epochs = pipeline! { source(continuous 0..3) -> pipe(|x: i32| x * 10) -> sink() }
        .unwrap();
    for _ in 0..2 {
        let epoch: Vec<i32> = epochs.epoch().map(Result::unwrap).collect();
        assert_eq!(epoch, vec![0, 10, 20]);
    }

    let streamed = pipeline! { source(async stream::iter(5..8)) -> sink() }.unwrap();
    assert_eq!(streamed.map(Result::unwrap).collect::<Vec<i32>>(), vec![5, 6, 7]);
}
