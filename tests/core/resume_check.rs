//! The resume check over every source and structure that resumes: the plain source, the
//! continuous source, the distributed sampler (also from 4 ranks to 3), aggregate,
//! aggregate_by, flat stages and disaggregate, route (per item and batched), merge (each
//! policy and end rule), failures and filters; and a broken resume, which it must catch.

use pipeline_runtime::distributed::{DistributedState, Rank, Sampler, Split};
use pipeline_runtime::executor::ThreadPool;
use pipeline_runtime::resume_check::{Attempt, CheckError, CheckReport, Checked, ResumeCheck};
use pipeline_runtime::structure::{MergePolicy, OnEnd};
use pipeline_runtime::{Order, PipelineBuilder, ResumeState, StageBuilder};

type Built<T, S = ResumeState> = Result<Checked<T, S>, pipeline_runtime::BoxError>;

/// Runs `check` with several seeds, so that stops land in many places.
fn seeds(
    check: ResumeCheck,
    mut run: impl FnMut(ResumeCheck) -> Result<CheckReport, CheckError>,
) -> CheckReport {
    let mut last = None;
    for seed in 0..4 {
        let report = run(check.clone().seed(seed)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(report.items > 0);
        last = Some(report);
    }
    last.unwrap()
}

#[test]
fn a_chain_with_failures_and_filters_resumes_on_other_concurrencies_and_executors() {
    let pool = ThreadPool::builder().num_threads(3).build().unwrap();
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
        let stage = PipelineBuilder::new()
            .source(0..500u32)
            .try_pipe(|x| match x % 7 {
                3 => Err(format!("{x} fails")),
                _ => Ok(x),
            })
            .concurrency(1 + attempt.run % 3)
            .order(Order::Input)
            .opt_pipe(|x| (x % 5 != 1).then_some(x * 3));
        // Every other part runs the last stage on a pool of its own.
        let stage = match attempt.run % 2 {
            0 => stage.pipe(|x| x + 1).concurrency(2),
            _ => stage.pipe(|x| x + 1).concurrency(4).executor(&pool),
        };
        let pipeline = stage
            .order(Order::Input)
            .aggregate(8)
            .sink()
            .queue_capacity(3)
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    let report = seeds(ResumeCheck::new().preemptions(4), |c| c.run(build));
    assert_eq!(report.stops.len(), 4);
}

#[test]
fn completion_order_resumes_with_the_same_items() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<u32> {
        let pipeline = PipelineBuilder::new()
            .source(0..400u32)
            .pipe(|x| {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(x % 7) * 20));
                x
            })
            .concurrency(8)
            .order(Order::Completion)
            .opt_pipe(|x| (x % 9 != 0).then_some(x))
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    let check = ResumeCheck::new().order(Order::Completion).preemptions(3);
    seeds(check, |c| c.run(build));
}

#[test]
fn a_continuous_source_resumes_across_epochs() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
        let pipeline = PipelineBuilder::new()
            .continuous_source(0..37u32)
            .pipe(|x| x * 2)
            .concurrency(3)
            .order(Order::Input)
            .aggregate(5)
            .sink()
            .buffer(1)
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    seeds(ResumeCheck::new().epochs(3).preemptions(5), |c| {
        c.run(build)
    });
}

#[test]
fn aggregate_by_after_a_filter_resumes_across_epochs() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
        let pipeline = PipelineBuilder::new()
            .continuous_source(0..90u32)
            .opt_pipe(|x| (x % 7 != 2).then_some(x))
            .concurrency(1 + attempt.run % 3)
            .order(Order::Input)
            .aggregate_by(|x: &u32| x % 4, 3)
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    seeds(ResumeCheck::new().epochs(2).preemptions(3), |c| {
        c.run(build)
    });
}

#[test]
fn a_route_resumes_with_the_same_items() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<u64> {
        let pipeline = PipelineBuilder::new()
            .source(0..300u64)
            .route(|x: &u64| usize::from(x.is_multiple_of(3)))
            .branch("tens", |b| b.pipe(|x| x * 10).concurrency(2))
            .branch("odd", |b| b.opt_pipe(|x| (x % 2 == 1).then_some(x + 1)))
            .join()
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    let check = ResumeCheck::new().order(Order::Completion).preemptions(3);
    seeds(check, |c| c.run(build));
}

