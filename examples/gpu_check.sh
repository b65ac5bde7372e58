#!/usr/bin/env bash
# The GPU transfer stage's checks on a machine WITH a CUDA GPU, as one command:
#
#   bash examples/gpu_check.sh
#
# 1. `nvidia-smi -L` (which devices this process sees),
# 2. a build with `--features cuda`,
# 3. the runtime's cuda unit tests (simulated device) and the GPU integration tests with
#    PIPELINE_REQUIRE_GPU=1 (a test that would skip for want of a GPU fails instead),
# 4. the benchmark, in release mode.
#
# Everything printed also goes to $OUT/gpu_check.log when OUT is set. Exits non-zero on the
# first failing step. About 3-6 minutes on a fresh 16-core machine, most of it compiling
# (the cargo registry cache, or vendored sources, must be there: nothing is downloaded if
# it is); the benchmark moves about 2 GiB per batch size (`--total-mib`, set lower with
# GPU_BENCH_TOTAL_MIB).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
fi

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "devices"
nvidia-smi -L || echo "nvidia-smi failed or is missing"

step "build --features cuda"
cargo build -p pipeline-runtime --features cuda

step "runtime cuda unit tests (simulated device)"
cargo test -p pipeline-runtime --features cuda-f16 --lib cuda

step "GPU integration tests (PIPELINE_REQUIRE_GPU=1)"
PIPELINE_REQUIRE_GPU=1 cargo test -p pipeline-tests --features cuda --test gpu -- --nocapture

step "gpu_bench (release)"
cargo run --release -p pipeline-examples --features cuda --example gpu_bench -- \
    --total-mib "${GPU_BENCH_TOTAL_MIB:-2048}"

step "all GPU checks passed"
