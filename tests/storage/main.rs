//! Reading from storage without a network: local directories and memory stores, WebDataset
//! shards (whole, truncated, corrupt, deleted), shard splits and shuffles, and (feature
//! `parquet`) Parquet files. The S3 tests, against a real server on the loopback interface,
//! are in `examples/tests/s3.rs`.

mod local;
#[cfg(feature = "parquet")]
mod parquet;
