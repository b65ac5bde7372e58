//! Exact resume: a pipeline rebuilt from `resume_state()` delivers exactly what the consumer
//! had not received, with failed and dropped items staying so, in either output order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::{Order, Pipeline, PipelineBuilder, ResumeState};

/// Items 0..n through a failing stage (x % 7 == 3 fails), a filter (x % 5 == 1 is dropped)
/// and a jittered stage, into batches of 4.
fn batches(
    n: u32,
    order: Order,
    concurrency: usize,
    state: Option<ResumeState>,
) -> Pipeline<Vec<u32>> {
    PipelineBuilder::new()
        .source(0..n)
        .try_pipe(|x| {
            if x % 7 == 3 {
                Err(format!("{x} fails"))
            } else {
                Ok(x)
            }
        })
        .concurrency(concurrency)
        .order(order)
        .opt_pipe(|x| (x % 5 != 1).then_some(x))
        .pipe(|x| {
            std::thread::sleep(Duration::from_micros(u64::from(x * 7919 % 300)));
            x
        })
        .concurrency(concurrency)
        .order(order)
        .aggregate(4)
        .sink()
        .buffer(2)
        .queue_capacity(3)
        .num_threads(4)
        .resume_from(state)
        .build()
        .unwrap()
}

fn expected_items(n: u32) -> Vec<u32> {
    (0..n).filter(|x| x % 7 != 3 && x % 5 != 1).collect()
}

/// Reads `k` batches, then the state (the pipeline is dropped with items still in flight).
fn read_then_state(mut pipeline: Pipeline<Vec<u32>>, k: usize) -> (Vec<Vec<u32>>, ResumeState) {
    let read: Vec<Vec<u32>> = pipeline.by_ref().take(k).map(Result::unwrap).collect();
    assert_eq!(read.len(), k);
    // Let the pipeline run ahead, so that failures and items in flight are past the consumer.
    std::thread::sleep(Duration::from_millis(20));
    let state = pipeline.resume_state().expect("tracking is on");
    (read, state)
}

#[test]
fn input_order_resumes_with_the_same_batches() {
    let n = 300;
    let whole: Vec<Vec<u32>> = batches(n, Order::Input, 4, None)
        .map(Result::unwrap)
        .collect();
    assert_eq!(whole.concat(), expected_items(n));
    for k in [0, 1, 7, 20] {
        let (mut got, state) = read_then_state(batches(n, Order::Input, 4, None), k);
        got.extend(batches(n, Order::Input, 3, Some(state)).map(Result::unwrap));
        assert_eq!(got, whole, "stopped after {k} batches");
    }
}

#[test]
fn completion_order_resumes_with_the_same_items_none_twice() {
    let n = 300;
    for k in [3, 11] {
        let (first, state) = read_then_state(batches(n, Order::Completion, 8, None), k);
        let rest: Vec<Vec<u32>> = batches(n, Order::Completion, 8, Some(state))
            .map(Result::unwrap)
            .collect();
        let mut all: Vec<u32> = first.concat();
        all.extend(rest.concat());
        all.sort_unstable();
        assert_eq!(all, expected_items(n), "stopped after {k} batches");
    }
}

#[test]
fn a_state_taken_twice_in_a_row_resumes_again() {
    let n = 200;
    let whole: Vec<Vec<u32>> = batches(n, Order::Input, 2, None)
        .map(Result::unwrap)
        .collect();
    let (mut got, state) = read_then_state(batches(n, Order::Input, 2, None), 5);
    let (more, state) = read_then_state(batches(n, Order::Input, 2, Some(state)), 5);
    got.extend(more);
    got.extend(batches(n, Order::Input, 2, Some(state)).map(Result::unwrap));
    assert_eq!(got, whole);
}

#[test]
fn a_continuous_source_resumes_in_the_middle_of_a_later_epoch() {
    let build = |state: Option<ResumeState>| {
        PipelineBuilder::new()
            .continuous_source(0..10u32)
            .pipe(|x| x * 10)
            .concurrency(3)
            .order(Order::Input)
            .aggregate(3)
            .sink()
            .buffer(1)
            .resume_from(state)
            .build()
            .unwrap()
    };
    let mut whole = build(None);
    let epochs: Vec<Vec<Vec<u32>>> = (0..4)
        .map(|_| whole.epoch().map(Result::unwrap).collect())
        .collect();
    drop(whole);

    let mut first = build(None);
    let mut got: Vec<Vec<Vec<u32>>> = (0..2)
        .map(|_| first.epoch().map(Result::unwrap).collect())
        .collect();
    got.push(first.epoch().take(2).map(Result::unwrap).collect());
    let state = first.resume_state().unwrap();
    drop(first);
    assert_eq!(state.epoch(), 2, "{state:?}");

    let mut resumed = build(Some(state));
    got[2].extend(resumed.epoch().map(Result::unwrap));
    got.push(resumed.epoch().map(Result::unwrap).collect());
    assert_eq!(got, epochs);
}

