//! The image-loading pipeline of the examples over `pipeline_runtime::images`: every
//! generated size comes out at the batch's size, and bad files fail only their own item.
//! (The decoder, the crops and the limits are tested in the runtime crate.)

use std::path::{Path, PathBuf};

use pipeline_examples::datasets::write_jpeg_dataset;
use pipeline_examples::image_pipeline::{image_stages, LoaderOptions};
use pipeline_examples::scratch::TempDir;
use pipeline_runtime::images::{self, ImageTransform};
use pipeline_runtime::MaxFailures;

/// A fresh temporary directory for one test, removed on drop.
fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("pipeline-images-{tag}-{}", std::process::id())).unwrap()
}

#[test]
fn every_generated_size_decodes_to_the_target_size() {
    let dir = temp_dir("sizes");
    let paths = write_jpeg_dataset(dir.path(), 6).unwrap();
    let mut source_sizes = Vec::new();
    let eval = LoaderOptions::default().transform;
    for path in &paths {
        let file = images::read(path.clone()).unwrap();
        let header = images::probe(&file.bytes).unwrap();
        source_sizes.push((header.width, header.height));
        let out = eval.apply(&file).unwrap();
        assert_eq!((out.width, out.height), (224, 224), "{}", path.display());
        assert_eq!(out.pixels.len(), 224 * 224 * 3);
    }
    // Downscales, an upscale and a tall image are all covered.
    assert!(source_sizes.contains(&(1024, 768)));
    assert!(source_sizes.iter().any(|&(w, h)| w < 224 && h < 224));
    assert!(source_sizes.iter().any(|&(w, h)| h > w));
}

#[test]
fn the_dataset_is_deterministic() {
    let (a, b) = (temp_dir("det-a"), temp_dir("det-b"));
    let pa = write_jpeg_dataset(a.path(), 4).unwrap();
    let pb = write_jpeg_dataset(b.path(), 4).unwrap();
    for (x, y) in pa.iter().zip(&pb) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
    assert_ne!(
        std::fs::read(&pa[0]).unwrap(),
        std::fs::read(&pa[1]).unwrap()
    );
}

/// Writes the bad files of the failure tests; returns their paths.
fn write_bad_files(dir: &Path, good: &Path) -> Vec<PathBuf> {
    let jpeg = std::fs::read(good).unwrap();
    let mut garbage_after_header = jpeg[..2].to_vec();
    garbage_after_header.extend((0..4000u32).map(|i| (i * 31 % 251) as u8));
    // A decompression bomb: the good file's frame header rewritten to declare 16000x16000.
    let mut bomb = jpeg.clone();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3E, 0x80]);
    let bad = [
        ("bomb.jpg", bomb),
        (
            "notes.jpg",
            b"these are not the pixels you are looking for".to_vec(),
        ),
        ("empty.jpg", Vec::new()),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec()),
        ("corrupt.jpg", garbage_after_header),
    ];
    bad.into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = temp_dir("bad");
    let good = write_jpeg_dataset(dir.path(), 1).unwrap();
    let mut bad = write_bad_files(dir.path(), &good[0]);
    bad.push(dir.path().join("missing.jpg"));
    for path in &bad {
        let eval = ImageTransform::center_crop(256, 224);
        let err = images::read(path.clone())
            .and_then(|file| eval.apply(&file))
            .expect_err("a bad file must not decode");
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(
            message.len() > path.display().to_string().len() + 2,
            "{message}"
        );
    }
}

#[test]
fn bad_files_fail_their_items_and_the_run_goes_on() {
    let dir = temp_dir("run");
    let good = write_jpeg_dataset(dir.path(), 10).unwrap();
    let bad = write_bad_files(dir.path(), &good[0]);
    let mut paths: Vec<PathBuf> = good.iter().chain(&bad).cloned().collect();
    paths.sort();
    let options = LoaderOptions {
        batch_size: 4,
        decode_concurrency: 2,
        ..LoaderOptions::default()
    };
    let mut pipeline = image_stages(paths, options)
        .sink()
        .buffer(2)
        .num_threads(2)
        .max_failures(MaxFailures::Count(bad.len() as u64))
        .build()
        .unwrap();
    let mut images = 0;
    for batch in pipeline.by_ref() {
        let batch = batch.expect("within the failure budget");
        assert_eq!(batch.data.len(), batch.images * 3 * 224 * 224);
        images += batch.images;
    }
    pipeline.stop().unwrap();
    assert_eq!(images, good.len());
    let failures: u64 = pipeline.stats().stages.iter().map(|s| s.failures).sum();
    assert_eq!(failures, bad.len() as u64);
}

#[test]
fn more_bad_files_than_the_budget_end_the_run_with_an_error() {
    let dir = temp_dir("budget");
    let good = write_jpeg_dataset(dir.path(), 4).unwrap();
    let bad = write_bad_files(dir.path(), &good[0]);
    let paths: Vec<PathBuf> = bad.iter().chain(&good).cloned().collect();
    let mut pipeline = image_stages(paths, LoaderOptions::default())
        .sink()
        .buffer(2)
        .num_threads(2)
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let outcome: Result<Vec<_>, _> = pipeline.by_ref().collect();
    let err = outcome.expect_err("four bad files exceed a budget of one");
    assert!(!err.to_string().is_empty());
}
