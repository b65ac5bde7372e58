//! `aggregate_by`: batches of items that share a key, a bucket that never fills flushed at
//! the end (unless `drop_last`), with its options, and a stage that takes the batch.
//!
//! Needs the runtime's `StageBuilder::aggregate_by` (issue 26).

use pipeline_runtime::pipeline;

fn parity(x: &u32) -> u32 {
    x % 2
}

fn total(batch: Vec<u32>) -> u32 {
    batch.iter().sum()
}

fn sorted(mut batches: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    batches.sort();
    batches
}

fn main() {
    // Evens 0 2 4 6 8 and odds 1 3 5 7, in pairs; the bucket of 8 never fills.
    let batches = pipeline! {
        source(0..9u32) -> aggregate_by(parity, 2) -> sink()
    }
    .unwrap();
    let batches = sorted(batches.map(Result::unwrap).collect());
    assert_eq!(batches, vec![vec![0, 2], vec![1, 3], vec![4, 6], vec![5, 7], vec![8]]);

    let size = 2;
    let dropped = pipeline! {
        source(0..9u32)
        -> aggregate_by(|x: &u32| x % 2 == 0, size, drop_last = true, name = "pairs", buffer = 2)
        -> pipe(total)
        -> sink()
    }
    .unwrap();
    let mut sums: Vec<u32> = dropped.map(Result::unwrap).collect();
    sums.sort();
    assert_eq!(sums, vec![2, 4, 10, 12]);

    // A closure without annotations takes its type from the stage before it.
    let words = ["a", "bb", "cc", "d", "eee", "fff"].map(String::from);
    let by_len = pipeline! {
        source(words) -> aggregate_by(|w| w.len(), 2) -> disaggregate() -> sink()
    }
    .unwrap();
    assert_eq!(by_len.count(), 6);
}
