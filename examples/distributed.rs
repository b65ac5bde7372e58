//! One rank of a multi-GPU training job: its share of each shuffled epoch, per-item
//! randomness that replays bit-exactly, and exact mid-epoch resume, also on another number
//! of ranks. The rank comes from the launcher's environment (torchrun, SLURM, Open MPI).
//!
//! ```text
//! cargo run --release -p pipeline-examples --example distributed -- \
//!   --items 10000 --batch-size 32 --seed 1 --epochs 2 --concurrency 4 --order input \
//!   --out /tmp/run --spawn 4
//! torchrun --nproc-per-node 4 --no-python target/release/examples/distributed \
//!   --items 10000 --batch-size 32 --epochs 2 --out /tmp/run
//! ```
//!
//! See `pipeline_examples::distributed` for every option, and the guide's chapter
//! "Distributed training and resume".

fn main() -> std::process::ExitCode {
    pipeline_examples::distributed::main()
}
