//! W6r: W6's image work split into stages — read → decode → resize → aggregate(32) →
//! collate — run three ways, side by side:
//!
//! * `W6.region.p2`: the five stages as one process region in a `ProcessPool` of 2: only
//!   paths enter the workers and collated batches leave them;
//! * `W6.stages.p2`: the same stages as per-stage process stages on a pool of 2 (the batch
//!   is formed in the parent): every value between two stages crosses the process boundary;
//! * `W6.threads.c2`: the same stages on threads (concurrency 2, 2 threads).
//!
//! The images are `--data-dir` (W6's `bench-data/jpeg`) when it exists; otherwise 256
//! JPEGs of W6's generator's sizes are written once into a temporary directory
//! (`pipeline-w6r-jpeg`), and the output says which (`"data"`). `--n` is the number of
//! images read (the files, repeated; default 512). The pixel sum of the batches is the same
//! for every variant.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pipeline_examples::datasets;
use pipeline_runtime::images::{self, EncodedImage, Limits};
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::{process_fn, process_region, PipelineBuilder, StageBuilder};
use serde::{Deserialize, Serialize};

use super::{check, Outcome};

const SIDE: u32 = 224;
const BATCH: usize = 32;
/// Files generated when no data directory is there.
const GENERATED: usize = 256;

/// A file's bytes (one block on the wire).
#[derive(Serialize, Deserialize)]
pub(crate) struct Encoded(#[serde(with = "serde_bytes")] Vec<u8>);

/// An RGB image (pixels as one block on the wire).
#[derive(Serialize, Deserialize)]
pub(crate) struct Image {
    width: u32,
    height: u32,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

/// A collated batch: `count` images of 224×224×3, back to back.
#[derive(Serialize, Deserialize)]
pub(crate) struct Collated {
    count: u32,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

fn read(path: PathBuf) -> Result<Encoded, String> {
    std::fs::read(&path)
        .map(Encoded)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn decode(file: Encoded) -> Result<Image, String> {
    let image = images::decode(&EncodedImage::new("image", file.0), &Limits::default())
        .map_err(|e| e.to_string())?;
    Ok(Image {
        width: image.width,
        height: image.height,
        pixels: image.pixels,
    })
}

fn resize(image: Image) -> Result<Image, String> {
    let full = images::Image {
        width: image.width,
        height: image.height,
        pixels: image.pixels,
    };
    let small = images::resize(&full, SIDE, SIDE)?;
    Ok(Image {
        width: small.width,
        height: small.height,
        pixels: small.pixels,
    })
}

fn collate(batch: Vec<Image>) -> Collated {
    let mut pixels = Vec::with_capacity(batch.len() * (SIDE * SIDE * 3) as usize);
    for image in &batch {
        pixels.extend_from_slice(&image.pixels);
    }
    Collated {
        count: batch.len() as u32,
        pixels,
    }
}

/// The whole region: what each worker runs as its nested pipeline.
fn w6_region(paths: StageBuilder<PathBuf>) -> StageBuilder<Collated> {
    paths
        .try_pipe(read)
        .try_pipe(decode)
        .try_pipe(resize)
        .aggregate(BATCH)
        .pipe(collate)
}

process_fn!(read, decode, resize, collate);
process_region!(w6_region);

/// The data directory's `img_*.jpg` files, or generated ones; and which it was.
fn files(data_dir: Option<&Path>) -> Result<(Vec<PathBuf>, String), String> {
    let dir = data_dir.map_or_else(|| PathBuf::from("bench-data/jpeg"), Path::to_path_buf);
    let listed = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("img_") && n.ends_with(".jpg"))
        });
        files.sort();
        files
    };
    let found = listed(&dir);
    if !found.is_empty() {
        return Ok((found, format!("\"{}\"", dir.display())));
    }
    let tmp = std::env::temp_dir().join("pipeline-w6r-jpeg");
    let mut generated = listed(&tmp);
    if generated.len() != GENERATED {
        generated = datasets::write_jpeg_dataset(&tmp, GENERATED).map_err(|e| e.to_string())?;
    }
    Ok((
        generated,
        format!("\"generated: {GENERATED} JPEGs in {}\"", tmp.display()),
    ))
}

/// Which way the stages run.
#[derive(Clone, Copy)]
pub(crate) enum Variant {
    Region,
    Stages,
    Threads,
}

pub(crate) fn run(
    data_dir: Option<&Path>,
    n: Option<u64>,
    variant: Variant,
) -> Result<Outcome, String> {
    let (files, data) = files(data_dir)?;
    let n = n.unwrap_or(2 * files.len() as u64) as usize;
    let paths: Vec<PathBuf> = files.iter().cycle().take(n).cloned().collect();
    for f in &files {
        black_box(std::fs::read(f).map_err(|e| e.to_string())?); // warm the page cache
    }
    let pool = match variant {
        Variant::Threads => None,
        // Started before the clock, like a pool a training job builds once.
        _ => Some(
            ProcessPool::builder()
                .num_workers(2)
                .name("w6r")
                .build()
                .map_err(|e| e.to_string())?,
        ),
    };
    let t0 = Instant::now();
    let source = PipelineBuilder::new().source(paths);
    let chain = match (variant, &pool) {
        (Variant::Region, Some(pool)) => source.process_region(w6_region).executor(pool),
        (Variant::Stages, Some(pool)) => source
            .process_try_pipe(read)
            .concurrency(2)
            .executor(pool)
            .process_try_pipe(decode)
            .concurrency(2)
            .executor(pool)
            .process_try_pipe(resize)
            .concurrency(2)
            .executor(pool)
            .aggregate(BATCH)
            .process_pipe(collate)
            .concurrency(2)
            .executor(pool),
        _ => source
            .try_pipe(read)
            .concurrency(2)
            .try_pipe(decode)
            .concurrency(2)
            .try_pipe(resize)
            .concurrency(2)
            .aggregate(BATCH)
            .pipe(collate)
            .concurrency(2),
    };
    let mut pipeline = chain
        .sink()
        .buffer(4)
        .num_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut images, mut pixel_sum) = (0usize, 0u64);
    for batch in pipeline.by_ref() {
        let batch = batch.map_err(|e| e.to_string())?;
        check(
            batch.pixels.len() == batch.count as usize * (SIDE * SIDE * 3) as usize,
            "224x224 RGB batch",
        )?;
        images += batch.count as usize;
        pixel_sum += batch.pixels.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    let stats = pipeline.stats();
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(images == n, "image count")?;
    let bottleneck = stats
        .busiest_stage()
        .map_or_else(|| "null".to_owned(), |s| format!("\"{}\"", s.name));
    Ok(Outcome {
        n_items: n as u64,
        wall,
        extra: vec![
            ("pixel_sum", pixel_sum.to_string()),
            ("busiest_stage", bottleneck),
            ("data", data),
        ],
    })
}
