//! The `distributed` example as a binary, for its tests (see `examples/distributed.rs`).

fn main() -> std::process::ExitCode {
    pipeline_examples::distributed::main()
}
