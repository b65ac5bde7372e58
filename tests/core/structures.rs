//! Merge, mix and route (issue 15): delivered items and orders against plain-loop
//! predictions, ends and failures, statistics, and stop/drop leaving no thread behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::distributed::ItemKey;
use pipeline_runtime::structure::{MergePolicy, OnEnd};
use pipeline_runtime::{MaxFailures, Order, Pipeline, PipelineBuilder, StageBuilder};
use pipeline_tests::{collect_ok, settled_thread_count, thread_count, wait_until, CountingSource};

fn input(range: std::ops::Range<u32>, tag: u32) -> StageBuilder<u32> {
    PipelineBuilder::new()
        .source(range)
        .pipe(move |x| tag * 1000 + x)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The plain loop a round-robin merge of one-pass inputs stands for.
fn round_robin_loop(inputs: &[Vec<u32>], stop_at_first_end: bool) -> Vec<u32> {
    let mut iters: Vec<_> = inputs.iter().map(|v| v.iter()).collect();
    let mut open = vec![true; inputs.len()];
    let mut out = Vec::new();
    'outer: loop {
        let mut any = false;
        for i in 0..iters.len() {
            if !open[i] {
                continue;
            }
            any = true;
            match iters[i].next() {
                Some(x) => out.push(*x),
                None if stop_at_first_end => break 'outer,
                None => open[i] = false,
            }
        }
        if !any {
            break;
        }
    }
    out
}

/// The plain loop a weighted merge stands for (the documented draw of
/// `MergePolicy::weighted`), epoch 0, going on with the rest when an input ends.
fn weighted_loop(inputs: &[Vec<u32>], weights: &[f64], seed: u64, rank: u32) -> Vec<u32> {
    let mut rng = ItemKey {
        seed,
        epoch: 0,
        index: u64::from(rank),
    }
    .rng();
    let mut iters: Vec<_> = inputs.iter().map(|v| v.iter()).collect();
    let mut open = vec![true; inputs.len()];
    let mut out = Vec::new();
    while open.contains(&true) {
        let total: f64 = (0..open.len())
            .filter(|&i| open[i])
            .map(|i| weights[i])
            .sum();
        let u = rng.next_f64() * total;
        let mut sum = 0.0;
        let mut pick = 0;
        for i in (0..open.len()).filter(|&i| open[i]) {
            sum += weights[i];
            pick = i;
            if u < sum {
                break;
            }
        }
        match iters[pick].next() {
            Some(x) => out.push(*x),
            None => open[pick] = false,
        }
    }
    out
}

fn expected_inputs(spec: &[(std::ops::Range<u32>, u32)]) -> Vec<Vec<u32>> {
    spec.iter()
        .map(|(r, tag)| r.clone().map(|x| tag * 1000 + x).collect())
        .collect()
}

#[test]
fn round_robin_merges_in_turn_and_goes_on_with_the_rest() {
    let spec = [(0..5, 1), (0..2, 2), (0..8, 3)];
    let merged = PipelineBuilder::new()
        .merge(spec.iter().map(|(r, t)| input(r.clone(), *t)))
        .policy(MergePolicy::round_robin())
        .sink()
        .build()
        .unwrap();
    assert_eq!(
        collect_ok(merged),
        round_robin_loop(&expected_inputs(&spec), false)
    );
}

#[test]
fn on_end_stop_ends_with_the_first_input_that_ends() {
    let spec = [(0..3, 1), (0..10, 2)];
    let merged = PipelineBuilder::new()
        .merge(spec.iter().map(|(r, t)| input(r.clone(), *t)))
        .policy(MergePolicy::round_robin())
        .on_end(OnEnd::Stop)
        .sink()
        .build()
        .unwrap();
    let got = collect_ok(merged);
    assert_eq!(got, round_robin_loop(&expected_inputs(&spec), true));
    assert_eq!(got, [1000, 2000, 1001, 2001, 1002, 2002]);
}

