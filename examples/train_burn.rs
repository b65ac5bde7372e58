//! The training example on burn: the candle example's stripes classifier, on burn's CPU
//! backend (Flex), its batches from the pipeline through burn's `DataLoader` trait.
//!
//! ```text
//! cargo run -p pipeline-examples --features burn --example train_burn [-- OPTIONS]
//! ```
//!
//! ```text
//! source(the sampler's keys) → decode delay (async, 32) → Dataset::get (W) → aggregate(32)
//!   → Batcher::batch → sink → PipelineLoader::iter → forward, loss, AdamW step
//! ```
//!
//! It writes a labelled dataset into a temporary directory, holds a fifth of it out, trains
//! for `--steps` steps and prints the loss, the held-out accuracy, steps/s and the share of
//! the loop's time spent waiting for batches. It exits non-zero unless the model learns
//! (over at least 100 steps): the loss must fall by more than half and the held-out
//! accuracy be 35 points above chance.
//!
//! Options: `--steps N` (300), `--batch-size N` (32), `--images N` (1280), `--workers W`
//! (2: burn's workers, the pipeline's threads), `--slow-decode MS` (0: add MS of sleep to
//! every image's decode), `--compare` (first train with burn's own `DataLoaderBuilder` over
//! the same dataset and batcher, with W workers, and print both side by side).

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline_examples::burn_training::{accuracy, train, BurnLoader, BurnOptions, BurnReport};
use pipeline_examples::datasets::{self, STRIPE_CLASSES};
use pipeline_examples::progress::print_stats;
use pipeline_examples::scratch::TempDir;

#[derive(Debug)]
struct Args {
    options: BurnOptions,
    images: usize,
    compare: bool,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let dir = TempDir::new(&format!("pipeline-train-burn-{}", std::process::id()))?;
    let t = Instant::now();
    let files = datasets::write_stripes_dataset(dir.path(), args.images)?;
    let (train_files, held_out) = datasets::hold_out_every_fifth(files);
    println!(
        "wrote {} labelled JPEGs ({} classes) in {:.1} s; training on {}, holding out {}",
        args.images,
        STRIPE_CLASSES.len(),
        t.elapsed().as_secs_f64(),
        train_files.len(),
        held_out.len()
    );
    let o = &args.options;
    println!(
        "burn (Flex, CPU): {} steps of {} images at {}×{}, {} loader workers{}",
        o.steps,
        o.batch_size,
        o.size,
        o.size,
        o.workers,
        if o.decode_delay.is_zero() {
            String::new()
        } else {
            format!(", every decode slowed by {} ms", o.decode_delay.as_millis())
        }
    );

    let mut loaders = vec![BurnLoader::Pipeline];
    if args.compare {
        loaders.insert(0, BurnLoader::Burn);
    }
    let mut rows = Vec::new();
    for loader in loaders {
        let (model, report) = train(&train_files, o, loader)?;
        let acc = accuracy(&model, &held_out, o)?;
        if let Some(stats) = &report.stats {
            print_stats(stats);
        }
        rows.push((report, acc));
    }

    println!(
        "\n{:<9} {:>6} {:>7} {:>8} {:>22} {:>16} {:>9}",
        "loader", "steps", "epochs", "steps/s", "data wait per step", "loss first→last", "held-out"
    );
    for (report, acc) in &rows {
        println!("{}", row(report, *acc));
    }
    let of = |loader: BurnLoader| rows.iter().find(|(r, _)| r.loader == loader);
    if let (Some((p, _)), Some((b, _))) = (of(BurnLoader::Pipeline), of(BurnLoader::Burn)) {
        println!(
            "\nthe pipeline trained {:.2}× as fast as burn's loader with {} worker{}",
            p.steps_per_sec() / b.steps_per_sec(),
            o.workers,
            if o.workers == 1 { "" } else { "s" }
        );
    }
    let chance = 1.0 / STRIPE_CLASSES.len() as f64;
    for (report, acc) in &rows {
        let (first, last) = report.loss_start_end(20);
        if report.losses.len() < 100 {
            println!("(too few steps to judge whether the model learns: no check)");
        } else if last >= first * 0.5 || *acc < chance + 0.35 {
            return Err(format!(
                "the model did not learn from {}: loss {first:.3} → {last:.3}, held-out \
                 accuracy {:.1}% (chance {:.0}%)",
                name(report.loader),
                acc * 100.0,
                chance * 100.0
            )
            .into());
        }
    }
    Ok(())
}

fn name(loader: BurnLoader) -> &'static str {
    match loader {
        BurnLoader::Pipeline => "pipeline",
        BurnLoader::Burn => "burn",
    }
}

/// One line of the table.
fn row(report: &BurnReport, acc: f64) -> String {
    let (first, last) = report.loss_start_end(20);
    let per_step = report.data_wait.div_f64(report.losses.len().max(1) as f64);
    format!(
        "{:<9} {:>6} {:>7} {:>8.2} {:>22} {:>16} {:>8.1}%",
        name(report.loader),
        report.losses.len(),
        report.epochs,
        report.steps_per_sec(),
        format!(
            "{} ({:.0}%)",
            ms(per_step),
            report.data_wait_share() * 100.0
        ),
        format!("{first:.3} → {last:.3}"),
        acc * 100.0
    )
}

/// A duration in milliseconds, or microseconds below one.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else {
        format!("{ms:.1} ms")
    }
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
                "error: {e}\nusage: train_burn [--steps N] [--batch-size N] [--images N] \
                 [--workers W] [--slow-decode MS] [--compare]"
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
    let mut args = Args {
        options: BurnOptions::default(),
        images: 1280,
        compare: false,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            match v.parse() {
                Ok(n) if n > 0 || name == "--slow-decode" => Ok(n),
                Ok(_) => Err(format!("{name} must be at least 1")),
                Err(e) => Err(format!("{name} {v}: {e}")),
            }
        };
        let o = &mut args.options;
        match arg.as_str() {
            "--steps" => o.steps = value("--steps")?,
            "--batch-size" => o.batch_size = value("--batch-size")?,
            "--workers" => o.workers = value("--workers")?,
            "--slow-decode" => {
                o.decode_delay = Duration::from_millis(value("--slow-decode")? as u64)
            }
            "--images" => args.images = value("--images")?,
            "--compare" => args.compare = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.images < 10 {
        return Err("--images must be at least 10".into());
    }
    Ok(args)
}
