//! The resume check over the shard sampler: WebDataset tar shards read with a shuffle
//! buffer, preempted at random points, on the same world size and from 4 ranks to 3.

use std::sync::Arc;

use pipeline_runtime::distributed::Split;
use pipeline_runtime::resume_check::{Attempt, CheckReport, Checked, ResumeCheck};
use pipeline_runtime::storage::{
    block_on, IndexedShard, ShardIndex, ShardSampler, ShardState, Store, TarWriter,
};
use pipeline_runtime::{BoxError, Order, PipelineBuilder};

/// A memory store of `shards` tar shards of `per_shard` samples (key k, member `cls` = k),
/// and its index.
fn dataset(shards: u64, per_shard: u64) -> (Store, Arc<ShardIndex>) {
    let store = Store::open("memory://").unwrap();
    let mut indexed = Vec::new();
    for s in 0..shards {
        let (mut tar, mut starts) = (TarWriter::new(), Vec::new());
        for k in s * per_shard..(s + 1) * per_shard {
            starts.push(tar.len());
            tar.append(&format!("{k:05}.cls"), k.to_string().as_bytes());
        }
        let end = tar.len();
        let data = tar.finish();
        let name = format!("shard-{s}.tar");
        let size = data.len() as u64;
        block_on(store.put(&store.path(&name), data.into())).unwrap();
        indexed.push(IndexedShard::new(name, size, starts, end).unwrap());
    }
    (store, Arc::new(ShardIndex::new(indexed).unwrap()))
}

type Built = Result<Checked<Vec<u64>, ShardState>, BoxError>;

/// One rank's job: the sampler (fresh, or resumed from every old rank's state), a check of
/// each sample, batches of 5.
fn job(store: &Store, index: &Arc<ShardIndex>, attempt: &Attempt<'_, ShardState>) -> Built {
    let fresh = ShardSampler::new(store, index.clone(), attempt.rank)
        .seed(5)
        .shuffle_buffer(6)
        .split(Split::Even);
    let (sampler, state) = match attempt.states() {
        None => (fresh, None),
        Some(states) => {
            let resume = ShardState::resume_all(states, &fresh)?;
            (resume.sampler, Some(resume.pipeline))
        }
    };
    let pipeline = PipelineBuilder::new()
        .continuous_source(sampler.epochs())
        .try_pipe(|sample| {
            let sample = sample?;
            let cls = std::str::from_utf8(sample.get("cls").ok_or("no cls")?)?.parse::<u64>()?;
            Ok::<_, BoxError>(cls)
        })
        .concurrency(1 + attempt.run % 3)
        .order(Order::Input)
        .aggregate(5)
        .sink()
        .resume_from(state)
        .build()?;
    Ok(Checked::new(pipeline, move |state| {
        ShardState::new(&sampler, state)
    }))
}

fn seeds(check: ResumeCheck, batches: bool) -> CheckReport {
    let (store, index) = dataset(7, 13);
    let mut last = None;
    for seed in 0..3 {
        let check = check.clone().seed(seed);
        let build = |attempt: &Attempt<'_, ShardState>| job(&store, &index, attempt);
        let report = match batches {
            true => check.run_batches(build),
            false => check.run(build),
        };
        last = Some(report.unwrap_or_else(|e| panic!("seed {seed}: {e}")));
    }
    last.unwrap()
}

#[test]
fn tar_shards_resume_exactly_on_the_same_world() {
    let report = seeds(
        ResumeCheck::new().epochs(2).world_sizes([3]).preemptions(3),
        false,
    );
    // Every sample of both epochs, in batches of 5 on 3 ranks.
    assert!(report.items >= 2 * 91 / 5, "{report:?}");
}

#[test]
fn tar_shards_resume_from_4_ranks_on_3() {
    let report = seeds(
        ResumeCheck::new()
            .epochs(2)
            .world_sizes([4, 3])
            .preemptions(2),
        true,
    );
    assert_eq!(report.world_sizes, [4, 3, 3]);
}