#[test]
fn as_available_delivers_every_item_once_and_counts_every_input() {
    let spec = [(0..300, 1), (0..50, 2), (0..7, 3), (0..0, 4)];
    let mut p = PipelineBuilder::new()
        .merge(spec.iter().map(|(r, t)| input(r.clone(), *t)))
        .pipe(|x| x + 1)
        .concurrency(3)
        .sink()
        .build()
        .unwrap();
    let got: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    let want: Vec<u32> = expected_inputs(&spec)
        .concat()
        .iter()
        .map(|x| x + 1)
        .collect();
    assert_eq!(sorted(got), sorted(want));
    let stats = p.stats();
    let names: Vec<&str> = stats.stages.iter().map(|s| s.name.as_str()).collect();
    for i in 0..4 {
        assert!(
            names.contains(&format!("merge[{i}]/source").as_str()),
            "{names:?}"
        );
    }
    let merge = stats.stages.iter().find(|s| s.name == "merge").unwrap();
    assert_eq!((merge.tasks, merge.outputs), (357, 357));
    // The queue after each input's last stage counts what the merge took from it.
    for (i, (r, _)) in spec.iter().enumerate() {
        let after = stats
            .queues
            .iter()
            .rfind(|q| q.after.starts_with(&format!("merge[{i}]/")))
            .unwrap();
        assert_eq!(after.items, u64::from(r.end), "{}", after.after);
    }
}

#[test]
fn weighted_mixing_is_the_seeded_loop_and_depends_on_seed_and_rank() {
    let spec = [(0..70, 1), (0..30, 2)];
    let weights = [0.7, 0.3];
    let run = |seed: u64, rank: u32| {
        collect_ok(
            PipelineBuilder::new()
                .merge(spec.iter().map(|(r, t)| input(r.clone(), *t)))
                .policy(MergePolicy::weighted(weights, seed).rank(rank))
                .sink()
                .build()
                .unwrap(),
        )
    };
    let inputs = expected_inputs(&spec);
    let a = run(7, 0);
    assert_eq!(a, weighted_loop(&inputs, &weights, 7, 0));
    assert_eq!(a, run(7, 0), "the same seed gives the same order");
    assert_eq!(run(8, 0), weighted_loop(&inputs, &weights, 8, 0));
    assert_ne!(a, run(8, 0));
    assert_eq!(run(7, 3), weighted_loop(&inputs, &weights, 7, 3));
    assert_ne!(a, run(7, 3));
    // A fair mix: among the first 50 items, about 70% from the first input.
    let first = a[..50].iter().filter(|x| **x < 2000).count();
    assert!((25..=45).contains(&first), "{first}");
}

#[test]
fn restart_repeats_the_shorter_input_until_each_has_ended_once() {
    let a = PipelineBuilder::new().continuous_source(vec![1u32, 2]);
    let b = PipelineBuilder::new().continuous_source(vec![10u32, 20, 30, 40, 50]);
    let mut p = PipelineBuilder::new()
        .merge([a, b])
        .policy(MergePolicy::round_robin())
        .on_end(OnEnd::Restart)
        .sink()
        .build()
        .unwrap();
    // The plain loop: turns alternate; reading an input at the end of its pass takes its
    // turn and starts its next pass; the epoch ends once both have ended a pass.
    let passes = [vec![1u32, 2], vec![10, 20, 30, 40, 50]];
    let mut pos = [0usize; 2];
    let mut ended = [false; 2];
    let mut want = Vec::new();
    let mut turn = 0;
    while !(ended[0] && ended[1]) {
        let i = turn % 2;
        turn += 1;
        if pos[i] == passes[i].len() {
            pos[i] = 0;
            ended[i] = true;
            continue;
        }
        want.push(passes[i][pos[i]]);
        pos[i] += 1;
    }
    let first: Vec<u32> = p.epoch().map(Result::unwrap).collect();
    assert_eq!(first, want);
    assert_eq!(
        sorted(first.iter().filter(|x| **x >= 10).copied().collect()),
        [10, 20, 30, 40, 50]
    );
    let second: Vec<u32> = p.epoch().map(Result::unwrap).collect();
    assert!(!second.is_empty(), "the merged stream is continuous");
    p.stop().unwrap();
}

#[test]
fn continue_with_continuous_inputs_ends_an_epoch_when_every_pass_has_ended() {
    let a = PipelineBuilder::new().continuous_source(vec![1u32, 2]);
    let b = PipelineBuilder::new().continuous_source(vec![10u32, 20, 30]);
    let mut p = PipelineBuilder::new().merge([a, b]).sink().build().unwrap();
    for _ in 0..3 {
        let epoch: Vec<u32> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(sorted(epoch), [1, 2, 10, 20, 30]);
    }
    p.stop().unwrap();
}

