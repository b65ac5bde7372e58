//! Image loading: JPEG files → batches of normalised `f32` tensors, the job a training loop's
//! data loader does.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example image_loading [-- OPTIONS] [DIR]
//! ```
//!
//! ```text
//! source(files) → read (8 at a time) → decode + resize the shorter side to 256 + centre crop
//!   224×224 (C at a time) → aggregate(batch) → collate to normalised f32 CHW → sink
//! ```
//!
//! With no `DIR` it writes a small deterministic dataset of JPEGs of varied sizes into a
//! temporary directory first. A file that cannot be read or decoded fails its own item (logged
//! with its path and the reason) and the run goes on, up to `--max-failures` failed files.
//! It shows a progress bar, then prints images/s and the per-stage statistics.
//!
//! Options: `--batch-size N` (32), `--concurrency C` (decode stages; default: the cores),
//! `--threads T` (pipeline threads; default `C` + 2), `--epochs E` (1), `--images N`
//! (generated dataset size; 512), `--max-failures N` (10), `--report FILE` (write the picture
//! of the run, an SVG: see `Pipeline::write_report`).
//!
//! WebDataset shards: `--write-shards DIR_OR_URL` writes the dataset (generated, or `DIR`)
//! as tar shards of `--per-shard N` (64) images there and exits; `--shards DIR_OR_URL`
//! reads the images from the shards there instead of from files. A URL is `s3://bucket/prefix`
//! (build with `--features s3`; endpoint and credentials from `AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) or
//! `file:///dir`; anything else is a local directory.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use pipeline_examples::datasets::write_jpeg_dataset;
use pipeline_examples::image_pipeline::{
    image_stages, shard_image_stages, LoaderOptions, TensorBatch,
};
use pipeline_examples::progress::Progress;
use pipeline_examples::scratch::TempDir;
use pipeline_examples::shards::write_image_shards;
use pipeline_runtime::storage::{block_on, Filter, Store};
use pipeline_runtime::{MaxFailures, StageBuilder};

