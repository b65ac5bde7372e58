//! Synchronous stages: plain, fallible, optional, one-to-many, fallible one-to-many;
//! functions, generic functions, closures with and without annotations, captured values.

use std::sync::Arc;

use pipeline_runtime::pipeline;

fn double(x: u32) -> u32 {
    x * 2
}

fn checked_half(x: u32) -> Result<u32, String> {
    if x % 4 == 0 {
        Ok(x / 2)
    } else {
        Err(format!("{x} is not a multiple of 4"))
    }
}

fn main() {
    let offset = Arc::new(1u32);
    let pipeline = pipeline! {
        source(0..8u32)
        -> pipe(double)
        -> pipe(try checked_half)
        -> pipe(opt |x| (x != 2).then_some(x))
        -> pipe(flat |x| vec![x, x])
        -> pipe(try flat |x: u32| -> Vec<Result<u32, String>> { vec![Ok(x)] })
        -> pipe(move |x| x + *offset)
        -> pipe(u64::from)
        -> pipe(Some)
        -> pipe(opt std::convert::identity)
        -> sink()
    }
    .unwrap();
    let mut out: Vec<u64> = pipeline.map(Result::unwrap).collect();
    out.sort();
    // 0..8 doubled: 0,2,..,14; multiples of 4 halved: 0,2,4,6; 2 dropped; each twice; +1.
    assert_eq!(out, vec![1, 1, 5, 5, 7, 7]);
}
