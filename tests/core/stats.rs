//! Statistics: exact counts under concurrency (aggregate included), percentiles of a known
//! distribution, queue figures, the bottleneck, and statistics turned off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::executor::ThreadPool;
use pipeline_runtime::hook::{StageInfo, TaskHook, TaskOutcome};
use pipeline_runtime::stats::StageKind;
use pipeline_runtime::PipelineBuilder;

fn fails_on_sevens(x: u64) -> Result<u64, String> {
    if x.is_multiple_of(7) {
        Err(format!("{x} is a multiple of 7"))
    } else {
        Ok(x)
    }
}

#[test]
fn counts_are_exact_under_concurrency_and_aggregate() {
    let n = 10_000u64;
    let failing = (0..n).filter(|x| x % 7 == 0).count() as u64;
    let passed = n - failing;
    let batches = passed.div_ceil(64);
    let pool = ThreadPool::builder().num_threads(3).build().unwrap();
    let mut p = PipelineBuilder::new()
        .source(0..n)
        .try_pipe(fails_on_sevens)
        .concurrency(8)
        .name("check")
        .async_pipe(|x: u64| async move { x + 1 })
        .concurrency(16)
        .name("inc")
        .pipe(|x: u64| x)
        .concurrency(4)
        .name("on_pool")
        .executor(&pool)
        .aggregate(64)
        .disaggregate()
        .sink()
        .buffer(8)
        .num_threads(4)
        .queue_capacity(4)
        .build()
        .unwrap();
    let got = p.by_ref().map(Result::unwrap).count() as u64;
    let stats = p.stats();
    assert_eq!(got, passed, "{stats}");
    let by_name = |name: &str| stats.stages.iter().find(|s| s.name == name).unwrap();

    let source = &stats.stages[0];
    assert_eq!((source.tasks, source.outputs), (n, n));
    let check = by_name("check");
    assert_eq!(
        (check.tasks, check.failures, check.outputs),
        (n, failing, passed)
    );
    assert_eq!(
        check.task_time.count, n,
        "every task timed, failed ones too"
    );
    for name in ["inc", "on_pool"] {
        let s = by_name(name);
        assert_eq!(
            (s.tasks, s.failures, s.outputs),
            (passed, 0, passed),
            "{name}"
        );
        assert_eq!(s.task_time.count, passed, "{name}");
    }
    let aggregate = &stats.stages[4];
    assert_eq!(aggregate.kind, StageKind::Aggregate);
    assert_eq!((aggregate.tasks, aggregate.outputs), (passed, batches));
    let disaggregate = &stats.stages[5];
    assert_eq!(
        (disaggregate.tasks, disaggregate.outputs),
        (batches, passed)
    );

    // One queue after each stage; every item put is taken (the aggregate's input included).
    let items: Vec<u64> = stats.queues.iter().map(|q| q.items).collect();
    assert_eq!(items, [n, passed, passed, passed, batches, passed]);
    let after: Vec<&str> = stats.queues.iter().map(|q| q.after.as_str()).collect();
    assert_eq!(after[1..4], ["check", "inc", "on_pool"]);
    for q in &stats.queues {
        assert_eq!(q.put_wait.count, q.items, "queue after {}", q.after);
        assert_eq!(q.get_wait.count, q.items, "queue after {}", q.after);
        assert!((0.0..=1.0).contains(&q.occupancy));
        assert!(q.items_per_sec() > 0.0);
    }
}

/// Records the time of every task of one stage, as the runtime measured it.
#[derive(Default, Clone)]
struct TaskTimes(Arc<Mutex<Vec<Duration>>>);

impl TaskHook for TaskTimes {
    fn task_ended(&self, stage: &StageInfo, _: TaskOutcome, elapsed: Duration) {
        if stage.name == "sleepy" {
            self.0.lock().unwrap().push(elapsed);
        }
    }
}

