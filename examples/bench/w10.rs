//! W10: merging. Four sources at W1 sizes (the same `n` items in total, a quarter each)
//! merged into one stream before the W1 stage, against one source feeding the same stage
//! (`W10.merge4` / `W10.merge4.rr` / `W10.merge4.weighted` vs `W10.single`); and a route of
//! the W1 stage over two branches (`W10.route2`). The merge is one more hop, like one more
//! stage: compare its cost with a stage's (`W1.sync.chain5.c1` vs `W1.sync.c1`).
//! `W10.x.merge1` is a merge of one input: the merge's own hop, without the three more
//! source threads.

use std::time::Instant;

use pipeline_runtime::structure::MergePolicy;
use pipeline_runtime::PipelineBuilder;

use super::{check, drain_sum, finish, identity, Outcome};

/// Which merge policy `merge4` uses.
pub(super) enum Policy {
    AsAvailable,
    RoundRobin,
    Weighted,
}

fn outcome(n: u64, t0: Instant, (count, sum): (u64, u64)) -> Result<Outcome, String> {
    let wall = t0.elapsed();
    check(count == n, "item count")?;
    check(sum == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

/// One source, then the W1 stage.
pub(super) fn single(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .pipe(identity)
        .sink()
        .buffer(32)
        .num_threads(1);
    outcome(n, t0, drain_sum(finish(p)))
}

/// Four sources of `n / 4` items each (`n` rounded down to a multiple of 4), merged, then
/// the W1 stage.
pub(super) fn merge4(n: u64, policy: Policy) -> Result<Outcome, String> {
    let n = n / 4 * 4;
    let quarter = n / 4;
    let t0 = Instant::now();
    let inputs = (0..4).map(|k| PipelineBuilder::new().source(k * quarter..(k + 1) * quarter));
    let policy = match policy {
        Policy::AsAvailable => MergePolicy::as_available(),
        Policy::RoundRobin => MergePolicy::round_robin(),
        Policy::Weighted => MergePolicy::weighted([1.0; 4], 7),
    };
    let p = PipelineBuilder::new()
        .merge(inputs)
        .policy(policy)
        .pipe(identity)
        .sink()
        .buffer(32)
        .num_threads(1);
    outcome(n, t0, drain_sum(finish(p)))
}

/// One source through a merge of one input, then the W1 stage: the merge's own hop, without
/// the three more source threads of `merge4`.
pub(super) fn merge1(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .merge([PipelineBuilder::new().source(0..n)])
        .pipe(identity)
        .sink()
        .buffer(32)
        .num_threads(1);
    outcome(n, t0, drain_sum(finish(p)))
}

/// The W1 stage in two branches of a route (even and odd items).
pub(super) fn route2(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .route(|x: &u64| (*x % 2) as usize)
        .branch("even", |b| b.pipe(identity))
        .branch("odd", |b| b.pipe(identity))
        .join()
        .sink()
        .buffer(32)
        .num_threads(1);
    outcome(n, t0, drain_sum(finish(p)))
}
