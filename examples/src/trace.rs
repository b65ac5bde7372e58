//! `tracing` for the examples: log lines on standard error (filtered by `RUST_LOG`), and
//! optionally a Chrome/Perfetto trace of every stage's tasks.
//!
//! Open the trace file at <https://ui.perfetto.dev> or `chrome://tracing`. Each task is a
//! slice named after its stage (the span's `stage` field), on the track of the thread that
//! ran it; parallel slices of one stage on several tracks are that stage's concurrency at
//! work.

use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_chrome::{ChromeLayerBuilder, EventOrSpan, FlushGuard};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `stage` field of a span, kept in the span's extensions to name its trace slices.
struct StageName(String);

/// Keeps the `stage` field of every span that has one (see [`StageName`]).
struct StageNames;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StageNames {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        struct Find(Option<String>);
        impl Visit for Find {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "stage" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "stage" {
                    self.0 = Some(value.to_owned());
                }
            }
        }
        let mut find = Find(None);
        attrs.record(&mut find);
        if let (Some(name), Some(span)) = (find.0, ctx.span(id)) {
            span.extensions_mut().insert(StageName(name));
        }
    }
}

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
                // A task's slice is named after its stage.
                .name_fn(Box::new(|item| match item {
                    EventOrSpan::Span(span) => match span.extensions().get::<StageName>() {
                        Some(StageName(stage)) => stage.clone(),
                        None => span.name().to_owned(),
                    },
                    EventOrSpan::Event(event) => event.metadata().name().to_owned(),
                }))
                .build();
            let spans = Targets::new().with_target("pipeline_runtime", LevelFilter::TRACE);
            tracing_subscriber::registry()
                .with(StageNames)
                .with(logs)
                .with(chrome.with_filter(spans))
                .init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry()
                .with(StageNames)
                .with(logs)
                .init();
            None
        }
    }
}
