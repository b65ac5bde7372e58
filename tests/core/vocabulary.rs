//! The builder's vocabulary: every function shape exists in sync and async form and means
//! the same in both, options follow the stage they configure, and an option given to a stage
//! that does not have it is a build error naming both.

use std::time::Duration;

use futures::stream;
use pipeline_runtime::error::BuildError;
use pipeline_runtime::{pipeline, Order, Pipeline, PipelineBuilder, StageBuilder};

/// Items delivered, and the failures counted by the stage named `shape`.
fn run(p: Pipeline<u32>) -> (Vec<u32>, u64) {
    let mut p = p;
    let mut items: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    items.sort_unstable();
    let failures = p
        .stats()
        .stages
        .iter()
        .find(|s| s.name == "shape")
        .map(|s| s.failures)
        .expect("the stage is named `shape`");
    (items, failures)
}

fn source() -> StageBuilder<u32> {
    PipelineBuilder::new().source(1..=6u32)
}

fn build(stage: StageBuilder<u32>) -> Pipeline<u32> {
    stage.name("shape").concurrency(2).sink().build().unwrap()
}

/// What every shape must give for inputs 1..=6 where 3 is "bad": (items, failures).
fn check(shape: &str, got: (Vec<u32>, u64), items: &[u32], failures: u64) {
    assert_eq!(got.0, items, "{shape}: items");
    assert_eq!(got.1, failures, "{shape}: failures");
}

fn bad(x: u32) -> Result<u32, String> {
    if x == 3 {
        Err(format!("{x} is bad"))
    } else {
        Ok(x * 10)
    }
}

#[test]
fn every_shape_exists_sync_and_async_with_the_same_meaning() {
    let one = [10, 20, 30, 40, 50, 60];
    let no3 = [10, 20, 40, 50, 60];
    // Each input x gives x and x + 100, or for 3 an error after its first output.
    let many = [1, 2, 3, 4, 5, 6, 101, 102, 104, 105, 106];
    let flat = |x: u32| [x, x + 100];
    let try_flat = |x: u32| {
        let second = if x == 3 {
            Err("3 fails midway")
        } else {
            Ok(x + 100)
        };
        [Ok(x), second]
    };

    check("pipe", run(build(source().pipe(|x| x * 10))), &one, 0);
    check("try_pipe", run(build(source().try_pipe(bad))), &no3, 1);
    check(
        "opt_pipe",
        run(build(source().opt_pipe(|x| bad(x).ok()))),
        &no3,
        0,
    );
    let all: Vec<u32> = {
        let mut v: Vec<u32> = (1..=6).chain(101..=106).collect();
        v.sort_unstable();
        v
    };
    check("flat_pipe", run(build(source().flat_pipe(flat))), &all, 0);
    check(
        "try_flat_pipe",
        run(build(source().try_flat_pipe(try_flat))),
        &many,
        1,
    );

    check(
        "async_pipe",
        run(build(source().async_pipe(|x| async move { x * 10 }))),
        &one,
        0,
    );
    check(
        "async_try_pipe",
        run(build(source().async_try_pipe(|x| async move { bad(x) }))),
        &no3,
        1,
    );
    check(
        "async_opt_pipe",
        run(build(
            source().async_opt_pipe(|x| async move { bad(x).ok() }),
        )),
        &no3,
        0,
    );
    check(
        "async_flat_pipe",
        run(build(
            source().async_flat_pipe(move |x| stream::iter(flat(x))),
        )),
        &all,
        0,
    );
    check(
        "async_try_flat_pipe",
        run(build(
            source().async_try_flat_pipe(move |x| stream::iter(try_flat(x))),
        )),
        &many,
        1,
    );
}

#[test]
fn sources_sync_and_async() {
    let collect = |p: Pipeline<u32>| -> Vec<u32> { p.map(Result::unwrap).collect() };
    let p = PipelineBuilder::new()
        .source(0..3u32)
        .sink()
        .build()
        .unwrap();
    assert_eq!(collect(p), [0, 1, 2]);
    let p = PipelineBuilder::new()
        .async_source(stream::iter(0..3u32))
        .sink()
        .build()
        .unwrap();
    assert_eq!(collect(p), [0, 1, 2]);

    // A failing source ends the pipeline after the items before the error.
    let items = [Ok(0u32), Ok(1), Err("no more"), Ok(3)];
    for p in [
        PipelineBuilder::new()
            .try_source(items)
            .sink()
            .build()
            .unwrap(),
        PipelineBuilder::new()
            .async_try_source(stream::iter(items))
            .sink()
            .build()
            .unwrap(),
    ] {
        let got: Vec<Result<u32, String>> = p.map(|r| r.map_err(|e| e.to_string())).collect();
        assert_eq!(got[..2], [Ok(0), Ok(1)]);
        assert!(
            got[2].as_ref().is_err_and(|e| e.contains("no more")),
            "{got:?}"
        );
        assert_eq!(got.len(), 3);
    }
}

