//! Reading from storage without a network: local directories and memory stores, WebDataset
//! shards (whole, truncated, corrupt, deleted), shard splits and shuffles. The Parquet
//! reader's tests are in `pipeline-runtime/src/storage/parquet_tests.rs`; the S3 tests,
//! against a real server on the loopback interface, in `examples/tests/s3.rs`.

mod local;
mod resume_check;