#[test]
fn a_batched_route_resumes_with_the_same_batches_across_epochs() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u64>> {
        let pipeline = PipelineBuilder::new()
            .continuous_source(0..120u64)
            .opt_pipe(|x| (x % 11 != 4).then_some(x))
            .aggregate(5)
            .route_batched(|x: &u64| usize::from(x.is_multiple_of(3)))
            .branch("tens", |b| {
                b.pipe(|v: Vec<u64>| v.into_iter().map(|x| x * 10).collect())
                    .concurrency(1 + attempt.run % 3)
            })
            // A sub-batch dropped here takes its whole batch with it.
            .branch("odd", |b| {
                b.opt_pipe(|v: Vec<u64>| (v[0] % 7 != 1).then_some(v))
                    .concurrency(2)
            })
            .join()
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    let check = ResumeCheck::new()
        .order(Order::Completion)
        .epochs(2)
        .preemptions(4);
    seeds(check, |c| c.run(build));
}

/// A merge input: `n` items from `base`, through a stage of `lanes` lanes and a filter.
fn mixed(base: u32, n: u32, lanes: usize) -> StageBuilder<u32> {
    PipelineBuilder::new()
        .source(base..base + n)
        .pipe(|x| x)
        .concurrency(lanes)
        .order(Order::Input)
        .opt_pipe(|x| (x % 13 != 5).then_some(x))
}

#[test]
fn a_weighted_merge_resumes_with_the_same_draws() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
        let pipeline = PipelineBuilder::new()
            .merge([
                mixed(0, 300, 1 + attempt.run % 3),
                mixed(1000, 120, 2),
                mixed(2000, 200, 1),
            ])
            .policy(MergePolicy::weighted([3.0, 1.0, 2.0], 17))
            .try_pipe(|x| match x % 17 {
                3 => Err(format!("{x} fails")),
                _ => Ok(x + 1),
            })
            .concurrency(1 + attempt.run % 4)
            .order(Order::Input)
            .aggregate(4)
            .sink()
            .queue_capacity(3)
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    seeds(ResumeCheck::new().preemptions(4), |c| c.run(build));
}

#[test]
fn a_merge_of_continuous_inputs_resumes_across_epochs_under_each_end_rule() {
    for (weighted, on_end) in [
        (false, OnEnd::Continue),
        (true, OnEnd::Restart),
        (false, OnEnd::Stop),
        (true, OnEnd::Continue),
    ] {
        let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
            let a = PipelineBuilder::new()
                .continuous_source(0..23u32)
                .pipe(|x| x * 2)
                .concurrency(1 + attempt.run % 2)
                .order(Order::Input);
            let b = PipelineBuilder::new()
                .continuous_source(100..140u32)
                .opt_pipe(|x| (x % 6 != 1).then_some(x));
            let policy = match weighted {
                true => MergePolicy::weighted([1.0, 2.0], 5),
                false => MergePolicy::round_robin(),
            };
            let pipeline = PipelineBuilder::new()
                .merge([a, b])
                .policy(policy)
                .on_end(on_end)
                .pipe(|x| x + 1)
                .concurrency(2)
                .order(Order::Input)
                .aggregate(3)
                .sink()
                .buffer(1)
                .resume_from(attempt.own_state().cloned())
                .build()?;
            Ok(Checked::from(pipeline))
        };
        let check = ResumeCheck::new().epochs(3).preemptions(5);
        for seed in 0..4 {
            let report =
                check.clone().seed(seed).run(build).unwrap_or_else(|e| {
                    panic!("{on_end:?}, weighted {weighted}, seed {seed}: {e}")
                });
            assert!(report.items > 0);
        }
    }
}

