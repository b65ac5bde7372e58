//! Every stage kind produces what it should.

use std::time::Duration;

use pipeline_runtime::stats::StageKind;
use pipeline_runtime::PipelineBuilder;
use pipeline_tests::collect_ok;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn source_straight_to_sink() {
    let p = PipelineBuilder::new()
        .source(0..10)
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), (0..10).collect::<Vec<_>>());
}

#[test]
fn sync_pipe_maps_every_item() {
    let p = PipelineBuilder::new()
        .source(0..100u32)
        .pipe(|x| x * 3)
        .concurrency(4)
        .sink()
        .buffer(3)
        .num_threads(2)
        .build()
        .unwrap();
    assert_eq!(
        sorted(collect_ok(p)),
        (0..100).map(|x| x * 3).collect::<Vec<_>>()
    );
}

#[test]
fn optional_stage_drops_none() {
    let p = PipelineBuilder::new()
        .source(0..20u32)
        .opt_pipe(|x| (x % 2 == 0).then_some(x))
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), (0..20).step_by(2).collect::<Vec<_>>());
}

#[test]
fn fallible_stage_drops_err_items() {
    let mut p = PipelineBuilder::new()
        .source(0..10u32)
        .try_pipe(|x| if x == 3 { Err("three") } else { Ok(x) })
        .name("no_three")
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    let out: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(out, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    let stats = p.stats();
    let stage = stats.stages.iter().find(|s| s.name == "no_three").unwrap();
    assert_eq!((stage.tasks, stage.failures, stage.outputs), (10, 1, 9));
}

#[test]
fn one_to_many_stage_flattens() {
    let p = PipelineBuilder::new()
        .source(0..4u32)
        .flat_pipe(|x| (0..x).map(move |i| (x, i)))
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(
        collect_ok(p),
        vec![(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    );
}

#[test]
fn one_to_many_failing_midway_keeps_earlier_outputs() {
    // SPDL keeps what a generator yielded before it raised: [(0,0),(0,1),(1,0),(2,0),(2,1)].
    let p = PipelineBuilder::new()
        .source(0..3u32)
        .try_flat_pipe(|x| {
            (0..2u32).map(move |i| {
                if x == 1 && i == 1 {
                    Err("boom")
                } else {
                    Ok((x, i))
                }
            })
        })
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]);
}

#[test]
fn generator_streams() {
    // A lazy iterator whose second `next()` waits for the consumer to have read the first.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let seen_rx = std::sync::Arc::new(std::sync::Mutex::new(seen_rx));
    let mut p = PipelineBuilder::new()
        .source(std::iter::once(0u32))
        .flat_pipe(move |_| {
            let rx = seen_rx.clone();
            let mut step = 0;
            std::iter::from_fn(move || {
                step += 1;
                match step {
                    1 => Some(1u32),
                    2 => {
                        let ok = rx
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(5))
                            .is_ok();
                        Some(if ok { 2 } else { 0 })
                    }
                    _ => None,
                }
            })
        })
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    assert_eq!(p.get_timeout(Duration::from_secs(2)).unwrap(), 1);
    seen_tx.send(()).unwrap();
    assert_eq!(p.get_timeout(Duration::from_secs(5)).unwrap(), 2);
    assert!(p.next().is_none());
}

#[test]
fn async_stages_of_every_shape() {
    let p = PipelineBuilder::new()
        .source(0..10u64)
        .async_pipe(|x| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            x + 1
        })
        .concurrency(4)
        .async_opt_pipe(|x| async move { (x % 2 == 0).then_some(x) })
        .async_try_pipe(|x| async move {
            if x == 4 {
                Err("four")
            } else {
                Ok(x)
            }
        })
        .async_flat_pipe(|x| futures::stream::iter([x, x * 100]))
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    assert_eq!(
        sorted(collect_ok(p)),
        sorted(vec![2, 200, 6, 600, 8, 800, 10, 1000])
    );
}