/// 0..50, input x into outputs (x, 0..x % 4), one lane: a stop lands inside inputs.
fn fanned(state: Option<ResumeState>) -> Pipeline<(u32, u32)> {
    PipelineBuilder::new()
        .source(0..50u32)
        .flat_pipe(|x| (0..x % 4).map(move |k| (x, k)))
        .sink()
        .buffer(1)
        .queue_capacity(1)
        .resume_from(state)
        .build()
        .unwrap()
}

#[test]
fn a_one_to_many_input_split_by_a_stop_gives_only_its_remaining_outputs() {
    let straight: Vec<(u32, u32)> = fanned(None).map(Result::unwrap).collect();
    for cut in [1, 7, 30, 31, 32] {
        let mut first = fanned(None);
        let got: Vec<(u32, u32)> = first.by_ref().take(cut).map(Result::unwrap).collect();
        let state = first.resume_state().unwrap();
        drop(first);
        let json = serde_json::to_string(&state).unwrap();
        let rest: Vec<(u32, u32)> = fanned(Some(serde_json::from_str(&json).unwrap()))
            .map(Result::unwrap)
            .collect();
        let again: Vec<(u32, u32)> = got.iter().chain(&rest).copied().collect();
        assert_eq!(again, straight, "stopped after {cut}: {json}");
    }
}

/// A state of `fanned` stopped inside an input, as JSON with a `fan_outs` record.
fn split_state() -> serde_json::Value {
    for cut in 1..40 {
        let mut first = fanned(None);
        let _ = first.by_ref().take(cut).count();
        let state = serde_json::to_value(first.resume_state().unwrap()).unwrap();
        if state.get("fan_outs").is_some() {
            return state;
        }
    }
    panic!("no stop split an input");
}

#[test]
fn a_state_with_malformed_fan_out_records_is_refused() {
    let state = split_state();
    let record = &state["fan_outs"][0];
    assert!(
        record["input"].is_array() && record["done"].is_array(),
        "{state}"
    );
    let tampered = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = state.clone();
        edit(&mut json["fan_outs"]);
        json
    };
    let refusals = [
        (
            tampered(&|f| f[0]["input"] = serde_json::json!([1_000_000])),
            "is not pending",
        ),
        (
            tampered(&|f| f[0]["done"] = serde_json::json!([[5, 2]])),
            "empty or reversed",
        ),
        (
            tampered(&|f| f[0]["done"] = serde_json::json!([[0, 4], [2, 6]])),
            "ascending",
        ),
        (
            tampered(&|f| {
                let again = f[0].clone();
                f.as_array_mut().unwrap().push(again);
            }),
            // (twice, or more records than pending positions)
            "fan-out records",
        ),
        (
            tampered(&|f| f[0]["input"] = serde_json::json!([])),
            "no input",
        ),
    ];
    for (json, why) in refusals {
        let state: ResumeState = serde_json::from_value(json).unwrap();
        let error = PipelineBuilder::new()
            .source(0..50u32)
            .flat_pipe(|x| (0..x % 4).map(move |k| (x, k)))
            .sink()
            .resume_from(state)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("malformed state") && error.contains(why),
            "{error}"
        );
    }
    // Not even a state: an unknown outcome, an index range of three numbers.
    for bad in [
        tampered(&|f| f[0]["outcome"] = "lost".into()),
        tampered(&|f| f[0]["done"] = serde_json::json!([[0, 1, 2]])),
    ] {
        assert!(serde_json::from_value::<ResumeState>(bad).is_err());
    }
}

#[test]
fn a_fan_out_after_a_fan_out_is_refused_with_resume_tracking_only() {
    let nested = |track: bool, memory: bool| {
        let source = PipelineBuilder::new().source(0..10u32);
        let source = if memory {
            source.item_bytes(|_| 4)
        } else {
            source
        };
        let sink = source
            .flat_pipe(|x| [x, x])
            .aggregate(2)
            .disaggregate()
            .sink()
            .track_resume(track);
        let sink = if memory {
            sink.memory_limit(1 << 20)
        } else {
            sink
        };
        let mut pipeline = sink.build().unwrap();
        pipeline.start().map(|()| pipeline.by_ref().count())
    };
    let error = nested(true, false).unwrap_err().to_string();
    assert!(
        error.contains("`disaggregate`") && error.contains("second on its path"),
        "{error}"
    );
    // The memory budget and the accounts need no output tracking.
    assert_eq!(nested(false, true).unwrap(), 20);
    assert_eq!(nested(false, false).unwrap(), 20);
    // One fan-out on each branch of a route is one per path.
    let mut routed = PipelineBuilder::new()
        .source(0..10u32)
        .route(|x: &u32| (*x % 2) as usize)
        .branch("a", |b| b.flat_pipe(|x| [x, x]))
        .branch("b", |b| b.flat_pipe(|x| [x]))
        .join()
        .sink()
        .track_resume(true)
        .build()
        .unwrap();
    assert_eq!(routed.by_ref().count(), 15);
}