#[test]
fn a_custom_policy_that_ends_early_does_not_hang() {
    // SPDL #1204: endless inputs, a policy that stops after 25 items.
    let mut taken = 0;
    let chooser = move |open: &[bool]| {
        taken += 1;
        (taken <= 25).then(|| taken % open.len())
    };
    let sources = [
        CountingSource::new(),
        CountingSource::new(),
        CountingSource::new(),
    ];
    let inputs = sources
        .iter()
        .map(|s| PipelineBuilder::new().source(s.clone()).pipe(|x| x));
    let got = collect_ok(
        PipelineBuilder::new()
            .merge(inputs)
            .policy(MergePolicy::custom(chooser))
            .sink()
            .build()
            .unwrap(),
    );
    assert_eq!(got.len(), 25);
    // The inputs were stopped: they pull no more.
    for s in &sources {
        let settled = s.settle(Duration::from_millis(50), Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.pulled(), settled);
    }
}

#[test]
fn a_custom_policy_choosing_a_closed_input_fails_the_merge() {
    let got: Vec<_> = PipelineBuilder::new()
        .merge([input(0..2, 1), input(0..2, 2)])
        .policy(MergePolicy::custom(|_: &[bool]| Some(5)))
        .sink()
        .build()
        .unwrap()
        .collect();
    let error = got.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(error.contains("chose input 5"), "{error}");
}

#[test]
fn merge_definition_errors() {
    let weights = PipelineBuilder::new()
        .merge([input(0..2, 1), input(0..2, 2)])
        .policy(MergePolicy::weighted([1.0], 0))
        .sink()
        .build()
        .unwrap_err()
        .to_string();
    assert!(weights.contains("1 weights for 2 inputs"), "{weights}");
    let restart = PipelineBuilder::new()
        .merge([input(0..2, 1)])
        .on_end(OnEnd::Restart)
        .sink()
        .build()
        .unwrap_err()
        .to_string();
    assert!(restart.contains("continuous_source"), "{restart}");
    let mixed = PipelineBuilder::new()
        .merge([
            input(0..2, 1),
            PipelineBuilder::new().continuous_source(vec![1u32]),
        ])
        .sink()
        .build()
        .unwrap_err()
        .to_string();
    assert!(mixed.contains("mix continuous"), "{mixed}");
    let misplaced = PipelineBuilder::new()
        .source(0..2u32)
        .policy(MergePolicy::round_robin())
        .sink()
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        misplaced.contains("`policy` is not an option"),
        "{misplaced}"
    );
    // Resume tracking covers merges, but not a custom chooser's state, nor a merge inside a
    // merge's input; both fail to start, saying so.
    let mut custom = PipelineBuilder::new()
        .merge([input(0..2, 1), input(0..2, 2)])
        .policy(MergePolicy::custom(|_: &[bool]| Some(0)))
        .sink()
        .track_resume(true)
        .build()
        .unwrap();
    let error = custom.start().unwrap_err().to_string();
    assert!(
        error.contains("resume tracking does not cover a custom policy"),
        "{error}"
    );
    let inner = PipelineBuilder::new().merge([input(0..2, 1), input(0..2, 2)]);
    let mut nested = PipelineBuilder::new()
        .merge([inner, input(0..2, 3)])
        .sink()
        .track_resume(true)
        .build()
        .unwrap();
    let error = nested.start().unwrap_err().to_string();
    assert!(error.contains("a merge inside a merge's input"), "{error}");
    // The memory budget goes through a merge as available; one that picks its inputs, or
    // pauses continuous inputs at their pass's end, could deadlock: refused with the reason.
    let sized = |n: u32| PipelineBuilder::new().source(0..n).item_bytes(|_| 4);
    let mut picking = PipelineBuilder::new()
        .merge([sized(2), sized(3)])
        .policy(MergePolicy::weighted([1.0, 1.0], 1))
        .sink()
        .memory_limit(1024)
        .build()
        .unwrap();
    let error = picking.start().unwrap_err().to_string();
    assert!(error.contains("its policy picks the input"), "{error}");
    let looped = || {
        PipelineBuilder::new()
            .continuous_source(0..2u32)
            .item_bytes(|_| 4)
    };
    let mut paused = PipelineBuilder::new()
        .merge([looped(), looped()])
        .sink()
        .memory_limit(1024)
        .build()
        .unwrap();
    let error = paused.start().unwrap_err().to_string();
    assert!(error.contains("with continuous inputs"), "{error}");
    let mut both = PipelineBuilder::new()
        .merge([sized(2), sized(3)])
        .sink()
        .memory_limit(1024)
        .track_resume(true)
        .build()
        .unwrap();
    let error = both.start().unwrap_err().to_string();
    assert!(error.contains("with resume tracking"), "{error}");
    let budgeted = collect_ok(
        PipelineBuilder::new()
            .merge([sized(2), sized(3)])
            .sink()
            .memory_limit(1024)
            .build()
            .unwrap(),
    );
    assert_eq!(sorted(budgeted), [0, 0, 1, 1, 2]);
    // Without tracking, both run.
    let inner = PipelineBuilder::new().merge([input(0..2, 1), input(0..2, 2)]);
    let got = collect_ok(
        PipelineBuilder::new()
            .merge([inner, input(0..2, 3)])
            .sink()
            .build()
            .unwrap(),
    );
    assert_eq!(sorted(got), [1000, 1001, 2000, 2001, 3000, 3001]);
}

