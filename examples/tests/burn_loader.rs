//! The burn adapter (feature `burn`): a pipeline as burn's `DataLoader` reads one epoch per
//! `iter`, its slices are disjoint parts of one permutation that cover it, `to_device`
//! makes the batches on the given device; and the example's classifier learns through it,
//! where burn's own loader with as many workers waits on a slow decode.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::data::dataloader::split::split_dataloader;
use burn::data::dataloader::DataLoader;
use burn::prelude::*;
use pipeline_examples::burn_loader::PipelineLoader;
use pipeline_examples::burn_training::{accuracy, train, BurnLoader, BurnOptions};
use pipeline_examples::datasets::{hold_out_every_fifth, write_stripes_dataset, STRIPE_CLASSES};
use pipeline_examples::scratch::TempDir;
use pipeline_runtime::distributed::{ItemKey, Rank, Sampler};
use pipeline_runtime::PipelineBuilder;

/// A batch of keys, as `(epoch, index)`.
type Keys = Vec<(u64, u64)>;

/// A loader over `len` items whose batches are the keys themselves, in order; counts the
/// pipelines it builds.
fn key_loader(len: u64, batch: usize, builds: Arc<AtomicUsize>) -> PipelineLoader<Keys> {
    let sampler = Sampler::new(len, Rank::single()).seed(3);
    PipelineLoader::new(sampler, batch, move |keys, _device| {
        builds.fetch_add(1, Ordering::Relaxed);
        PipelineBuilder::new()
            .continuous_source(keys)
            .pipe(|k: ItemKey| (k.epoch, k.index))
            .aggregate(batch)
            .sink()
            .buffer(2)
            .build()
    })
}

/// One epoch of `loader`, flattened.
fn epoch(loader: &dyn DataLoader<Keys>) -> Keys {
    loader.iter().flat_map(|b| b.unwrap()).collect()
}

fn order(sampler_len: u64, epoch: u64) -> Vec<u64> {
    let sampler = Sampler::new(sampler_len, Rank::single()).seed(3);
    sampler.epoch(epoch).map(|k| k.index).collect()
}

#[test]
fn slices_are_disjoint_parts_of_the_same_permutation_and_cover_it() {
    let builds = Arc::new(AtomicUsize::new(0));
    let loader: Arc<dyn DataLoader<Keys>> = Arc::new(key_loader(50, 4, builds.clone()));
    assert_eq!(loader.num_items(), 50);
    let device = Device::default();
    let parts = split_dataloader(loader.clone(), &[device.clone(), device.clone(), device]);
    let lens: Vec<usize> = parts.iter().map(|p| p.num_items()).collect();
    assert_eq!(lens, [16, 16, 18]);

    let full = order(50, 0);
    let mut seen = Vec::new();
    let mut start = 0;
    for part in &parts {
        let keys = epoch(part.as_ref());
        assert!(keys.iter().all(|&(e, _)| e == 0));
        let indices: Vec<u64> = keys.iter().map(|&(_, i)| i).collect();
        // Each slice is its stretch of the epoch's permutation, in order.
        assert_eq!(indices, full[start..start + indices.len()]);
        start += indices.len();
        seen.extend(indices);
    }
    let distinct: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 50, "every item once");
    assert_eq!(distinct.len(), 50, "disjoint");
    assert_eq!(distinct, (0..50).collect::<HashSet<u64>>(), "covering");
    // And the slices' second epoch is the next permutation, split the same way.
    let second: Vec<u64> = parts
        .iter()
        .flat_map(|p| epoch(p.as_ref()))
        .map(|(e, i)| {
            assert_eq!(e, 1);
            i
        })
        .collect();
    assert_eq!(second, order(50, 1));
    // A slice of a slice is relative to it, and clamped to it.
    let inner = parts[1].slice(2, 100);
    assert_eq!(inner.num_items(), 14);
    // The full loader itself was never iterated: only the three slices built pipelines.
    assert_eq!(builds.load(Ordering::Relaxed), 3);
}