#[test]
fn the_state_holds_only_the_items_in_flight() {
    let release = Arc::new(AtomicBool::new(false));
    let stuck = release.clone();
    let mut pipeline = PipelineBuilder::new()
        .source(0..u32::MAX)
        .pipe(move |x| {
            while x == 3 && !stuck.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            x
        })
        .concurrency(4)
        .sink()
        .buffer(2)
        .queue_capacity(2)
        .num_threads(4)
        .track_resume(true)
        .build()
        .unwrap();
    // Item 3 is stuck in a lane while the others flow past it.
    let seen: Vec<u32> = pipeline.by_ref().take(2000).map(Result::unwrap).collect();
    assert!(!seen.contains(&3));
    let state = pipeline.resume_state().unwrap();
    // In flight: the source's item, 2 in its queue, 4 lanes, 2 in the sink's queue.
    let bound = 1 + 2 + 4 + 2;
    assert!(state.frontier() > 2000, "{}", state.frontier());
    assert!(state.pending().contains(&3));
    assert!(
        state.pending().len() <= bound,
        "{} pending: {:?}",
        state.pending().len(),
        state.pending()
    );
    release.store(true, Ordering::Relaxed);
}

#[test]
fn a_state_from_another_shape_is_refused() {
    let mut p = batches(100, Order::Input, 2, None);
    p.by_ref().take(2).for_each(drop);
    let state = p.resume_state().unwrap();
    let other = PipelineBuilder::new()
        .source(0..100u32)
        .aggregate(8)
        .sink()
        .resume_from(state.clone())
        .build()
        .unwrap_err();
    assert!(other.message().contains("another shape"), "{other}");
    assert!(other.message().contains("aggregate(4"), "{other}");

    let later = ResumeState::start_of_epoch(state.shape(), 2);
    let once = PipelineBuilder::new()
        .source(0..100u32)
        .try_pipe(Ok::<_, String>)
        .opt_pipe(Some)
        .pipe(|x| x)
        .aggregate(4)
        .sink()
        .resume_from(later)
        .build()
        .unwrap_err();
    assert!(once.message().contains("not continuous"), "{once}");
}

#[test]
fn without_tracking_there_is_no_state() {
    let p = PipelineBuilder::new().source(0..3).sink().build().unwrap();
    assert!(p.resume_state().is_none());
}

/// A state taken from a resumed pipeline before it has come back to the old frontier keeps
/// what the old state knew beyond it: items delivered out of order before the first stop
/// are not delivered again after the second (the "second resume within an epoch" defect).
#[test]
fn a_second_stop_before_the_old_frontier_keeps_what_was_delivered_beyond_it() {
    let build = |state: Option<ResumeState>, concurrency: usize, pause: fn(u32) -> u64| {
        PipelineBuilder::new()
            .source(0..60u32)
            .pipe(move |x| {
                std::thread::sleep(Duration::from_millis(pause(x)));
                x
            })
            .concurrency(concurrency)
            .order(Order::Completion)
            .sink()
            .buffer(1)
            .queue_capacity(1)
            .num_threads(4)
            .resume_from(state)
            .build()
            .unwrap()
    };
    // 10, 20 and 30 hold three lanes while the fourth delivers the items between them.
    let mut first = build(None, 4, |x| if x % 10 == 0 && x > 0 { 1000 } else { 0 });
    let mut got: Vec<u32> = first.by_ref().take(33).map(Result::unwrap).collect();
    let state = first.resume_state().unwrap();
    drop(first);
    assert!(state.pending().starts_with(&[10, 20, 30]), "{state:?}");
    // One slow lane: its source stops behind 30, below the first run's frontier.
    let mut second = build(Some(state.clone()), 1, |_| 100);
    second.start().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let again = second.resume_state().unwrap();
    drop(second);
    // Its source took 10, 20 and 30 at most: the items the first run delivered after 30 are
    // known from the first state only (before the fix, they came again).
    assert_eq!(again.frontier(), state.frontier(), "{again:?}");
    got.extend(build(Some(again), 4, |_| 0).map(Result::unwrap));
    got.sort_unstable();
    assert_eq!(got, (0..60).collect::<Vec<_>>(), "each item once");
}