fn routed(x: &u32) -> usize {
    (*x % 3) as usize
}

#[test]
fn route_sends_each_item_through_its_branch() {
    let seen: [Arc<AtomicUsize>; 3] = Default::default();
    let counter = |i: usize| {
        let c = seen[i].clone();
        move |x: u32| {
            c.fetch_add(1, Ordering::Relaxed);
            x
        }
    };
    let mut p = PipelineBuilder::new()
        .source(0..600u32)
        .route(routed)
        .branch("zero", |b| {
            b.pipe(counter(0)).pipe(|x| x * 10).concurrency(4)
        })
        .branch("one", |b| b.pipe(counter(1)).pipe(|x| x * 100))
        .branch("two", |b| {
            b.pipe(counter(2))
                .async_pipe(|x| async move { x + 7 })
                .concurrency(8)
        })
        .join()
        .pipe(|x| x + 1)
        .sink()
        .build()
        .unwrap();
    let got: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    let want: Vec<u32> = (0..600u32)
        .map(|x| match routed(&x) {
            0 => x * 10,
            1 => x * 100,
            _ => x + 7,
        } + 1)
        .collect();
    assert_eq!(sorted(got), sorted(want));
    for s in &seen {
        assert_eq!(s.load(Ordering::Relaxed), 200);
    }
    let stats = p.stats();
    let names: Vec<&str> = stats.stages.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"route#1"), "{names:?}");
    assert!(names.contains(&"route#1 join"), "{names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("route#1[two]/"))
            .count(),
        2,
        "{names:?}"
    );
    let join = stats
        .stages
        .iter()
        .find(|s| s.name == "route#1 join")
        .unwrap();
    assert_eq!(join.outputs, 600);
    // The router's queues to the branches carry each branch's share.
    let inputs: Vec<_> = stats
        .queues
        .iter()
        .filter(|q| q.after.ends_with("]/input"))
        .collect();
    assert_eq!(inputs.len(), 3);
    for q in inputs {
        assert_eq!(q.items, 200, "{}", q.after);
        // Each is read by its branch's first stage.
        let reader = &stats.stages[q.reader.unwrap()];
        assert!(
            reader.name.starts_with(q.after.trim_end_matches("input")),
            "{}",
            reader.name
        );
    }
}

#[test]
fn an_empty_branch_passes_items_through() {
    let got = collect_ok(
        PipelineBuilder::new()
            .source(0..10u32)
            .route(|x: &u32| usize::from(*x >= 5))
            .branch("low", |b| b)
            .branch("high", |b| b.pipe(|x| x * 2))
            .join()
            .sink()
            .build()
            .unwrap(),
    );
    assert_eq!(sorted(got), [0, 1, 2, 3, 4, 10, 12, 14, 16, 18]);
}

#[test]
fn route_keeps_epochs_whole() {
    let mut p = PipelineBuilder::new()
        .continuous_source(vec![1u32, 2, 3, 4, 5, 6])
        .route(|x: &u32| (*x % 2) as usize)
        .branch("even", |b| b.pipe(|x| x).concurrency(3))
        .branch("odd", |b| {
            b.pipe(|x| {
                std::thread::sleep(Duration::from_millis(2));
                x
            })
        })
        .join()
        .sink()
        .build()
        .unwrap();
    for _ in 0..4 {
        let epoch: Vec<u32> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(sorted(epoch), [1, 2, 3, 4, 5, 6]);
    }
    p.stop().unwrap();
}