#[test]
fn options_follow_their_stage_and_defaults_need_none() {
    // No option at all: one lane, completion order, default queues and sink buffer.
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .pipe(|x| x + 1)
        .aggregate(10)
        .sink()
        .build()
        .unwrap();
    let batches: Vec<Vec<u32>> = p.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 10);
    assert_eq!(batches[0], (1..=10).collect::<Vec<_>>());

    // Options apply to the stage they follow, not to the one before.
    let mut p = PipelineBuilder::new()
        .source(0..50u32)
        .pipe(|x| {
            std::thread::sleep(Duration::from_micros(((50 - x) * 20).into()));
            x
        })
        .concurrency(4)
        .order(Order::Input)
        .name("slow")
        .pipe(|x| x * 2)
        .name("double")
        .aggregate(7)
        .drop_last(true)
        .name("batches")
        .buffer(2)
        .sink()
        .buffer(1)
        .num_threads(4)
        .build()
        .unwrap();
    let got: Vec<Vec<u32>> = p.by_ref().map(Result::unwrap).collect();
    let want: Vec<Vec<u32>> = (0..49u32)
        .map(|x| x * 2)
        .collect::<Vec<_>>()
        .chunks(7)
        .map(<[u32]>::to_vec)
        .collect();
    assert_eq!(got, want, "input order kept, partial batch dropped");
    let stats = p.stats();
    let names: Vec<&str> = stats.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["source", "slow", "double", "batches"]);
    assert_eq!(stats.stages[1].concurrency, 4);
    assert_eq!(stats.stages[2].concurrency, 1);
}

fn build_error(result: Result<Pipeline<u32>, BuildError>) -> String {
    result.expect_err("the definition is wrong").to_string()
}

#[test]
fn an_option_of_another_stage_is_a_build_error_naming_both() {
    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .concurrency(2)
            .sink()
            .build(),
    );
    assert!(
        e.contains("`concurrency`") && e.contains("the source"),
        "{e}"
    );

    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .aggregate(2)
            .order(Order::Input)
            .disaggregate()
            .sink()
            .build(),
    );
    assert!(
        e.contains("`order`") && e.contains("an `aggregate` stage"),
        "{e}"
    );

    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .pipe(|x| x)
            .drop_last(true)
            .sink()
            .build(),
    );
    assert!(
        e.contains("`drop_last`") && e.contains("a `pipe` stage"),
        "{e}"
    );

    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .aggregate(2)
            .disaggregate()
            .name("flatten")
            .sink()
            .build(),
    );
    assert!(e.contains("`name`") && e.contains("`disaggregate`"), "{e}");

    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .async_pipe(|x| async move { x })
            .executor(
                pipeline_runtime::executor::ThreadPool::builder()
                    .build()
                    .unwrap(),
            )
            .sink()
            .build(),
    );
    assert!(e.contains("is async"), "{e}");

    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .sink()
            .buffer(0)
            .build(),
    );
    assert!(e.contains("buffer"), "{e}");
}

#[test]
fn a_chain_assembled_at_run_time_keeps_one_type() {
    fn add_stages(mut b: StageBuilder<u64>, depth: usize) -> StageBuilder<u64> {
        for i in 0..depth {
            b = if i % 2 == 0 {
                b.pipe(|x| x + 1).concurrency(2)
            } else {
                b.aggregate(3).disaggregate()
            };
        }
        b
    }
    let p = add_stages(PipelineBuilder::new().source(0..30u64), 6)
        .sink()
        .build()
        .unwrap();
    let mut got: Vec<u64> = p.map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, (3..33).collect::<Vec<_>>());
}

#[test]
fn the_macro_has_every_shape_too() {
    let bad = |x: u32| if x == 3 { Err("bad") } else { Ok(x) };
    let p = pipeline! {
        source(1..=6u32)
        -> pipe(try flat move |x: u32| [bad(x), Ok(x + 100)])
        -> pipe(async try flat |x: u32| futures::stream::iter([Ok::<_, String>(x)]))
        -> pipe(async opt |x: u32| async move { (x != 104).then_some(x) })
        -> sink(buffer = 2)
    }
    .unwrap();
    let mut got: Vec<u32> = p.map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2, 4, 5, 6, 101, 102, 105, 106]);
}

#[test]
fn build_reports_every_mistake_at_once() {
    let e = build_error(
        PipelineBuilder::new()
            .source(0..3u32)
            .pipe(|x| x)
            .concurrency(0)
            .aggregate(0)
            .disaggregate()
            .sink()
            .num_threads(0)
            .build(),
    );
    assert!(e.contains("3 mistakes"), "{e}");
    let concurrency = e.find("concurrency must").unwrap();
    let batch = e.find("batch size must").unwrap();
    assert!(concurrency < batch, "in definition order: {e}");
    assert!(e.contains("concurrency must be at least 1"), "{e}");
    assert!(e.contains("batch size must be at least 1"), "{e}");
    assert!(e.contains("num_threads must be at least 1"), "{e}");
}
