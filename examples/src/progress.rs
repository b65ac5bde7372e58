//! A progress bar for a running pipeline, and the statistics table at the end.
//!
//! ```no_run
//! use pipeline_examples::progress::Progress;
//! use pipeline_runtime::{PipelineBuilder};
//!
//! let mut pipeline = PipelineBuilder::new()
//!     .source(0..1000u64)
//!     .pipe(|x| x * 2).concurrency(4)
//!     .sink().buffer(4)
//!     .build()?;
//! let mut progress = Progress::new(Some(1000), "items");
//! while let Some(item) = pipeline.next() {
//!     item?;
//!     progress.update(1, &pipeline);
//! }
//! progress.finish(&pipeline);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The bar is drawn on standard error, only when it is a terminal (so logs of CI runs stay
//! clean); its message names the current bottleneck, read from the pipeline's statistics a
//! few times a second.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pipeline_runtime::stats::PipelineStats;
use pipeline_runtime::Pipeline;

/// How often the bar's message re-reads the pipeline's statistics.
const STATS_EVERY: Duration = Duration::from_millis(250);

/// A progress bar that counts items and shows the bottleneck of a running pipeline.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    last_stats: Instant,
}

impl Progress {
    /// A bar for `total` items (`None`: a counter without an end), counted in `unit`.
    pub fn new(total: Option<u64>, unit: &str) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(&format!(
                    "{{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
                ))
                .expect("a valid template"),
            ),
            None => ProgressBar::no_length().with_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {{pos}} {unit} ({{per_sec}}) {{msg}}"
                ))
                .expect("a valid template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(100));
        Self {
            bar,
            last_stats: Instant::now(),
        }
    }

    /// Counts `n` more items; every so often also reads `pipeline`'s statistics and shows
    /// its bottleneck.
    pub fn update<T>(&mut self, n: u64, pipeline: &Pipeline<T>)
    where
        T: Send + 'static,
    {
        self.bar.inc(n);
        if self.last_stats.elapsed() >= STATS_EVERY {
            self.last_stats = Instant::now();
            self.bar.set_message(bottleneck_line(&pipeline.stats()));
        }
    }

    /// Removes the bar and prints the pipeline's final statistics table on standard output.
    pub fn finish<T>(self, pipeline: &Pipeline<T>)
    where
        T: Send + 'static,
    {
        self.bar.finish_and_clear();
        print_stats(&pipeline.stats());
    }
}

/// A short description of the bottleneck, for the bar's message.
fn bottleneck_line(stats: &PipelineStats) -> String {
    if stats.consumer_bound() {
        return "bottleneck: the consumer".into();
    }
    match (stats.bottleneck(), stats.busiest_stage()) {
        (Some(stage), _) => format!(
            "bottleneck: {} (busy {:.0}%)",
            stage.name,
            stage.busy_share() * 100.0
        ),
        (None, Some(stage)) => format!(
            "no saturated stage; busiest: {} ({:.0}%)",
            stage.name,
            stage.busy_share() * 100.0
        ),
        (None, None) => String::new(),
    }
}

/// Prints a statistics table (stages, queues, bottleneck) under a heading.
pub fn print_stats(stats: &PipelineStats) {
    println!(
        "\npipeline statistics after {:.3} s:\n{stats}",
        stats.elapsed.as_secs_f64()
    );
}