#[test]
fn a_router_that_panics_or_is_out_of_range_fails_the_item() {
    let got = collect_ok(
        PipelineBuilder::new()
            .source(0..20u32)
            .route(|x: &u32| match x % 5 {
                0 => panic!("router panics on {x}"),
                1 => 9,
                n => (n % 2) as usize,
            })
            .branch("a", |b| b)
            .branch("b", |b| b)
            .join()
            .sink()
            .build()
            .unwrap(),
    );
    let want: Vec<u32> = (0..20u32).filter(|x| x % 5 > 1).collect();
    assert_eq!(sorted(got), want);

    // With no budget the first failure ends the pipeline, with an error naming the route.
    let results: Vec<_> = PipelineBuilder::new()
        .source(CountingSource::new())
        .route(|x: &usize| if *x == 3 { panic!("boom") } else { 0 })
        .branch("a", |b| b)
        .join()
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap()
        .collect();
    let error = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(error.contains("route#1"), "{error}");
}

#[test]
fn a_branch_that_fails_its_budget_ends_the_pipeline() {
    let results: Vec<_> = PipelineBuilder::new()
        .source(CountingSource::new())
        .route(|x: &usize| x % 2)
        .branch("ok", |b| b.pipe(|x| x))
        .branch("bad", |b| {
            b.try_pipe(|x: usize| if x > 10 { Err("bad item") } else { Ok(x) })
                .name("check")
                .max_failures(MaxFailures::Count(2))
        })
        .join()
        .sink()
        .build()
        .unwrap()
        .collect();
    let error = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(error.contains("route#1[bad]/check"), "{error}");
}

#[test]
fn batched_route_puts_every_batch_back_in_element_order() {
    // Branches with several lanes finish out of order; each batch still comes back whole.
    let got = collect_ok(
        PipelineBuilder::new()
            .source(0..1000u32)
            .aggregate(7)
            .route_batched(|x: &u32| (*x % 3) as usize)
            .branch("tens", |b| {
                b.pipe(|v: Vec<u32>| v.into_iter().map(|x| x * 10).collect::<Vec<_>>())
                    .concurrency(4)
            })
            .branch("neg", |b| {
                b.pipe(|v: Vec<u32>| {
                    std::thread::sleep(Duration::from_micros(200));
                    v.into_iter().map(|x| x + 1_000_000).collect::<Vec<_>>()
                })
                .concurrency(3)
            })
            .branch("same", |b| b)
            .join()
            .sink()
            .build()
            .unwrap(),
    );
    let f = |x: u32| match x % 3 {
        0 => x * 10,
        1 => x + 1_000_000,
        _ => x,
    };
    let want: Vec<Vec<u32>> = (0..1000u32)
        .collect::<Vec<_>>()
        .chunks(7)
        .map(|c| c.iter().map(|&x| f(x)).collect())
        .collect();
    // Batches in completion order; each batch whole and in its elements' order.
    let by_first = |v: Vec<Vec<u32>>| -> BTreeMap<u32, Vec<u32>> {
        v.into_iter().map(|b| (b[b.len() - 1], b)).collect()
    };
    assert_eq!(got.len(), want.len());
    assert_eq!(by_first(got), by_first(want));
}

#[test]
fn batched_route_drops_a_batch_whose_branch_returns_the_wrong_length() {
    let mut p = PipelineBuilder::new()
        .source(0..40u32)
        .aggregate(4)
        .route_batched(|x: &u32| (*x % 2) as usize)
        .branch("even", |b| b)
        .branch("odd", |b| {
            b.pipe(|mut v: Vec<u32>| {
                if v.contains(&13) {
                    v.pop();
                }
                v
            })
        })
        .join()
        .sink()
        .build()
        .unwrap();
    let got: Vec<Vec<u32>> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(|b| !b.contains(&12)));
    let join = p
        .stats()
        .stages
        .into_iter()
        .find(|s| s.name.ends_with("join"))
        .unwrap();
    assert_eq!(join.failures, 1);
}