#[test]
fn percentiles_of_a_known_sleep_distribution() {
    // 95% of the tasks sleep 2 ms and 5% sleep 30 ms. On a loaded machine any sleep may end
    // late (a 2 ms one took 26 ms beside two busy loops), so the percentiles are checked
    // against the exact ones of the task times the runtime measured (a hook sees each), to
    // the histogram's precision (a bucket is 1/16 of its value wide, read at its midpoint);
    // and against the sleeps, which never end early, from below.
    let fast = Duration::from_millis(2);
    let slow = Duration::from_millis(30);
    let times = TaskTimes::default();
    let mut p = PipelineBuilder::new()
        .source(0..200u64)
        .async_pipe(move |x: u64| async move {
            tokio::time::sleep(if x.is_multiple_of(20) { slow } else { fast }).await;
            x
        })
        .concurrency(32)
        .name("sleepy")
        .sink()
        .buffer(4)
        .task_hook(times.clone())
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 200);
    let t = p.stats().stages[1].task_time;
    assert_eq!(t.count, 200);
    let mut exact = times.0.lock().unwrap().clone();
    exact.sort_unstable();
    assert_eq!(exact.len(), 200);
    // The q-quantile is the value of rank ceil(q × n).
    let quantile = |q: f64| exact[(q * exact.len() as f64).ceil() as usize - 1];
    let near = |got: Duration, want: Duration| {
        got.as_secs_f64() >= want.as_secs_f64() * (1.0 - 1.0 / 24.0) - 1e-6
            && got.as_secs_f64() <= want.as_secs_f64() * (1.0 + 1.0 / 24.0) + 1e-6
    };
    for (name, got, q) in [
        ("p50", t.p50, 0.5),
        ("p90", t.p90, 0.9),
        ("p99", t.p99, 0.99),
    ] {
        assert!(
            near(got, quantile(q)),
            "{name} {got:?}, exact {:?} (sorted times {exact:?})",
            quantile(q)
        );
    }
    let max = *exact.last().unwrap();
    assert!(
        t.max.abs_diff(max) <= Duration::from_micros(1),
        "max {:?} vs {max:?}",
        t.max
    );
    let exact_mean = exact.iter().sum::<Duration>() / 200;
    assert!(
        t.mean.abs_diff(exact_mean) <= Duration::from_micros(1),
        "mean {:?} vs {exact_mean:?}",
        t.mean
    );
    // From below: every sleep at least its length, so the 190 fast tasks put p50 and p90 at
    // 2 ms or more, and the 10 slow ones (5%) put p99 at 30 ms or more.
    assert!(t.p50 >= fast.mul_f64(0.97), "p50 {:?}", t.p50);
    assert!(t.p90 >= fast.mul_f64(0.97), "p90 {:?}", t.p90);
    assert!(t.p99 >= slow.mul_f64(0.97), "p99 {:?}", t.p99);
    assert!(t.max >= slow);
    let floor_mean = (fast * 190 + slow * 10) / 200;
    assert!(t.mean >= floor_mean, "mean {:?}", t.mean);
}

#[test]
fn a_slow_stage_is_the_bottleneck_and_its_input_queue_stays_full() {
    // Occupancy is the share of samples that found the queue holding an item. The queue
    // after `slow` holds one from `slow`'s put until `fast_after` wakes up and takes it: a
    // wake-up's share of `slow`'s period, so that period is long (20 ms) beside the wake-ups
    // of a loaded machine (2 ms sleeps let a lagging wake-up fill 62% of the samples beside
    // two busy loops). The queue before it is empty only once the source has run dry.
    let mut p = PipelineBuilder::new()
        .source(0..40u64)
        .pipe(|x: u64| x + 1)
        .name("fast_before")
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(20));
            x
        })
        .name("slow")
        .pipe(|x: u64| x * 2)
        .name("fast_after")
        .sink()
        .buffer(4)
        .num_threads(4)
        .queue_capacity(8)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 40);
    let stats = p.stats();
    assert_eq!(stats.bottleneck().map(|s| s.name.as_str()), Some("slow"));
    assert!(!stats.consumer_bound());
    let before_slow = &stats.queues[1];
    let after_slow = &stats.queues[2];
    assert_eq!(before_slow.after, "fast_before");
    assert!(before_slow.occupancy > 0.8, "{before_slow:?}");
    assert!(after_slow.occupancy < 0.5, "{after_slow:?}");
    assert!(stats.stages[2].busy_share() > 0.8, "{:?}", stats.stages[2]);
    let table = stats.to_string();
    assert!(
        table.contains("bottleneck: `slow`"),
        "the table names the bottleneck:\n{table}"
    );
    assert!(table
        .lines()
        .any(|l| l.starts_with("slow ") && l.ends_with("<- bottleneck")));
}

