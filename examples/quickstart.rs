//! Quickstart: read and parse a directory of small text files with a pipeline.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example quickstart [-- --files N] [--trace FILE]
//! ```
//!
//! The program writes `N` (default 2,000) pseudo-random text files into a temporary
//! directory, then runs
//!
//! ```text
//! source(paths) → read_file (8 at a time) → parse (4 at a time) → aggregate(64) → summarise → sink
//! ```
//!
//! written with the builder: `read_file` is a `try_pipe` stage (a failed read fails that file
//! only), each stage's options follow it (`.try_pipe(read_file).concurrency(8)`), and the
//! pipeline-wide settings follow `.sink()`.
//!
//! and checks that every file was read exactly once: the file count, the byte, line and word
//! totals and the sum of the files' hashes must equal what was written. While it runs, a
//! progress bar (on a terminal) shows the files done and the current bottleneck; at the end
//! it prints the run's throughput and the statistics table (stages, queues, bottleneck),
//! removes the directory, and exits non-zero if the check fails. Set `RUST_LOG=info` to see
//! the pipeline's own reports, and `--trace FILE` to write a Chrome/Perfetto trace.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use pipeline_examples::progress::Progress;
use pipeline_examples::scratch::{TempDir, XorShift};
use pipeline_runtime::{MaxFailures, PipelineBuilder};

/// What the `parse` stage finds in one file (and what the generator expects it to find).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    files: u64,
    bytes: u64,
    lines: u64,
    words: u64,
    /// Sum of the files' FNV-1a hashes: a duplicated or missing file changes it.
    hash_sum: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.words += other.words;
        self.hash_sum = self.hash_sum.wrapping_add(other.hash_sum);
    }
}

/// Stage 1 (I/O bound): a file's bytes. An `Err` would fail the item, not the pipeline.
fn read_file(path: PathBuf) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Stage 2 (CPU bound): count lines and words and hash the contents.
fn parse(bytes: Vec<u8>) -> Totals {
    Totals {
        files: 1,
        bytes: bytes.len() as u64,
        lines: bytes.iter().filter(|&&b| b == b'\n').count() as u64,
        words: bytes
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .count() as u64,
        hash_sum: fnv1a(&bytes),
    }
}

/// Stage 3: one summary per batch of parsed files.
fn summarise(batch: Vec<Totals>) -> Totals {
    let mut sum = Totals::default();
    for t in &batch {
        sum.add(t);
    }
    sum
}

fn run(num_files: usize) -> Result<(), Box<dyn Error>> {
    let dir = TempDir::new(&format!("pipeline-quickstart-{}", std::process::id()))?;
    let (paths, expected) = write_dataset(dir.path(), num_files)?;
    println!(
        "wrote {} files ({} bytes) to {}",
        expected.files,
        expected.bytes,
        dir.path().display()
    );

    let started = Instant::now();
    let mut pipeline = PipelineBuilder::new()
        .source(paths)
        .try_pipe(read_file)
        .concurrency(8)
        .pipe(parse)
        .concurrency(4)
        .aggregate(64)
        .pipe(summarise)
        .sink()
        .buffer(4)
        .num_threads(4)
        .max_failures(MaxFailures::Count(0)) // any failed item ends the run with an error
        .report_interval(Duration::from_secs(1)) // logged at INFO (`RUST_LOG=info`)
        .build()?;

    let mut progress = Progress::new(Some(num_files as u64), "files");
    let mut got = Totals::default();
    while let Some(batch) = pipeline.next() {
        let batch = batch?;
        progress.update(batch.files, &pipeline);
        got.add(&batch);
    }
    pipeline.stop()?;
    let wall = started.elapsed().as_secs_f64();

    println!(
        "processed {} files, {} bytes in {:.3} s: {:.0} files/s",
        got.files,
        got.bytes,
        wall,
        got.files as f64 / wall
    );
    progress.finish(&pipeline);

    if got != expected {
        return Err(format!("wrong result: expected {expected:?}, got {got:?}").into());
    }
    println!("ok: every file was read and parsed exactly once");
    Ok(())
}

fn main() -> ExitCode {
    let (num_files, trace_file) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}\nusage: quickstart [--files N] [--trace FILE]");
            return ExitCode::from(2);
        }
    };
    let _trace = pipeline_examples::trace::init("warn", trace_file.as_deref());
    match run(num_files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<(usize, Option<PathBuf>), String> {
    let mut num_files = 2_000;
    let mut trace_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--files" => {
                let value = args.next().ok_or("--files needs a value")?;
                num_files = value.parse().map_err(|e| format!("--files {value}: {e}"))?;
            }
            "--trace" => {
                trace_file = Some(PathBuf::from(args.next().ok_or("--trace needs a file")?))
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok((num_files, trace_file))
}

/// Writes `n` files of random lowercase words (deterministic: a fixed seed) and returns
/// their paths and the totals that parsing them must give.
fn write_dataset(dir: &Path, n: usize) -> std::io::Result<(Vec<PathBuf>, Totals)> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut paths = Vec::with_capacity(n);
    let mut expected = Totals::default();
    for i in 0..n {
        let mut text = Vec::new();
        for _line in 0..1 + rng.below(20) {
            for word in 0..1 + rng.below(12) {
                if word > 0 {
                    text.push(b' ');
                }
                text.extend((0..1 + rng.below(8)).map(|_| b'a' + rng.below(26) as u8));
            }
            text.push(b'\n');
        }
        let path = dir.join(format!("file-{i:05}.txt"));
        std::fs::write(&path, &text)?;
        expected.add(&parse(text));
        paths.push(path);
    }
    Ok((paths, expected))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