#[test]
fn ranks_split_first_then_each_rank_s_devices() {
    // Two ranks of a launcher, two devices each: four disjoint parts of epoch 0.
    let mut seen = Vec::new();
    for rank in 0..2 {
        let sampler = Sampler::new(41, Rank::new(rank, 2).unwrap()).seed(3);
        let loader: Arc<dyn DataLoader<Keys>> =
            Arc::new(PipelineLoader::new(sampler, 4, |keys, _device| {
                PipelineBuilder::new()
                    .continuous_source(keys)
                    .pipe(|k: ItemKey| (k.epoch, k.index))
                    .aggregate(4)
                    .sink()
                    .build()
            }));
        // 41 items over two ranks: 20 each, the odd one out dropped this epoch.
        assert_eq!(loader.num_items(), 20);
        let device = Device::default();
        for part in split_dataloader(loader, &[device.clone(), device]) {
            assert_eq!(part.num_items(), 10);
            seen.extend(epoch(part.as_ref()).into_iter().map(|(_, i)| i));
        }
    }
    let distinct: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!((seen.len(), distinct.len()), (40, 40), "disjoint");
    assert!(distinct.is_subset(&order(41, 0).into_iter().collect()));
}

#[test]
fn each_iter_is_the_next_epoch_of_one_warm_pipeline() {
    let builds = Arc::new(AtomicUsize::new(0));
    let loader = key_loader(30, 8, builds.clone());
    for e in 0..3 {
        assert_eq!(loader.next_epoch(), e);
        let mut it = loader.iter();
        let mut keys = Keys::new();
        let mut batches = 0;
        for batch in it.by_ref() {
            keys.extend(batch.unwrap());
            batches += 1;
        }
        assert_eq!(batches, 4, "three full batches and the epoch's partial one");
        assert_eq!(it.progress().items_processed, 30);
        assert_eq!(it.progress().items_total, 30);
        assert!(keys.iter().all(|&(epoch, _)| epoch == e));
        let indices: Vec<u64> = keys.iter().map(|&(_, i)| i).collect();
        assert_eq!(indices, order(30, e));
    }
    assert_ne!(
        order(30, 0),
        order(30, 1),
        "epochs are shuffled differently"
    );
    assert_eq!(
        builds.load(Ordering::Relaxed),
        1,
        "one pipeline for every epoch"
    );
}

#[test]
fn an_abandoned_epoch_never_leaks_into_the_next() {
    let builds = Arc::new(AtomicUsize::new(0));
    let loader = key_loader(40, 4, builds.clone());
    let first: Keys = loader.iter().take(2).flat_map(|b| b.unwrap()).collect();
    assert_eq!(first.len(), 8);
    assert_eq!(loader.next_epoch(), 1);
    let keys = epoch(&loader);
    assert!(keys.iter().all(|&(e, _)| e == 1), "{keys:?}");
    assert_eq!(
        keys.iter().map(|&(_, i)| i).collect::<Vec<_>>(),
        order(40, 1)
    );
    assert_eq!(
        builds.load(Ordering::Relaxed),
        2,
        "the abandoned pipeline was replaced"
    );
}

#[test]
fn one_epoch_at_a_time_and_the_statistics_readable_meanwhile() {
    let loader = key_loader(20, 5, Arc::default());
    assert!(loader.stats().is_none());
    assert_eq!(epoch(&loader).len(), 20);
    let first = loader.stats().expect("the statistics of epoch 0");
    assert_eq!(first.consumer.items, 4);
    let mut reading = loader.iter();
    assert!(reading.next().unwrap().is_ok());
    // On the reader's own thread: no deadlock, an error that says why.
    let mut second = loader.iter();
    let error = second.next().unwrap().unwrap_err();
    assert!(error.to_string().contains("being read"), "{error}");
    assert!(second.next().is_none());
    drop(second);
    assert_eq!(
        loader.stats().unwrap().consumer.items,
        4,
        "epoch 0's, meanwhile"
    );
    assert_eq!(reading.by_ref().count(), 3);
    drop(reading);
    assert_eq!(loader.stats().unwrap().consumer.items, 8);
    assert_eq!(loader.next_epoch(), 2);
}