#[test]
fn an_as_available_merge_of_chains_and_routes_resumes_with_the_same_items() {
    let build = |attempt: &Attempt<'_, ResumeState>| -> Built<Vec<u32>> {
        let slow = PipelineBuilder::new()
            .source(0..200u32)
            .pipe(|x| {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(x % 5) * 30));
                x
            })
            .concurrency(4)
            .order(Order::Completion);
        let batched = PipelineBuilder::new()
            .source(1000..1150u32)
            .aggregate(3)
            .pipe(|v: Vec<u32>| v.iter().sum::<u32>());
        let routed = mixed(5000, 80, 1 + attempt.run % 2)
            .route(|x: &u32| (*x % 2) as usize)
            .branch("even", |b| b.pipe(|x| x + 1).concurrency(2))
            .branch("odd", |b| b.opt_pipe(|x| (x % 3 != 0).then_some(x)))
            .join();
        let pipeline = PipelineBuilder::new()
            .merge([slow, batched, routed])
            .opt_pipe(|x| (x % 10 != 7).then_some(x))
            .aggregate(4)
            .route_batched(|x: &u32| (*x % 2) as usize)
            .branch("a", |b| b.pipe(|v: Vec<u32>| v).concurrency(2))
            .branch("b", |b| b)
            .join()
            .sink()
            .resume_from(attempt.own_state().cloned())
            .build()?;
        Ok(Checked::from(pipeline))
    };
    let check = ResumeCheck::new().order(Order::Completion).preemptions(3);
    seeds(check, |c| c.run_batches(build));
}

/// The one-to-many stages of the fan-out tests.
const FAN_OUTS: [&str; 3] = ["flat_pipe", "async_try_flat_pipe", "disaggregate"];

/// A pipeline whose stops split the outputs of inputs (0 to 4 outputs each; a failure
/// after some outputs; a filter and batches after the fan-out).
fn fan_out_job(fan_out: &str, order: Order, attempt: &Attempt<'_, ResumeState>) -> Built<Vec<u32>> {
    // A one-to-many stage keeps input order with one lane only.
    let lanes = match order {
        Order::Input => 1,
        Order::Completion => 2 + attempt.run % 3,
    };
    // Uneven task times, so that completion order differs from input order.
    let jitter = |x: u32| {
        if x.is_multiple_of(3) {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(x % 5) * 30));
        }
    };
    let source = PipelineBuilder::new().source(0..150u32);
    let outputs = match fan_out {
        "flat_pipe" => source
            .flat_pipe(move |x: u32| {
                jitter(x);
                (0..x % 5).map(move |i| x * 10 + i)
            })
            .concurrency(lanes)
            .order(order),
        "async_try_flat_pipe" => source
            .async_try_flat_pipe(move |x: u32| {
                jitter(x);
                // Input 7k+3 fails after its second output (the two are delivered).
                futures::stream::iter((0..x % 5).map(move |i| match (x % 7, i) {
                    (3, 2) => Err(format!("{x} fails at {i}")),
                    _ => Ok(x * 10 + i),
                }))
            })
            .concurrency(lanes)
            .order(order),
        // A batch of 3 positions back into its items: one input standing for 3 positions.
        // Its batches must be made again the same after a resume, so they are cut in input
        // order; the order under test is the next stage's.
        _ => source
            .pipe(move |x| {
                jitter(x);
                x
            })
            .concurrency(1 + attempt.run % 3)
            .order(Order::Input)
            .aggregate(3)
            .disaggregate(),
    };
    let pipeline = outputs
        .opt_pipe(move |x| {
            jitter(x);
            (x % 11 != 4).then_some(x)
        })
        .concurrency(lanes)
        .order(order)
        .aggregate(2)
        .sink()
        .buffer(2)
        .resume_from(attempt.own_state().cloned())
        .build()?;
    Ok(Checked::from(pipeline))
}

#[test]
fn a_fan_out_split_by_a_stop_resumes_exactly_in_input_order() {
    for fan_out in FAN_OUTS {
        let check = ResumeCheck::new().preemptions(5);
        for seed in 0..4 {
            check
                .clone()
                .seed(seed)
                .run_batches(|a| fan_out_job(fan_out, Order::Input, a))
                .unwrap_or_else(|e| panic!("{fan_out}, seed {seed}: {e}"));
        }
    }
}