#[test]
fn batched_route_keeps_epochs() {
    let mut p = PipelineBuilder::new()
        .continuous_source((0..10u32).collect::<Vec<_>>())
        .aggregate(3)
        .route_batched(|x: &u32| (*x % 2) as usize)
        .branch("a", |b| {
            b.pipe(|v: Vec<u32>| v)
                .concurrency(2)
                .order(Order::Completion)
        })
        .branch("b", |b| b)
        .join()
        .sink()
        .build()
        .unwrap();
    for _ in 0..3 {
        let epoch: Vec<Vec<u32>> = p.epoch().map(Result::unwrap).collect();
        assert_eq!(
            sorted(epoch),
            [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
    }
    p.stop().unwrap();
}

#[test]
fn the_bottleneck_report_sees_through_merges_and_routes() {
    let slow = |x: u32| {
        std::thread::sleep(Duration::from_millis(2));
        x
    };
    let mut merged = PipelineBuilder::new()
        .merge([
            PipelineBuilder::new()
                .source(0..100u32)
                .pipe(slow)
                .name("slow"),
            PipelineBuilder::new().source(0..60u32),
        ])
        .sink()
        .build()
        .unwrap();
    assert_eq!(merged.by_ref().count(), 160);
    let stats = merged.stats();
    assert_eq!(
        stats.bottleneck().map(|s| s.name.as_str()),
        Some("merge[0]/slow"),
        "{stats}"
    );

    let mut routed = PipelineBuilder::new()
        .source(0..160u32)
        .route(|x: &u32| usize::from(!x.is_multiple_of(8)))
        .branch("fast", |b| b.pipe(|x| x))
        .branch("slow", |b| b.pipe(slow).name("work"))
        .join()
        .sink()
        .build()
        .unwrap();
    assert_eq!(routed.by_ref().count(), 160);
    let stats = routed.stats();
    assert_eq!(
        stats.bottleneck().map(|s| s.name.as_str()),
        Some("route#1[slow]/work"),
        "{stats}"
    );
    assert!(stats.to_string().contains("route#1[slow]/work"));
}

#[test]
fn a_per_item_route_resumes_exactly() {
    let build = |state| {
        PipelineBuilder::new()
            .source(0..50u32)
            .route(|x: &u32| (*x % 2) as usize)
            .branch("even", |b| b.pipe(|x| x).concurrency(3))
            .branch("odd", |b| {
                b.opt_pipe(|x: u32| (!x.is_multiple_of(5)).then_some(x))
            })
            .join()
            .sink()
            .buffer(1)
            .resume_from(state)
            .build()
            .unwrap()
    };
    let mut first = build(None);
    let head: Vec<u32> = first.by_ref().take(12).map(Result::unwrap).collect();
    let state = first.resume_state().unwrap();
    drop(first);
    let rest = collect_ok(build(Some(state)));
    let want: Vec<u32> = (0..50u32).filter(|x| x % 2 == 0 || x % 5 != 0).collect();
    assert_eq!(sorted([head, rest].concat()), want);
}

#[test]
fn a_branch_must_start_from_the_builder_it_is_given() {
    let mut p = PipelineBuilder::new()
        .source(0..3u32)
        .route(|_: &u32| 0)
        .branch("elsewhere", |_| PipelineBuilder::new().source(0..3u32))
        .join()
        .sink()
        .build()
        .unwrap();
    let error = p.start().unwrap_err().to_string();
    assert!(
        error.contains("branch `elsewhere` does not start from the builder"),
        "{error}"
    );
}

/// Stop and drop of merges and routes, run alone in a child process (`leaves_no_thread`)
/// so that no other test's threads blur the count.
#[test]
fn stop_and_drop_leave_no_thread_behind() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "structures::leaves_no_thread",
            "--ignored",
            "--test-threads=1",
        ])
        .env("PIPELINE_STRUCTURES_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success());
}

