//! Remote workers over Arrow Flight, local lanes first, every item exactly once.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example remote -- serve --addr 127.0.0.1:7001 --token T
//! cargo run --release -p pipeline-examples --example remote -- run --workers 127.0.0.1:7001 \
//!   --token T --items 100000 --epochs 2 --local-lanes 1 --order input --out /tmp/remote.txt
//! ```
//!
//! Every option is documented at the top of `examples/src/remote.rs`
//! (`pipeline_examples::remote`), and the guide's chapter "Remote workers".

// A process region's baseline (`--process-workers`) re-runs this binary as its workers.
#[pipeline_runtime::main]
fn main() -> std::process::ExitCode {
    pipeline_examples::remote::main()
}
