//! The shard sampler as a pipeline source: equal blocks, exact resume on the same and on
//! another world size, and nothing finished read again.

use std::collections::BTreeMap;

use super::*;
use crate::distributed::{Rank, Split};
use crate::storage::store::Store;
use crate::storage::tar::TarWriter;
use crate::storage::{block_on, StorageError};
use crate::{Order, Pipeline, PipelineBuilder, ResumeState};

/// A dataset of `counts[i]` samples in shard `i`; sample `k` (numbered across the dataset)
/// has key `k` and a `bin` field of `k % 7 + 1` KiB-ish bytes holding `k`.
fn dataset(counts: &[u64]) -> (Store, ShardIndex) {
    let store = Store::open("memory://").unwrap();
    let mut shards = Vec::new();
    let mut k = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        let mut tar = TarWriter::new();
        let mut starts = Vec::new();
        for _ in 0..n {
            starts.push(tar.len());
            let bin = vec![(k % 251) as u8; 100 + (k as usize % 7) * 300];
            tar.append(&format!("{k:06}.cls"), k.to_string().as_bytes());
            tar.append(&format!("{k:06}.bin"), &bin);
            k += 1;
        }
        let end = tar.len();
        let data = tar.finish();
        let name = format!("shard-{i:03}.tar");
        let size = data.len() as u64;
        block_on(store.put(&store.path(&name), data.into())).unwrap();
        shards.push(IndexedShard::new(name, size, starts, end).unwrap());
    }
    let index = ShardIndex::new(shards).unwrap();
    block_on(index.save(&store)).unwrap();
    (store, index)
}

fn class(sample: Result<crate::storage::webdataset::Sample, StorageError>) -> Result<u64, String> {
    let s = sample.map_err(|e| e.to_string())?;
    let cls = std::str::from_utf8(s.get("cls").ok_or("no cls")?)
        .map_err(|e| e.to_string())?
        .parse::<u64>()
        .map_err(|e| e.to_string())?;
    let bin = s.get("bin").ok_or("no bin")?;
    if bin.len() != 100 + (cls as usize % 7) * 300 || bin.iter().any(|&b| b != (cls % 251) as u8) {
        return Err(format!("sample {cls}: wrong bin bytes"));
    }
    Ok(cls)
}

fn build(sampler: &ShardSampler, state: Option<ResumeState>, concurrency: usize) -> Pipeline<u64> {
    PipelineBuilder::new()
        .continuous_source(sampler.epochs())
        .try_pipe(class)
        .concurrency(concurrency)
        .order(Order::Input)
        .sink()
        .buffer(2)
        .resume_from(state)
        .build()
        .unwrap()
}

/// Every epoch's classes, epochs `0..epochs`, straight through.
fn straight(sampler: &ShardSampler, epochs: u64) -> Vec<Vec<u64>> {
    let mut p = build(sampler, None, 3);
    (0..epochs)
        .map(|_| p.epoch().map(|x| x.unwrap()).collect())
        .collect()
}

/// The bytes of sample `cls`'s fields.
fn sample_bytes(cls: u64) -> u64 {
    cls.to_string().len() as u64 + 100 + (cls % 7) * 300
}

#[test]
fn a_resumed_epoch_reads_exactly_the_samples_it_still_owes() {
    let (store, index) = dataset(&[20, 13, 17]);
    let sampler = ShardSampler::new(&store, index, Rank::single())
        .seed(9)
        .shuffle_buffer(5);
    let one_epoch = |s: &ShardSampler, state: Option<ResumeState>| {
        PipelineBuilder::new()
            .source(s.epoch(0))
            .try_pipe(class)
            .concurrency(4)
            .order(Order::Completion)
            .sink()
            .buffer(2)
            .resume_from(state)
            .build()
            .unwrap()
    };
    let mut expected: Vec<u64> = one_epoch(&sampler, None).map(|x| x.unwrap()).collect();
    expected.sort_unstable();
    for stop in [1, 7, 30, 49] {
        let mut p = one_epoch(&sampler, None);
        let mut got: Vec<u64> = p.by_ref().take(stop).map(|x| x.unwrap()).collect();
        let state = ShardState::new(&sampler, p.resume_state().unwrap());
        drop(p);
        let resumed = state.resume(&sampler).unwrap();
        let before = resumed.sampler.bytes_read();
        let rest: Vec<u64> = one_epoch(&resumed.sampler, Some(resumed.pipeline))
            .map(|x| x.unwrap())
            .collect();
        let owed: u64 = rest.iter().map(|&c| sample_bytes(c)).sum();
        assert_eq!(
            resumed.sampler.bytes_read() - before,
            owed,
            "stop {stop}: the resumed run reads exactly what it delivers"
        );
        got.extend(rest);
        got.sort_unstable();
        assert_eq!(got, expected, "stop {stop}: every sample once");
    }
}