fn busy_pipelines() -> Vec<Pipeline<usize>> {
    let merge = PipelineBuilder::new()
        .merge([
            PipelineBuilder::new()
                .source(CountingSource::new())
                .pipe(|x| x),
            PipelineBuilder::new()
                .source(CountingSource::new())
                .async_pipe(|x| async move { x })
                .concurrency(4),
        ])
        .policy(MergePolicy::weighted([1.0, 2.0], 3))
        .sink()
        .buffer(1)
        .num_threads(3)
        .build()
        .unwrap();
    let route = PipelineBuilder::new()
        .source(CountingSource::new())
        .route(|x: &usize| x % 2)
        .branch("a", |b| b.pipe(|x| x).concurrency(3))
        .branch("b", |b| b.async_pipe(|x| async move { x }).concurrency(2))
        .join()
        .sink()
        .buffer(1)
        .num_threads(2)
        .build()
        .unwrap();
    let batched = PipelineBuilder::new()
        .source(CountingSource::new())
        .aggregate(5)
        .route_batched(|x: &usize| x % 2)
        .branch("a", |b| b.pipe(|v: Vec<usize>| v).concurrency(2))
        .branch("b", |b| b)
        .join()
        .disaggregate()
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    // A branch failing its budget and a router panic end the pipeline on their own.
    let failing = PipelineBuilder::new()
        .source(CountingSource::new())
        .route(|x: &usize| if *x == 50 { panic!("router") } else { x % 2 })
        .branch("a", |b| {
            b.try_pipe(|x: usize| if x > 30 { Err("no") } else { Ok(x) })
                .max_failures(MaxFailures::Count(1))
        })
        .branch("b", |b| b)
        .join()
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    vec![merge, route, batched, failing]
}

#[test]
#[ignore = "run by stop_and_drop_leave_no_thread_behind, alone in a child process"]
fn leaves_no_thread() {
    if std::env::var_os("PIPELINE_STRUCTURES_CHILD").is_none() {
        return;
    }
    let baseline = settled_thread_count();
    for round in 0..3 {
        for (i, mut p) in busy_pipelines().into_iter().enumerate() {
            p.start().unwrap();
            for _ in 0..(round * 7) {
                if p.next().is_none() {
                    break;
                }
            }
            if round == 1 {
                let _ = p.stop();
            }
            drop(p);
            assert!(
                wait_until(Duration::from_secs(3), || thread_count() <= baseline),
                "round {round}, pipeline {i}: {} threads left over {baseline}",
                thread_count() - baseline
            );
        }
    }
    // The failing one, read to its end, ends by itself too.
    let mut failing = busy_pipelines().pop().unwrap();
    let last = failing.by_ref().last().unwrap();
    assert!(last.is_err());
    drop(failing);
    assert!(wait_until(Duration::from_secs(3), || thread_count() <= baseline));
}

mod dsl {
    use super::sorted;
    use pipeline_runtime::pipeline;
    use pipeline_tests::collect_ok;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Jpeg,
        Png,
    }

    fn kind_of(x: &u32) -> Kind {
        if x.is_multiple_of(2) {
            Kind::Jpeg
        } else {
            Kind::Png
        }
    }

    fn decode_jpeg(x: u32) -> u64 {
        u64::from(x) * 10
    }

    fn decode_png(x: u32) -> u64 {
        u64::from(x) + 1000
    }

    #[test]
    fn merge_and_route_in_the_macro() {
        let p = pipeline! {
            merge(
                source(0..10u32) -> pipe(|x: u32| x + 100),
                source(0..4u32),
                policy = weighted([0.7, 0.3], seed = 7),
                on_end = continue,
            )
            -> route(kind_of, {
                Kind::Jpeg => pipe(decode_jpeg, concurrency = 2),
                Kind::Png => pipe(decode_png) -> pipe(|x: u64| x + 1),
            })
            -> sink(buffer = 2)
        }
        .unwrap();
        let want: Vec<u64> = (100..110u32)
            .chain(0..4)
            .map(|x| {
                if x % 2 == 0 {
                    decode_jpeg(x)
                } else {
                    decode_png(x) + 1
                }
            })
            .collect();
        assert_eq!(sorted(collect_ok(p)), sorted(want));
    }

    #[test]
    fn round_robin_stop_and_batched_route_in_the_macro() {
        let p = pipeline! {
            merge(source(0..3u32), source(10..20u32), policy = round_robin, on_end = stop)
            -> aggregate(4)
            -> route(batched |x: &u32| *x >= 10, {
                true => pipe(|v: Vec<u32>| v.into_iter().map(|x| x * 2).collect::<Vec<_>>()),
                false => pipe(|v: Vec<u32>| v),
            })
            -> sink()
        }
        .unwrap();
        assert_eq!(collect_ok(p), [vec![0, 20, 1, 22], vec![2, 24]]);
    }
}
