//! Sharded data for a multi-GPU job, exactly resumable: writes a WebDataset (tar shards and
//! their index) and reads it as one rank of a distributed job, every rank the same number
//! of samples per epoch, a stopped run resumed without reading a finished sample again,
//! also on another number of ranks.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example shards -- write --out /tmp/ds \
//!   --shards 16 --samples-per-shard 100 --seed 7
//! cargo run --release -p pipeline-examples --example shards -- read --shards /tmp/ds \
//!   --seed 7 --epochs 2 --batch-size 16 --out /tmp/run --shuffle-buffer 64 --spawn 4
//! ```
//!
//! Options (see `pipeline_examples::shard_job` for each):
//!
//! ```text
//! shards write --out DIR_OR_URL --shards S --samples-per-shard N --seed X
//! shards read --shards DIR_OR_URL --seed X --epochs E --batch-size B --out DIR
//!     [--split drop|pad|even] [--shuffle-buffer K] [--concurrency C]
//!     [--order input|completion] [--stop-after-batches K --state-out FILE]
//!     [--resume-from FILE_OR_DIR] [--spawn W]
//! ```
//!
//! The guide's chapter "Distributed training and resume" describes the output.

fn main() -> std::process::ExitCode {
    pipeline_examples::shard_job::main()
}