#[test]
fn a_fan_out_split_by_a_stop_resumes_exactly_in_completion_order() {
    for fan_out in FAN_OUTS {
        let check = ResumeCheck::new().order(Order::Completion).preemptions(5);
        for seed in 0..4 {
            check
                .clone()
                .seed(seed)
                .run_batches(|a| fan_out_job(fan_out, Order::Completion, a))
                .unwrap_or_else(|e| panic!("{fan_out}, seed {seed}: {e}"));
        }
    }
}

/// A rank of the distributed sampler (every item each epoch: `Split::Even`).
fn sampler(rank: Rank) -> Sampler {
    Sampler::new(203, rank).seed(11).split(Split::Even)
}

fn sampler_job(attempt: &Attempt<'_, DistributedState>) -> Built<Vec<u64>, DistributedState> {
    let fresh = sampler(attempt.rank);
    let (sampler, state) = match attempt.states() {
        None => (fresh, None),
        Some(states) => {
            let resume = DistributedState::resume_all(states, &fresh)?;
            (resume.sampler, Some(resume.pipeline))
        }
    };
    let pipeline = PipelineBuilder::new()
        .continuous_source(sampler.epochs())
        .try_pipe(|key| match key.index % 10 {
            3 => Err("corrupt"),
            _ => Ok(key.index),
        })
        .concurrency(1 + attempt.run % 4)
        .order(Order::Input)
        .aggregate(6)
        .sink()
        .resume_from(state)
        .build()?;
    Ok(Checked::new(pipeline, move |state| {
        DistributedState::new(&sampler, state)
    }))
}

#[test]
fn the_distributed_sampler_resumes_on_the_same_world() {
    let check = ResumeCheck::new().epochs(2).world_sizes([4]).preemptions(3);
    seeds(check, |c| c.run(sampler_job));
}

#[test]
fn the_distributed_sampler_resumes_from_4_ranks_on_3() {
    // Batches are cut anew on 3 ranks: their elements are compared.
    let check = ResumeCheck::new()
        .epochs(2)
        .world_sizes([4, 3])
        .preemptions(2);
    let report = seeds(check, |c| c.run_batches(sampler_job));
    assert_eq!(report.world_sizes, [4, 3, 3]);
}

#[test]
fn a_resume_that_restarts_is_caught_with_the_first_difference() {
    // The bug of many loaders: the state is taken, and ignored.
    let error = ResumeCheck::new()
        .preemptions(1)
        .seed(3)
        .run(|_| {
            let pipeline = PipelineBuilder::new()
                .source(0..100u32)
                .pipe(|x| x + 1)
                .sink()
                .track_resume(true)
                .build()?;
            Ok(Checked::from(pipeline))
        })
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("rank 0: item "), "{message}");
    assert!(
        message.contains("differs: the straight run gave"),
        "{message}"
    );
    assert!(message.contains("preempted after [["), "{message}");
}

#[test]
fn a_resume_that_skips_in_flight_items_is_caught() {
    // A state that forgets what was in flight: those items are lost.
    let error = ResumeCheck::new()
        .preemptions(2)
        .run(|attempt: &Attempt<'_, ResumeState>| {
            let state = attempt.own_state().map(|s| {
                let json = serde_json::to_value(s).unwrap();
                let mut json = json.as_object().unwrap().clone();
                json.insert("pending".into(), serde_json::json!([]));
                json.remove("accounts");
                serde_json::from_value::<ResumeState>(json.into()).unwrap()
            });
            let pipeline = PipelineBuilder::new()
                .source(0..200u32)
                .pipe(|x| x)
                .concurrency(4)
                .sink()
                .buffer(8)
                .resume_from(state)
                .build()?;
            Ok(Checked::from(pipeline))
        })
        .unwrap_err();
    assert!(error.to_string().contains("rank 0: item"), "{error}");
}

#[test]
fn a_pipeline_without_tracking_is_refused_with_a_reason() {
    let error = ResumeCheck::new()
        .run(|_| {
            Ok(Checked::from(
                PipelineBuilder::new().source(0..3u8).sink().build()?,
            ))
        })
        .unwrap_err();
    assert!(
        error.to_string().contains("does not track resume"),
        "{error}"
    );
}
