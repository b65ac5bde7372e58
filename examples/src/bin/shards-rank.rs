//! The `shards` example as a binary, for its tests (see `examples/shards.rs`).

fn main() -> std::process::ExitCode {
    pipeline_examples::shard_job::main()
}
