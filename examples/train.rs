//! A training loop on the pipeline: a small convolutional classifier (candle, on the CPU)
//! learns which way the stripes run in generated JPEG images, fed by the image pipeline.
//!
//! ```text
//! cargo run --release -p pipeline-examples --features candle --example train [-- OPTIONS]
//! ```
//!
//! ```text
//! source(shuffled files) → read (4) → decode + resize to 32×32 (2)
//!   → aggregate(32) → collate (normalised f32 CHW) → sink → Tensor::from_vec → forward, loss, AdamW step
//! ```
//!
//! It writes a labelled dataset into a temporary directory, holds a fifth of it out, trains
//! for `--steps` steps and prints the loss, the held-out accuracy, steps/s and how long the
//! training loop waited for data (the pipeline's `ConsumerStats`), with the statistics
//! table naming the bottleneck.
//!
//! Options: `--steps N` (300), `--batch-size N` (32), `--images N` (1280), `--threads T`
//! (3), `--decode-concurrency C` (2), `--slow-decode MS` (0: add MS of sleep to every
//! decode, to watch the loader starve the trainer), `--compare` (also train with a plain
//! loop that loads each batch itself before the step, first, and print both side by side),
//! `--report FILE` (write the picture of the pipeline's run, an SVG).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline_examples::datasets::{self, STRIPE_CLASSES};
use pipeline_examples::progress::print_stats;
use pipeline_examples::scratch::TempDir;
use pipeline_examples::training::{accuracy, train, Loader, TrainOptions, TrainReport};

#[derive(Debug)]
struct Args {
    options: TrainOptions,
    images: usize,
    compare: bool,
    report: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let dir = TempDir::new(&format!("pipeline-train-{}", std::process::id()))?;
    let t = Instant::now();
    let files = datasets::write_stripes_dataset(dir.path(), args.images)?;
    let (files, held_out) = datasets::hold_out_every_fifth(files);
    println!(
        "wrote {} labelled JPEGs ({} classes: {}) in {:.1} s; training on {}, holding out {}",
        args.images,
        STRIPE_CLASSES.len(),
        STRIPE_CLASSES.join(", "),
        t.elapsed().as_secs_f64(),
        files.len(),
        held_out.len()
    );
    let o = &args.options;
    println!(
        "{} steps of {} images at {}×{}, decode concurrency {}, {} pipeline threads{}",
        o.steps,
        o.loader.batch_size,
        o.loader.transform.output_size().0,
        o.loader.transform.output_size().1,
        o.loader.decode_concurrency,
        o.threads,
        if o.loader.decode_delay.is_zero() {
            String::new()
        } else {
            format!(
                ", every decode slowed by {} ms",
                o.loader.decode_delay.as_millis()
            )
        }
    );

    let mut loaders = vec![Loader::Pipeline];
    if args.compare {
        loaders.insert(0, Loader::Inline);
    }
    let mut rows = Vec::new();
    for loader in loaders {
        let (model, report) = train(&files, o, loader)?;
        let acc = accuracy(&model, &held_out, o)?;
        if let Some(stats) = &report.stats {
            print_stats(stats);
        }
        if let (Some(path), Some(svg)) = (&args.report, &report.report_svg) {
            std::fs::write(path, svg)?;
            println!("wrote the report to {}", path.display());
        }
        rows.push((report, acc));
    }

    println!(
        "\n{:<9} {:>6} {:>8} {:>22} {:>16} {:>9}",
        "loader", "steps", "steps/s", "data wait per step", "loss first→last", "held-out"
    );
    for (report, acc) in &rows {
        let (first, last) = report.loss_start_end(20);
        let per_step = report.data_wait.div_f64(report.losses.len().max(1) as f64);
        println!(
            "{:<9} {:>6} {:>8.2} {:>22} {:>16} {:>8.1}%",
            match report.loader {
                Loader::Pipeline => "pipeline",
                Loader::Inline => "inline",
            },
            report.losses.len(),
            report.steps_per_sec(),
            format!(
                "{} ({:.0}%)",
                ms(per_step),
                report.data_wait_share() * 100.0
            ),
            format!("{first:.3} → {last:.3}"),
            acc * 100.0
        );
    }
    let of = |loader: Loader| rows.iter().find(|(r, _)| r.loader == loader);
    if let Some((pipeline, _)) = of(Loader::Pipeline) {
        println!("\n{}", trainer_line(pipeline));
    }
    if let (Some((p, _)), Some((i, _))) = (of(Loader::Pipeline), of(Loader::Inline)) {
        println!(
            "the pipeline trained {:.2}× as fast as the inline loop",
            p.steps_per_sec() / i.steps_per_sec()
        );
    }
    let chance = 1.0 / STRIPE_CLASSES.len() as f64;
    for (report, acc) in &rows {
        let (first, last) = report.loss_start_end(20);
        if report.losses.len() >= 100 && (last >= first || *acc < chance + 0.2) {
            return Err(format!(
                "the model did not learn: loss {first:.3} → {last:.3}, held-out accuracy \
                 {:.1}% (chance {:.0}%)",
                acc * 100.0,
                chance * 100.0
            )
            .into());
        }
    }
    Ok(())
}

/// "the trainer waited 3.1 ms per step (4% of its time); bottleneck: `decode+resize`"
fn trainer_line(report: &TrainReport) -> String {
    let Some(stats) = &report.stats else {
        return String::new();
    };
    let c = &stats.consumer;
    let bottleneck = if stats.consumer_bound() {
        "the trainer itself".to_owned()
    } else {
        match stats.bottleneck() {
            Some(stage) => format!("`{}`", stage.name),
            None => "no stage is saturated".to_owned(),
        }
    };
    format!(
        "the trainer waited {} per step (p90 {}; {:.0}% of its time), its step took {}; \
         bottleneck: {bottleneck}",
        ms(c.wait.mean),
        ms(c.wait.p90),
        c.wait_share() * 100.0,
        ms(c.step.mean),
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
                "error: {e}\nusage: train [--steps N] [--batch-size N] [--images N] \
                 [--threads T] [--decode-concurrency C] [--slow-decode MS] [--compare] \
                 [--report FILE]"
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
        options: TrainOptions::default(),
        images: 1280,
        compare: false,
        report: None,
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
            "--batch-size" => o.loader.batch_size = value("--batch-size")?,
            "--threads" => o.threads = value("--threads")?,
            "--decode-concurrency" => o.loader.decode_concurrency = value("--decode-concurrency")?,
            "--slow-decode" => {
                o.loader.decode_delay = Duration::from_millis(value("--slow-decode")? as u64)
            }
            "--images" => args.images = value("--images")?,
            "--compare" => args.compare = true,
            "--report" => {
                args.report = Some(PathBuf::from(it.next().ok_or("--report needs a file")?))
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.images < 10 {
        return Err("--images must be at least 10".into());
    }
    Ok(args)
}