/// A weighted merge of two continuous inputs (its state says where each source and the
/// merge stand).
fn two_mixed(state: Option<ResumeState>) -> Result<Pipeline<u32>, String> {
    let input = |base: u32| {
        PipelineBuilder::new()
            .continuous_source(base..base + 20)
            .pipe(|x| x)
    };
    let mut p = PipelineBuilder::new()
        .merge([input(0), input(100)])
        .policy(pipeline_runtime::structure::MergePolicy::weighted(
            [1.0, 2.0],
            3,
        ))
        .sink()
        .buffer(1)
        .resume_from(state)
        .build()
        .map_err(|e| e.to_string())?;
    p.start().map_err(|e| e.to_string())?;
    Ok(p)
}

/// An edit of a state's JSON.
type Edit = dyn Fn(&mut serde_json::Value);

#[test]
fn a_merge_state_made_up_or_tampered_with_is_refused_with_a_reason() {
    let mut p = two_mixed(None).unwrap();
    p.by_ref().take(30).for_each(drop);
    let state = p.resume_state().unwrap();
    drop(p);
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["sources"].as_array().map(Vec::len), Some(2), "{json}");
    // A state taken without a merge keeps the old form: no per-source fields.
    let mut plain = batches(40, Order::Input, 2, None);
    plain.by_ref().take(2).for_each(drop);
    let plain = serde_json::to_value(plain.resume_state().unwrap()).unwrap();
    assert!(
        plain.get("sources").is_none() && plain.get("merge").is_none(),
        "{plain}"
    );

    let tampered = |edit: &Edit| -> String {
        let mut json = json.clone();
        edit(&mut json);
        let state: ResumeState = match serde_json::from_value(json) {
            Ok(state) => state,
            Err(e) => return e.to_string(),
        };
        match two_mixed(Some(state)) {
            Ok(_) => "resumed".to_owned(),
            Err(e) => e,
        }
    };
    assert_eq!(tampered(&|_| {}), "resumed");
    let cases: [(&str, &Edit); 8] = [
        ("a frontier of 1152921504606846976 is out of range", &|j| {
            j["frontier"] = serde_json::json!(1u64 << 60);
        }),
        ("the state has 1 source(s) but this pipeline has", &|j| {
            j["sources"].as_array_mut().unwrap().pop();
        }),
        ("merge has 3 inputs", &|j| {
            let inputs = j["merge"]["cursor"]["inputs"].as_array_mut().unwrap();
            inputs.push(inputs[0].clone());
        }),
        ("item in flight from input 7", &|j| {
            j["merge"]["pending"] = serde_json::json!([7]);
        }),
        ("epoch end(s) in flight", &|j| {
            j["merge"]["cursor"]["epoch"] = serde_json::json!(40);
        }),
        ("too many pending positions", &|j| {
            j["sources"][0]["pending"] = serde_json::json!([[0, 1u64 << 40]]);
            j["sources"][0]["frontier"] = serde_json::json!(1u64 << 41);
        }),
        ("all zeros", &|j| {
            j["merge"]["cursor"]["rng"] = serde_json::json!([0, 0, 0, 0]);
        }),
        ("but its source resumes in pass", &|j| {
            j["merge"]["cursor"]["inputs"][1]["pass"] = serde_json::json!(1u64 << 20);
        }),
    ];
    for (expected, edit) in cases {
        let error = tampered(edit);
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

#[test]
fn a_fan_out_in_a_pipeline_with_a_merge_is_refused_with_resume_tracking_only() {
    let run = |track: bool, after: bool| {
        let input = |base: u32| {
            let chain = PipelineBuilder::new().source(base..base + 5);
            match after {
                true => chain.pipe(|x| x),
                false => chain.flat_pipe(|x| [x, x]),
            }
        };
        let merged = PipelineBuilder::new().merge([input(0), input(100)]);
        let merged = match after {
            true => merged.flat_pipe(|x| [x, x]),
            false => merged.pipe(|x| x),
        };
        let mut pipeline = merged.sink().track_resume(track).build().unwrap();
        pipeline.start().map(|()| pipeline.by_ref().count())
    };
    for after in [true, false] {
        let error = run(true, after).unwrap_err().to_string();
        assert!(
            error.contains("`flat_pipe`") && error.contains("with a merge"),
            "{error}"
        );
        assert_eq!(run(false, after).unwrap(), 20);
    }
}