#[test]
fn ranks_get_equal_disjoint_blocks_and_a_resume_gives_the_same_lines_reading_nothing_twice() {
    let (store, index) = dataset(&[9, 14, 3, 11, 7]); // 44 samples
    let index = std::sync::Arc::new(index);
    for world in [1u32, 3] {
        let samplers: Vec<ShardSampler> = (0..world)
            .map(|r| {
                ShardSampler::new(&store, index.clone(), Rank::new(r, world).unwrap())
                    .seed(3)
                    .shuffle_buffer(6)
                    .split(Split::DropRemainder)
            })
            .collect();
        let full: Vec<Vec<Vec<u64>>> = samplers.iter().map(|s| straight(s, 2)).collect();
        for e in 0..2 {
            let lens: Vec<usize> = full.iter().map(|f| f[e].len()).collect();
            assert!(
                lens.iter().all(|&l| l as u64 == 44 / u64::from(world)),
                "{lens:?}"
            );
            let mut all: Vec<u64> = full.iter().flat_map(|f| f[e].clone()).collect();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), lens.iter().sum::<usize>(), "disjoint");
        }
        assert_ne!(full[0][0], full[0][1], "a new order each epoch");

        for (rank, sampler) in samplers.iter().enumerate() {
            let expected: Vec<u64> = full[rank].concat();
            let epoch_len = expected.len() / 2;
            for stop in [0, 1, 5, epoch_len - 1, epoch_len, epoch_len + 4] {
                let mut p = build(sampler, None, 3);
                let mut got = Vec::new();
                let mut epoch = 0;
                while got.len() < stop {
                    match p.epoch().next() {
                        Some(x) => got.push(x.unwrap()),
                        None => epoch += 1,
                    }
                    assert!(epoch < 2);
                }
                let state = ShardState::new(sampler, p.resume_state().unwrap());
                drop(p);
                let json = serde_json::to_string(&state).unwrap();
                let state: ShardState = serde_json::from_str(&json).unwrap();
                let resumed = state.resume(sampler).unwrap();
                let mut p = build(&resumed.sampler, Some(resumed.pipeline.clone()), 2);
                for _ in resumed.epoch()..2 {
                    got.extend(p.epoch().map(|x| x.unwrap()));
                }
                assert_eq!(got, expected, "world {world} rank {rank} stop {stop}");
            }
        }
    }
}

#[test]
fn four_ranks_stopped_and_resumed_on_three_deliver_the_rest_of_the_epoch_exactly_once() {
    let (store, index) = dataset(&[12, 5, 16, 9, 10, 7]); // 59 samples
    let index = std::sync::Arc::new(index);
    for split in [Split::DropRemainder, Split::Even] {
        let sampler = |r: u32, w: u32| {
            ShardSampler::new(&store, index.clone(), Rank::new(r, w).unwrap())
                .seed(1)
                .shuffle_buffer(4)
                .split(split)
        };
        let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
        let mut states = Vec::new();
        let mut epoch_total = 0;
        for r in 0..4 {
            let s = sampler(r, 4);
            epoch_total += s.epoch_len(0);
            let mut p = build(&s, None, 2);
            for x in p.epoch().take(3 + 2 * r as usize) {
                *delivered.entry(x.unwrap()).or_default() += 1;
            }
            let json =
                serde_json::to_string(&ShardState::new(&s, p.resume_state().unwrap())).unwrap();
            states.push(serde_json::from_str::<ShardState>(&json).unwrap());
        }
        let mut lens = Vec::new();
        for r in 0..3 {
            let resumed = ShardState::resume_all(&states, &sampler(r, 3)).unwrap();
            assert_eq!(resumed.epoch(), 0);
            let mut p = build(&resumed.sampler, Some(resumed.pipeline), 3);
            let rest: Vec<u64> = p.epoch().map(|x| x.unwrap()).collect();
            lens.push(rest.len());
            for cls in rest {
                *delivered.entry(cls).or_default() += 1;
            }
            let next: Vec<u64> = p.epoch().map(|x| x.unwrap()).collect();
            assert_eq!(
                next.len() as u64,
                sampler(r, 3).epoch_len(1),
                "epoch 1 as 3 ranks"
            );
        }
        assert!(
            lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1,
            "{lens:?}"
        );
        assert!(
            delivered.values().all(|&n| n == 1),
            "{split:?}: a sample twice"
        );
        assert_eq!(
            delivered.len() as u64,
            epoch_total,
            "{split:?}: every sample of the epoch"
        );
    }
    // A state from another dataset is refused, naming why.
    let (other_store, other) = dataset(&[3]);
    let s = ShardSampler::new(&other_store, other, Rank::single());
    let state = ShardState::new(&s, ResumeState::start_of_epoch("x", 0));
    let fresh = ShardSampler::new(&store, index.clone(), Rank::single());
    let e = state.resume(&fresh).unwrap_err();
    assert!(e.to_string().contains("another dataset"), "{e}");
}