#[test]
fn disaggregate_restores_items_in_order() {
    let mut p = PipelineBuilder::new()
        .source(0..10u32)
        .aggregate(3)
        .disaggregate()
        .sink()
        .buffer(3)
        .build()
        .unwrap();
    let out: Vec<u32> = p.by_ref().map(Result::unwrap).collect();
    assert_eq!(out, (0..10).collect::<Vec<_>>());
    let kinds: Vec<StageKind> = p.stats().stages.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StageKind::Source,
            StageKind::Aggregate,
            StageKind::Disaggregate
        ]
    );
}

#[test]
fn stream_source() {
    use futures::StreamExt;
    let p = PipelineBuilder::new()
        .async_source(futures::stream::iter(0..5u32).then(|x| async move { x * 2 }))
        .pipe(|x| x + 1)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(collect_ok(p), vec![1, 3, 5, 7, 9]);
}

#[test]
fn a_running_pipeline_is_the_source_of_another() {
    let inner = PipelineBuilder::new()
        .source(0..50u32)
        .pipe(|x| x * 2)
        .concurrency(2)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    let outer = PipelineBuilder::new()
        .try_source(inner)
        .pipe(|x| x + 1)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    assert_eq!(
        sorted(collect_ok(outer)),
        (0..50).map(|x| x * 2 + 1).collect::<Vec<_>>()
    );
}

fn decode(x: u32) -> u32 {
    x
}

#[test]
fn stage_names_default_to_the_function_name() {
    let mut p = PipelineBuilder::new()
        .source(0..3u32)
        .pipe(decode)
        .pipe(|x| x)
        .pipe(|x| x)
        .name("named")
        .aggregate(2)
        .sink()
        .buffer(1)
        .build()
        .unwrap();
    p.by_ref().for_each(drop);
    let names: Vec<String> = p.stats().stages.into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        vec![
            "source",
            "decode",
            "pipe#2",
            "named",
            "aggregate(2, drop_last=false)"
        ]
    );
}

#[test]
fn invalid_definitions_are_build_errors() {
    let zero_conc = PipelineBuilder::new()
        .source(0..1)
        .pipe(|x: i32| x)
        .concurrency(0)
        .name("z")
        .sink()
        .buffer(1)
        .build();
    assert!(zero_conc
        .unwrap_err()
        .to_string()
        .contains("stage `z`: concurrency must be at least 1"));

    let zero_batch = PipelineBuilder::new()
        .source(0..1)
        .aggregate(0)
        .sink()
        .buffer(1)
        .build();
    assert!(zero_batch.unwrap_err().to_string().contains("batch size"));

    let zero_sink = PipelineBuilder::new().source(0..1).sink().buffer(0).build();
    assert!(zero_sink.unwrap_err().to_string().contains("sink"));

    let async_with_executor = PipelineBuilder::new()
        .source(0..1)
        .async_pipe(|x: i32| async move { x })
        .name("a")
        .executor(pipeline_runtime::executor::Executor::Default)
        .sink()
        .buffer(1)
        .build();
    assert!(async_with_executor
        .unwrap_err()
        .to_string()
        .contains("async"));

    let bad_rate = PipelineBuilder::new()
        .source(0..1)
        .sink()
        .buffer(1)
        .max_failures(pipeline_runtime::MaxFailures::rate(1.5))
        .build();
    assert!(bad_rate.unwrap_err().to_string().contains("(0, 1]"));

    let ordered_many = PipelineBuilder::new()
        .source(0..1)
        .flat_pipe(|x: i32| vec![x])
        .concurrency(2)
        .order(pipeline_runtime::Order::Input)
        .sink()
        .buffer(1)
        .build();
    assert!(ordered_many
        .unwrap_err()
        .to_string()
        .contains("Order::Input"));

    let zero_threads = PipelineBuilder::new()
        .source(0..1)
        .sink()
        .buffer(1)
        .num_threads(0)
        .build();
    assert!(zero_threads.is_err());
}

#[tokio::test]
async fn pipeline_reads_as_a_stream() {
    use futures::StreamExt;
    let p = PipelineBuilder::new()
        .source(0..20u32)
        .pipe(|x| x + 1)
        .concurrency(3)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let items: Vec<u32> = p.into_stream().map(Result::unwrap).collect().await;
    assert_eq!(sorted(items), (1..=20).collect::<Vec<_>>());
}
