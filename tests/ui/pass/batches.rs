//! `aggregate` with and without options, `aggregate_with` and its options, `disaggregate`
//! (with and without parentheses), and a stage that takes the batch.

use pipeline_runtime::{pipeline, Aggregator, BoxError};

/// Sums every `n` items.
struct Sums {
    n: usize,
    seen: usize,
    sum: u64,
}

impl Aggregator<u64> for Sums {
    type Output = u64;

    fn accumulate(&mut self, item: u64) -> Result<Option<u64>, BoxError> {
        self.seen += 1;
        self.sum += item;
        if self.seen == self.n {
            self.seen = 0;
            Ok(Some(std::mem::take(&mut self.sum)))
        } else {
            Ok(None)
        }
    }

    fn flush(&mut self) -> Result<Option<u64>, BoxError> {
        self.seen = 0;
        Ok((self.sum > 0).then(|| std::mem::take(&mut self.sum)))
    }
}

fn total(batch: Vec<u64>) -> u64 {
    batch.iter().sum()
}

fn main() {
    let batches = pipeline! {
        source(0..10u64) -> aggregate(4) -> sink()
    }
    .unwrap();
    let sizes: Vec<usize> = batches.map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, vec![4, 4, 2]);

    let size = 4;
    let dropped = pipeline! {
        source(0..10u64)
        -> aggregate(size, drop_last = true, name = "batch", buffer = 2)
        -> pipe(total)
        -> sink()
    }
    .unwrap();
    assert_eq!(dropped.map(Result::unwrap).collect::<Vec<_>>(), vec![6, 22]);

    let round_trip = pipeline! {
        source(0..10u64) -> aggregate(3) -> disaggregate() -> aggregate(5) -> disaggregate -> sink
    }
    .unwrap();
    assert_eq!(
        round_trip.map(Result::unwrap).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );

    let custom = pipeline! {
        source(1..=6u64)
        -> aggregate_with(Sums { n: 4, seen: 0, sum: 0 }, name = "sums", drop_last = false, buffer = 3)
        -> sink()
    }
    .unwrap();
    assert_eq!(custom.map(Result::unwrap).collect::<Vec<_>>(), vec![10, 11]);
}
