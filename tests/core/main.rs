//! Integration tests of the runtime core, following SPDL's test list
//! (pipeline_builder_test, aggregate_test, failure_rate_test, continuous_pipeline_test).

mod aggregate;
mod aggregate_by;
mod backpressure;
mod concurrency;
mod consumer;
mod epochs;
mod executors;
mod failures;
mod hooks;
mod ledger;
mod lifecycle;
mod order;
mod resume;
mod resume_check;
mod run_report;
mod stages;
mod stats;
mod stream_ext;
mod structures;
mod vocabulary;