#[derive(Debug)]
struct Args {
    dir: Option<PathBuf>,
    batch_size: usize,
    concurrency: usize,
    threads: Option<usize>,
    epochs: usize,
    images: usize,
    max_failures: u64,
    report: Option<PathBuf>,
    write_shards: Option<String>,
    shards: Option<String>,
    per_shard: usize,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if let Some(url) = &args.shards {
        return run_from_shards(&args, url);
    }
    let generated;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            generated = TempDir::new(&format!("pipeline-images-{}", std::process::id()))?;
            let t = Instant::now();
            write_jpeg_dataset(generated.path(), args.images)?;
            println!(
                "wrote {} JPEG files to {} in {:.1} s",
                args.images,
                generated.path().display(),
                t.elapsed().as_secs_f64()
            );
            generated.path().to_path_buf()
        }
    };
    let files = list_files(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if files.is_empty() {
        return Err(format!("no files in {}", dir.display()).into());
    }
    if let Some(url) = &args.write_shards {
        let store = Store::open(url)?;
        let t = Instant::now();
        let (shards, bytes) = write_image_shards(&files, &store, args.per_shard)?;
        println!(
            "wrote {} files as {} shards ({:.1} MB) to {} in {:.1} s",
            files.len(),
            shards.len(),
            bytes as f64 / 1e6,
            store.url(),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let total = files.len() * args.epochs;
    println!(
        "loading {} files × {} epoch(s) from {} with {}",
        files.len(),
        args.epochs,
        dir.display(),
        pipeline_runtime::images::DECODER
    );

    let options = LoaderOptions {
        batch_size: args.batch_size,
        decode_concurrency: args.concurrency,
        ..LoaderOptions::default()
    };
    let source = (0..args.epochs).flat_map(move |_| files.clone());
    let started = Instant::now();
    let stages = image_stages(source, options);
    load(&args, stages, total, started)
}

/// Reads the images from the WebDataset shards at `url` (`--shards`).
fn run_from_shards(args: &Args, url: &str) -> Result<(), Box<dyn Error>> {
    let store = Store::open(url)?;
    let shards = block_on(store.list(&Filter::suffix(".tar")))?;
    if shards.is_empty() {
        return Err(format!("no .tar shards in {}", store.url()).into());
    }
    let per_epoch = shards.len();
    println!(
        "loading {per_epoch} shards × {} epoch(s) from {} with {}",
        args.epochs,
        store.url(),
        pipeline_runtime::images::DECODER
    );
    let options = LoaderOptions {
        batch_size: args.batch_size,
        decode_concurrency: args.concurrency,
        read_concurrency: 4,
        ..LoaderOptions::default()
    };
    // The images in the shards are not known before reading them: no total for the bar.
    let source: Vec<_> = (0..args.epochs).flat_map(|_| shards.clone()).collect();
    let started = Instant::now();
    let stages = shard_image_stages(&store, source, options);
    load(args, stages, 0, started)?;
    let counts = store.counters().snapshot();
    println!(
        "storage: {} requests, {:.1} MB, {} retries, {} failed reads",
        counts.requests,
        counts.bytes as f64 / 1e6,
        counts.retries,
        counts.failures
    );
    Ok(())
}

/// Runs the loader to the end; `total` (the number of images, if known) checks that every
/// one was loaded or failed.
fn load(
    args: &Args,
    stages: StageBuilder<TensorBatch>,
    total: usize,
    started: Instant,
) -> Result<(), Box<dyn Error>> {
    // GPU transfer: with the `cuda` feature and a device present, the stage that copies each
    // batch through pinned host memory to the device goes here (see `docs/src/gpu.md` and
    // `examples/gpu_transfer.rs`); the consumer below then receives device tensors instead
    // of host ones. Not wired in yet: this example runs on machines without a GPU.
    let mut pipeline = stages
        .sink()
        .buffer(4)
        .num_threads(args.threads.unwrap_or(args.concurrency + 2))
        .max_failures(MaxFailures::Count(args.max_failures))
        .build()?;

    let mut progress = Progress::new((total > 0).then_some(total as u64), "images");
    let (mut loaded, mut batches, mut checksum) = (0usize, 0usize, 0.0f64);
    while let Some(batch) = pipeline.next() {
        let batch: TensorBatch = batch?;
        // Stand-in for the training step: touch the data so that nothing is optimised away.
        checksum += batch
            .data
            .iter()
            .step_by(997)
            .map(|&v| f64::from(v))
            .sum::<f64>();
        loaded += batch.images;
        batches += 1;
        progress.update(batch.images as u64, &pipeline);
    }
    pipeline.stop()?;
    let wall = started.elapsed().as_secs_f64();

    let stats = pipeline.stats();
    let failed: u64 = stats.stages.iter().map(|s| s.failures).sum();
    println!(
        "{loaded} images in {batches} batches of up to {} ({failed} failed) in {wall:.2} s: \
         {:.0} images/s (checksum {checksum:.3})",
        args.batch_size,
        loaded as f64 / wall,
    );
    progress.finish(&pipeline);
    if let Some(path) = &args.report {
        pipeline.write_report(path)?;
        println!("wrote the report to {}", path.display());
    }
    if total > 0 && loaded as u64 + failed != total as u64 {
        return Err(format!("{total} files, but {loaded} loaded and {failed} failed").into());
    }
    Ok(())
}

/// The regular files of `dir`, sorted (any name: a non-JPEG file fails like a corrupt one).
fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "error: {e}\nusage: image_loading [--batch-size N] [--concurrency C] \
                 [--threads T] [--epochs E] [--images N] [--max-failures N] [--report FILE] \
                 [--write-shards DIR_OR_URL [--per-shard N]] [--shards DIR_OR_URL] [DIR]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args {
        dir: None,
        batch_size: 32,
        concurrency: cores,
        threads: None,
        epochs: 1,
        images: 512,
        max_failures: 10,
        report: None,
        write_shards: None,
        shards: None,
        per_shard: 64,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            match v.parse() {
                Ok(n) if n > 0 || name == "--max-failures" => Ok(n),
                Ok(_) => Err(format!("{name} must be at least 1")),
                Err(e) => Err(format!("{name} {v}: {e}")),
            }
        };
        match arg.as_str() {
            "--batch-size" => args.batch_size = value("--batch-size")?,
            "--concurrency" => args.concurrency = value("--concurrency")?,
            "--threads" => args.threads = Some(value("--threads")?),
            "--epochs" => args.epochs = value("--epochs")?,
            "--images" => args.images = value("--images")?,
            "--max-failures" => args.max_failures = value("--max-failures")? as u64,
            "--report" => {
                args.report = Some(PathBuf::from(it.next().ok_or("--report needs a file")?))
            }
            "--per-shard" => args.per_shard = value("--per-shard")?,
            "--write-shards" => {
                args.write_shards = Some(it.next().ok_or("--write-shards needs a value")?)
            }
            "--shards" => args.shards = Some(it.next().ok_or("--shards needs a value")?),
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            dir if args.dir.is_none() => args.dir = Some(PathBuf::from(dir)),
            extra => return Err(format!("unexpected argument `{extra}`")),
        }
    }
    Ok(args)
}
