//! `tracing` for the examples: log lines on standard error (filtered by `RUST_LOG`), and
//! optionally a Chrome/Perfetto trace of every stage's tasks.
//!
//! Open the trace file at <https://ui.perfetto.dev> or `chrome://tracing`. Each task is a
//! slice named `task` whose `stage` argument names its stage, on the track of the thread
//! that ran it; parallel slices of one stage on several tracks are that stage's concurrency
//! at work.

use std::path::Path;

use tracing_chrome::{ChromeLayerBuilder, FlushGuard};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// Installs the process's subscriber: log lines at `RUST_LOG` (else `default_filter`), and,
/// with `trace_file`, the pipeline's spans into that file. Keep the returned guard until
/// the end of the program: dropping it completes the file.
pub fn init(default_filter: &str, trace_file: Option<&Path>) -> Option<FlushGuard> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        );
    match trace_file {
        Some(path) => {
            let (chrome, guard) = ChromeLayerBuilder::new()
                .file(path)
                .include_args(true)
                .build();
            let spans = Targets::new().with_target("pipeline_runtime", LevelFilter::TRACE);
            tracing_subscriber::registry()
                .with(logs)
                .with(chrome.with_filter(spans))
                .init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry().with(logs).init();
            None
        }
    }
}
