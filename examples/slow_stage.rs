//! Finding the bottleneck: a pipeline with one deliberately slow stage.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example slow_stage [-- --items N] [--trace FILE]
//! ```
//!
//! ```text
//! source → decode (4 at a time) → resize (1 at a time, 4 ms each) → normalize (4) → aggregate(16) → sink
//! ```
//!
//! `resize` handles one item at a time and sleeps 4 ms per item, so it caps the pipeline at
//! about 250 items/s however fast the other stages are. The periodic reports (every
//! 500 ms, through `tracing`), the progress bar and the final table all say so: `resize` is
//! busy nearly all the time, the queue in front of it stays full and the one after it
//! stays empty. The program exits non-zero if the statistics point anywhere else. Raise
//! `resize`'s concurrency and the bottleneck moves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pipeline_examples::progress::Progress;
use pipeline_runtime::PipelineBuilder;

/// Fast CPU work: a few hundred nanoseconds per item.
fn decode(x: u64) -> Vec<u8> {
    x.to_le_bytes().repeat(16)
}

/// The deliberately slow stage.
fn resize(bytes: Vec<u8>) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(4));
    bytes
}

/// Fast again.
fn normalize(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn main() -> ExitCode {
    let (items, trace_file) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}\nusage: slow_stage [--items N] [--trace FILE]");
            return ExitCode::from(2);
        }
    };
    // The pipeline's statistics reports are INFO events of target `pipeline_runtime::stats`.
    let _trace =
        pipeline_examples::trace::init("warn,pipeline_runtime::stats=info", trace_file.as_deref());
    let mut pipeline = match PipelineBuilder::new()
        .source(0..items)
        .pipe(decode)
        .concurrency(4)
        .pipe(resize)
        .pipe(normalize)
        .concurrency(4)
        .aggregate(16)
        .sink()
        .buffer(4)
        .num_threads(4)
        .report_interval(Duration::from_millis(500))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut progress = Progress::new(Some(items), "items");
    while let Some(batch) = pipeline.next() {
        match batch {
            Ok(batch) => progress.update(batch.len() as u64, &pipeline),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let stats = pipeline.stats();
    progress.finish(&pipeline);
    match stats.bottleneck() {
        Some(stage) if stage.name == "resize" => {
            println!("ok: the statistics name `resize` as the bottleneck");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "error: expected `resize` as the bottleneck, the statistics say {:?}",
                other.map(|s| &s.name)
            );
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<(u64, Option<PathBuf>), String> {
    let mut items = 500;
    let mut trace_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--items" => {
                let value = args.next().ok_or("--items needs a value")?;
                items = value.parse().map_err(|e| format!("--items {value}: {e}"))?;
            }
            "--trace" => {
                trace_file = Some(PathBuf::from(args.next().ok_or("--trace needs a file")?))
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok((items, trace_file))
}
