//! The image module and the image-loading pipeline: sizes, accuracy of the reduced-scale
//! decode, normalisation, and bad files failing only their own item.

use std::path::{Path, PathBuf};

use pipeline_examples::image_pipeline::{image_stages, LoaderOptions};
use pipeline_examples::images::{
    self, decode_full, decode_resize, resize_bilinear, to_normalised_chw, write_jpeg_dataset,
    RgbImage, IMAGENET_MEAN, IMAGENET_STD,
};
use pipeline_examples::scratch::TempDir;
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
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        let full = decode_full(&bytes).unwrap();
        source_sizes.push((full.width, full.height));
        let out = decode_resize(&bytes, 224, 224).unwrap();
        assert_eq!((out.width, out.height), (224, 224), "{}", path.display());
        assert_eq!(out.pixels.len(), 224 * 224 * 3);
    }
    // Downscales, an upscale and a tall image are all covered.
    assert!(source_sizes.contains(&(1024, 768)));
    assert!(source_sizes.iter().any(|&(w, h)| w < 224 && h < 224));
    assert!(source_sizes.iter().any(|&(w, h)| h > w));
}

/// The fast path (a reduced DCT scale with the `turbojpeg` feature) must give the same
/// picture as a full decode followed by the bilinear resize, within a small tolerance.
#[test]
fn fast_decode_matches_full_decode_then_resize() {
    let dir = temp_dir("accuracy");
    let paths = write_jpeg_dataset(dir.path(), 12).unwrap();
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        let fast = decode_resize(&bytes, 224, 224).unwrap();
        let reference = resize_bilinear(&decode_full(&bytes).unwrap(), 224, 224).unwrap();
        let diffs: Vec<u8> = fast
            .pixels
            .iter()
            .zip(&reference.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        let large = diffs.iter().filter(|&&d| d > 32).count() as f64 / diffs.len() as f64;
        assert!(mean < 3.0, "{}: mean |diff| {mean:.2}", path.display());
        assert!(
            large < 0.01,
            "{}: {:.2}% of values off by > 32",
            path.display(),
            large * 100.0
        );
    }
}

#[test]
fn resize_keeps_a_flat_colour_and_preserves_a_gradient_direction() {
    let flat = RgbImage {
        width: 400,
        height: 300,
        pixels: [10u8, 120, 250].repeat(400 * 300),
    };
    let out = resize_bilinear(&flat, 224, 224).unwrap();
    assert!(out.pixels.chunks_exact(3).all(|p| p == [10, 120, 250]));

    let ramp = RgbImage {
        width: 256,
        height: 8,
        pixels: (0..8)
            .flat_map(|_| (0..256u32).flat_map(|x| [x as u8; 3]))
            .collect(),
    };
    let out = resize_bilinear(&ramp, 64, 4).unwrap();
    let row: Vec<u8> = out.pixels[..64 * 3].iter().step_by(3).copied().collect();
    assert!(row.windows(2).all(|w| w[0] < w[1]), "{row:?}");
}

#[test]
fn normalised_tensor_is_chw_with_imagenet_statistics() {
    // Two pixels: pure red, then mid grey.
    let image = RgbImage {
        width: 2,
        height: 1,
        pixels: vec![255, 0, 0, 128, 128, 128],
    };
    let t = to_normalised_chw(&image);
    assert_eq!(t.len(), 6);
    let expect = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    let want = [
        expect(255.0, 0),
        expect(128.0, 0),
        expect(0.0, 1),
        expect(128.0, 1),
        expect(0.0, 2),
        expect(128.0, 2),
    ];
    for (got, want) in t.iter().zip(want) {
        assert!((got - want).abs() < 1e-5, "{t:?} vs {want}");
    }
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
    let bad = [
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
        let err = images::load(path, 224, 224).expect_err("a bad file must not decode");
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