#[test]
fn a_slow_consumer_shows_as_consumer_bound() {
    let mut p = PipelineBuilder::new()
        .source(0..120u64)
        .pipe(|x: u64| x)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    // The sink queue holds 4 items: to run empty, the stage would have to miss 4 refills
    // (20 ms) in a row. 120 items, so that the queue's drain at the end (4 samples below
    // full) and a late refill on a loaded machine weigh little against the 90% bar.
    for item in p.by_ref() {
        item.unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = p.stats();
    assert!(stats.consumer_bound(), "{stats}");
    assert!(stats.to_string().contains("bottleneck: the consumer"));
}

#[test]
fn statistics_off_keep_counts_only() {
    let mut p = PipelineBuilder::new()
        .source(0..1_000u64)
        .try_pipe(fails_on_sevens)
        .concurrency(4)
        .aggregate(10)
        .sink()
        .buffer(4)
        .stats(false)
        .build()
        .unwrap();
    let batches = p.by_ref().count();
    let stats = p.stats();
    assert!(stats.queues.is_empty());
    let s = &stats.stages[1];
    assert_eq!((s.tasks, s.failures), (1_000, 143));
    assert_eq!(s.task_time.count, 0, "not timed");
    assert_eq!(stats.stages[2].outputs, batches as u64);
}

#[test]
fn a_snapshot_is_readable_while_running_and_frozen_after_the_end() {
    let mut p = PipelineBuilder::new()
        .source(0..40u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(1));
            x
        })
        .sink()
        .buffer(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let first: Vec<u64> = p.by_ref().take(5).map(Result::unwrap).collect();
    assert_eq!(first.len(), 5);
    let running = p.stats();
    // A task is counted once its output is sent, so the fifth may not be counted yet.
    let tasks = running.stages[1].tasks;
    assert!((4..40).contains(&tasks), "{tasks} tasks");
    assert!(running.elapsed > Duration::ZERO);
    assert_eq!(p.by_ref().count(), 35);
    let ended = p.stats();
    assert_eq!(ended.stages[1].tasks, 40);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        p.stats().elapsed,
        ended.elapsed,
        "frozen once the pipeline ended"
    );
}

#[test]
fn report_interval_is_checked() {
    let zero = PipelineBuilder::new()
        .source(0..1)
        .sink()
        .buffer(1)
        .report_interval(Duration::ZERO)
        .build();
    assert!(zero.unwrap_err().message().contains("report_interval"));
    let without_stats = PipelineBuilder::new()
        .source(0..1)
        .sink()
        .buffer(1)
        .stats(false)
        .report_interval(Duration::from_secs(1))
        .build();
    assert!(without_stats.unwrap_err().message().contains("statistics"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_read_as_a_stream_or_with_a_timeout_are_counted() {
    use futures::StreamExt;

    let mut p = PipelineBuilder::new()
        .source(0..500u64)
        .pipe(|x: u64| x)
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    let first = p.get_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first, 0);
    let rest = p.stream().count().await;
    assert_eq!(rest, 499);
    let stats = p.stats();
    let sink_queue = stats.queues.last().unwrap();
    assert_eq!(sink_queue.items, 500, "the consumer's takes, both ways");
    assert_eq!(sink_queue.get_wait.count, 500);
}
