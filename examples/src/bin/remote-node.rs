//! The `remote` example as a binary, for its tests (see `examples/remote.rs`).

#[pipeline_runtime::main]
fn main() -> std::process::ExitCode {
    pipeline_examples::remote::main()
}
