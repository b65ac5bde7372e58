//! The training example's library (feature `candle`): the classifier learns the stripes'
//! direction from images fed by the pipeline, the inline loader trains too, and a slowed
//! decode stage shows in the trainer's wait.

use std::path::PathBuf;
use std::time::Duration;

use pipeline_examples::datasets::{hold_out_every_fifth, write_stripes_dataset, STRIPE_CLASSES};
use pipeline_examples::scratch::TempDir;
use pipeline_examples::training::{accuracy, shuffled_epochs, train, Loader, TrainOptions};

type Split = (Vec<(PathBuf, u32)>, Vec<(PathBuf, u32)>);

/// A dataset of `n` images in a fresh directory, split 4:1 into training and held-out files.
fn dataset(tag: &str, n: usize) -> (TempDir, Split) {
    let dir = TempDir::new(&format!("pipeline-train-{tag}-{}", std::process::id())).unwrap();
    let files = write_stripes_dataset(dir.path(), n).unwrap();
    (dir, hold_out_every_fifth(files))
}

#[test]
fn the_classifier_learns_the_stripes_from_the_pipeline() {
    let (_dir, (train_files, held_out)) = dataset("learn", 640);
    let mut options = TrainOptions {
        steps: 120,
        ..TrainOptions::default()
    };
    options.loader.batch_size = 16;
    let (model, report) = train(&train_files, &options, Loader::Pipeline).unwrap();
    assert_eq!(report.losses.len(), 120);
    let (first, last) = report.loss_start_end(20);
    // Four classes: an untrained network's loss is about ln 4 = 1.39.
    assert!(first > 1.0, "{first}");
    assert!(last < first * 0.5, "loss {first} → {last}");
    let acc = accuracy(&model, &held_out, &options).unwrap();
    let chance = 1.0 / STRIPE_CLASSES.len() as f64;
    assert!(acc > chance + 0.35, "held-out accuracy {acc}");
    // The pipeline's own view of the run: every batch handed to the trainer was timed.
    let stats = report.stats.as_ref().unwrap();
    assert_eq!(stats.consumer.items, 120);
    assert_eq!(stats.consumer.wait_total, report.data_wait);
    assert!(report
        .report_svg
        .as_ref()
        .unwrap()
        .contains("data-panel=\"consumer\""));
}

#[test]
fn the_inline_loader_trains_and_counts_its_loading_as_waiting() {
    let (_dir, (train_files, _)) = dataset("inline", 80);
    let mut options = TrainOptions {
        steps: 8,
        ..TrainOptions::default()
    };
    options.loader.batch_size = 8;
    let (_, report) = train(&train_files, &options, Loader::Inline).unwrap();
    assert_eq!(report.losses.len(), 8);
    assert!(report.losses.iter().all(|l| l.is_finite()));
    assert!(report.stats.is_none());
    // Loading inline is time the step does not get.
    assert!(report.data_wait > Duration::ZERO && report.data_wait < report.wall);
}

#[test]
fn a_slow_decode_stage_starves_the_trainer() {
    let (_dir, (train_files, _)) = dataset("slow", 80);
    let mut options = TrainOptions {
        steps: 6,
        ..TrainOptions::default()
    };
    options.loader.batch_size = 8;
    let (_, fast) = train(&train_files, &options, Loader::Pipeline).unwrap();
    // 8 images × 100 ms over 2 lanes: 400 ms of loading per batch, several steps' worth
    // even on a loaded machine.
    options.loader.decode_delay = Duration::from_millis(100);
    let (_, slow) = train(&train_files, &options, Loader::Pipeline).unwrap();
    let (fast, slow) = (fast.stats.unwrap(), slow.stats.unwrap());
    assert!(
        slow.consumer.wait_share() > 0.3,
        "the trainer should wait most of the time:\n{slow}"
    );
    assert!(
        slow.consumer.wait_share() > fast.consumer.wait_share(),
        "slowed:\n{slow}\nnot slowed:\n{fast}"
    );
    assert!(slow.consumer.wait.mean > fast.consumer.wait.mean);
    assert_eq!(
        slow.bottleneck().map(|s| s.name.as_str()),
        Some("decode+resize"),
        "{slow}"
    );
}

#[test]
fn every_epoch_is_a_new_order_of_the_same_files() {
    let files: Vec<(PathBuf, u32)> = (0..10)
        .map(|i| (PathBuf::from(format!("{i}")), i))
        .collect();
    let order: Vec<u32> = shuffled_epochs(files, 3, 25).map(|(_, l)| l).collect();
    assert_eq!(order.len(), 25);
    let mut first: Vec<u32> = order[..10].to_vec();
    let second: Vec<u32> = order[10..20].to_vec();
    assert_ne!(first, second, "epochs are shuffled differently");
    first.sort_unstable();
    assert_eq!(first, (0..10).collect::<Vec<u32>>());
}
