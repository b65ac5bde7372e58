//! Task hooks: every task is seen (failed and panicked ones included), stage start and end
//! once per stage, per-stage factories, and a panicking hook does no harm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::hook::{StageInfo, TaskHook, TaskOutcome};
use pipeline_runtime::PipelineBuilder;

#[derive(Default, Debug, Clone)]
struct Seen {
    stage_started: u32,
    stage_ended: u32,
    task_started: u64,
    outcomes: HashMap<&'static str, u64>,
    longest: Duration,
}

#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<HashMap<String, Seen>>>);

impl Recorder {
    fn get(&self, stage: &str) -> Seen {
        self.0
            .lock()
            .unwrap()
            .get(stage)
            .cloned()
            .unwrap_or_default()
    }

    fn with(&self, stage: &StageInfo, f: impl FnOnce(&mut Seen)) {
        f(self
            .0
            .lock()
            .unwrap()
            .entry(stage.name.clone())
            .or_default());
    }
}

impl TaskHook for Recorder {
    fn stage_started(&self, stage: &StageInfo) {
        self.with(stage, |s| s.stage_started += 1);
    }
    fn stage_ended(&self, stage: &StageInfo) {
        self.with(stage, |s| s.stage_ended += 1);
    }
    fn task_started(&self, stage: &StageInfo) {
        self.with(stage, |s| s.task_started += 1);
    }
    fn task_ended(&self, stage: &StageInfo, outcome: TaskOutcome, elapsed: Duration) {
        let key = match outcome {
            TaskOutcome::Succeeded => "ok",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Panicked => "panicked",
        };
        self.with(stage, |s| {
            *s.outcomes.entry(key).or_default() += 1;
            s.longest = s.longest.max(elapsed);
        });
    }
}

fn check(x: u64) -> Result<u64, String> {
    if x == 13 {
        panic!("thirteen");
    }
    if x.is_multiple_of(5) {
        return Err(format!("{x}"));
    }
    Ok(x)
}

#[test]
fn hooks_see_every_task_including_failed_and_panicked_ones() {
    for stats in [true, false] {
        let rec = Recorder::default();
        let mut p = PipelineBuilder::new()
            .source(0..1_000u64)
            .try_pipe(check)
            .concurrency(8)
            .name("check")
            .async_pipe(|x: u64| async move { x })
            .concurrency(4)
            .name("async_id")
            .aggregate(10)
            .sink()
            .buffer(4)
            .num_threads(4)
            .stats(stats)
            .task_hook(rec.clone())
            .build()
            .unwrap();
        let passed = 1_000 - 200 - 1;
        assert_eq!(
            p.by_ref()
                .map(Result::unwrap)
                .map(|b| b.len())
                .sum::<usize>(),
            passed
        );

        let check = rec.get("check");
        assert_eq!(check.task_started, 1_000);
        assert_eq!(check.outcomes["ok"], passed as u64);
        assert_eq!(check.outcomes["failed"], 200);
        assert_eq!(check.outcomes["panicked"], 1);
        let async_id = rec.get("async_id");
        assert_eq!(async_id.task_started, passed as u64);
        assert_eq!(async_id.outcomes["ok"], passed as u64);
        let aggregate = rec.get(&p.stats().stages[3].name);
        assert_eq!(
            aggregate.task_started, passed as u64,
            "one task per item batched"
        );
        // Every stage, the source included, started and ended exactly once.
        for stage in p.stats().stages {
            let seen = rec.get(&stage.name);
            assert_eq!(
                (seen.stage_started, seen.stage_ended),
                (1, 1),
                "{}",
                stage.name
            );
        }
        assert_eq!(
            rec.get("source").task_started,
            0,
            "the source has stage hooks only"
        );
    }
}

#[test]
fn hooks_time_tasks_with_statistics_off() {
    let rec = Recorder::default();
    let p = PipelineBuilder::new()
        .source(0..3u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(5));
            x
        })
        .name("sleep")
        .sink()
        .buffer(1)
        .stats(false)
        .task_hook(rec.clone())
        .build()
        .unwrap();
    assert_eq!(p.count(), 3);
    assert!(rec.get("sleep").longest >= Duration::from_millis(5));
}

#[test]
fn stage_end_is_seen_when_the_pipeline_is_stopped_early() {
    let rec = Recorder::default();
    let mut p = PipelineBuilder::new()
        .source(0..)
        .pipe(|x: u64| x)
        .concurrency(2)
        .name("id")
        .sink()
        .buffer(1)
        .task_hook(rec.clone())
        .build()
        .unwrap();
    assert_eq!(p.by_ref().take(3).count(), 3);
    p.stop().unwrap();
    for stage in ["source", "id"] {
        let seen = rec.get(stage);
        assert_eq!((seen.stage_started, seen.stage_ended), (1, 1), "{stage}");
    }
    let id = rec.get("id");
    let ended: u64 = id.outcomes.values().sum();
    assert!(id.task_started >= 3);
    assert!(
        id.task_started - ended <= 2,
        "at most one task per lane cut short"
    );
}

#[test]
fn a_factory_chooses_hooks_per_stage() {
    let rec = Recorder::default();
    let for_factory = rec.clone();
    let p = PipelineBuilder::new()
        .source(0..10u64)
        .pipe(|x: u64| x)
        .name("watched")
        .pipe(|x: u64| x)
        .name("ignored")
        .sink()
        .buffer(1)
        .hook_factory(move |stage: &StageInfo| -> Vec<Arc<dyn TaskHook>> {
            if stage.name == "watched" {
                assert_eq!(stage.index, 1);
                vec![Arc::new(for_factory.clone())]
            } else {
                Vec::new()
            }
        })
        .build()
        .unwrap();
    assert_eq!(p.count(), 10);
    assert_eq!(rec.get("watched").task_started, 10);
    assert_eq!(rec.get("ignored").task_started, 0);
    assert_eq!(rec.get("source").stage_started, 0);
}

struct Panics;

impl TaskHook for Panics {
    fn task_started(&self, _: &StageInfo) {
        panic!("hook bug");
    }
    fn stage_ended(&self, _: &StageInfo) {
        panic!("hook bug at the end");
    }
}

#[test]
fn a_panicking_hook_does_not_fail_items_or_stages() {
    let mut p = PipelineBuilder::new()
        .source(0..50u64)
        .pipe(|x: u64| x)
        .concurrency(2)
        .sink()
        .buffer(2)
        .task_hook(Panics)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().map(Result::unwrap).count(), 50);
    p.stop().unwrap();
    assert_eq!(p.stats().stages[1].failures, 0);
}