#[test]
fn to_device_makes_the_batches_on_that_device() {
    let seen: Arc<Mutex<Vec<Device>>> = Arc::default();
    let sampler = Sampler::new(12, Rank::single());
    let record = seen.clone();
    let loader = PipelineLoader::new(sampler, 4, move |keys, device| {
        record.lock().unwrap().push(device.clone());
        let device = device.clone();
        PipelineBuilder::new()
            .continuous_source(keys)
            .pipe(|k: ItemKey| k.index as i64)
            .aggregate(4)
            .pipe(move |v: Vec<i64>| {
                let n = v.len();
                Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
            })
            .sink()
            .build()
    });
    let plain = Device::flex();
    let autodiff = Device::flex().autodiff();
    for (target, is_autodiff) in [(&autodiff, true), (&plain, false)] {
        let moved = loader.to_device(target);
        assert_eq!(moved.num_items(), 12);
        let mut total = 0;
        for batch in moved.iter() {
            let batch = batch.unwrap();
            assert_eq!(batch.device(), *target);
            assert_eq!(batch.device().is_autodiff(), is_autodiff);
            total += batch.dims()[0];
        }
        assert_eq!(total, 12);
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.is_autodiff(), is_autodiff);
    }
    // A slice keeps its device.
    let part = loader.to_device(&autodiff).slice(0, 4);
    let batch = part.iter().next().unwrap().unwrap();
    assert!(batch.device().is_autodiff());
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn a_pipeline_that_cannot_be_built_is_an_error_of_the_epoch() {
    let sampler = Sampler::new(10, Rank::single());
    let loader = PipelineLoader::new(sampler, 2, |keys, _device| {
        PipelineBuilder::new()
            .continuous_source(keys)
            .aggregate(2)
            .sink()
            .report_interval(Duration::ZERO)
            .build()
    });
    let mut it = loader.iter();
    let error = it.next().unwrap().unwrap_err();
    assert!(error.to_string().contains("report_interval"), "{error}");
    assert!(it.next().is_none());
    assert_eq!(it.progress().items_processed, 0);
    drop(it);
    assert_eq!(loader.next_epoch(), 0, "the epoch did not start");
}

type Split = (Vec<(PathBuf, u32)>, Vec<(PathBuf, u32)>);

/// A dataset of `n` images in a fresh directory, split 4:1 into training and held-out files.
fn dataset(tag: &str, n: usize) -> (TempDir, Split) {
    let dir = TempDir::new(&format!("pipeline-burn-{tag}-{}", std::process::id())).unwrap();
    let files = write_stripes_dataset(dir.path(), n).unwrap();
    (dir, hold_out_every_fifth(files))
}

#[test]
fn the_classifier_learns_the_stripes_through_the_pipeline_loader() {
    let (_dir, (train_files, held_out)) = dataset("learn", 640);
    let options = BurnOptions {
        steps: 120,
        batch_size: 16,
        ..BurnOptions::default()
    };
    let (model, report) = train(&train_files, &options, BurnLoader::Pipeline).unwrap();
    assert_eq!(report.losses.len(), 120);
    // 512 images in batches of 16: 32 steps an epoch, so the fourth epoch was under way.
    assert_eq!(report.epochs, 4);
    let (first, last) = report.loss_start_end(20);
    // Four classes: an untrained network's loss is about ln 4 = 1.39.
    assert!(first > 1.0, "{first}");
    assert!(last < first * 0.5, "loss {first} → {last}");
    let acc = accuracy(&model, &held_out, &options).unwrap();
    let chance = 1.0 / STRIPE_CLASSES.len() as f64;
    assert!(acc > chance + 0.35, "held-out accuracy {acc}");
    // The pipeline's own view, kept when the last epoch was abandoned: one pipeline handed
    // out every batch.
    let stats = report.stats.as_ref().unwrap();
    assert_eq!(stats.consumer.items, 120);
}

#[test]
fn burn_s_loader_blocks_on_a_slow_decode_that_the_pipeline_overlaps() {
    let (_dir, (train_files, _)) = dataset("slow", 160);
    let options = BurnOptions {
        steps: 8,
        batch_size: 8,
        workers: 1,
        // 8 images × 50 ms: 400 ms of sleep per batch for burn's one worker; the pipeline
        // waits out 32 at once, 50 ms for four batches. Long against the CPU work (64
        // decodes of 32×32 images), so that a busy machine does not blur the difference.
        decode_delay: Duration::from_millis(50),
        ..BurnOptions::default()
    };
    let (_, burn) = train(&train_files, &options, BurnLoader::Burn).unwrap();
    let (_, pipeline) = train(&train_files, &options, BurnLoader::Pipeline).unwrap();
    assert_eq!((burn.losses.len(), pipeline.losses.len()), (8, 8));
    // burn's worker sleeps 3.2 s over the 8 batches, whatever else the machine does.
    assert!(burn.data_wait > Duration::from_millis(2800), "{burn:?}");
    assert!(
        pipeline.data_wait * 2 < burn.data_wait,
        "pipeline waited {:?}, burn's loader {:?}",
        pipeline.data_wait,
        burn.data_wait
    );
}
