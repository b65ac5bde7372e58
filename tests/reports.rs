//! Statistics reports through `tracing`: periodic ones at the build's interval, and exactly
//! one final report, captured by a subscriber of the test's own.

use std::time::{Duration, Instant};

use pipeline_runtime::{stats, PipelineBuilder};

type Report = pipeline_tests::capture::Event;

fn capture() -> &'static pipeline_tests::capture::Capture {
    pipeline_tests::capture::capture(stats::TARGET)
}

/// The reports about stage `stage`, in order.
fn reports_for(stage: &str) -> Vec<Report> {
    capture().for_stage(stage)
}

#[test]
fn periodic_reports_fire_at_the_interval_and_one_final_report_at_the_end() {
    capture();
    let interval = Duration::from_millis(50);
    let started = Instant::now();
    let mut p = PipelineBuilder::new()
        .source(0..60u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(5));
            x
        })
        .name("periodic_stage")
        .sink()
        .buffer(2)
        .report_interval(interval)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 60);
    let ran = started.elapsed();
    drop(p);

    let reports = reports_for("periodic_stage");
    let periodic: Vec<&Report> = reports
        .iter()
        .filter(|r| r.field("report") == Some("periodic"))
        .collect();
    let finals: Vec<&Report> = reports
        .iter()
        .filter(|r| r.field("report") == Some("final"))
        .collect();
    assert_eq!(finals.len(), 1, "exactly one final report: {reports:?}");
    assert_eq!(finals[0].field("tasks"), Some("60"));
    assert_eq!(finals[0].field("failures"), Some("0"));
    // The run takes at least 300 ms (60 × 5 ms), so several intervals pass.
    let expected_at_most = (ran.as_millis() / interval.as_millis()) as usize;
    assert!(
        periodic.len() >= 2 && periodic.len() <= expected_at_most,
        "{} periodic reports in {ran:?}",
        periodic.len()
    );
    for pair in periodic.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= interval.mul_f64(0.9),
            "reports come an interval apart"
        );
    }
    let counts: Vec<u64> = periodic
        .iter()
        .map(|r| r.field("tasks").unwrap().parse().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    // Queue and bottleneck events come with each report.
    let all = capture().events();
    let named = |field: &str| -> Vec<&str> { all.iter().filter_map(|r| r.field(field)).collect() };
    assert!(
        named("queue").contains(&"periodic_stage"),
        "{:?}",
        named("queue")
    );
    assert!(
        named("bottleneck").contains(&"periodic_stage"),
        "{:?}",
        named("bottleneck")
    );
}

#[test]
fn without_an_interval_only_the_final_report_comes_and_stats_off_mean_none() {
    capture();
    let p = PipelineBuilder::new()
        .source(0..10u64)
        .pipe(|x: u64| x)
        .name("final_only")
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(p.count(), 10);
    let reports = reports_for("final_only");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].field("report"), Some("final"));

    let mut quiet = PipelineBuilder::new()
        .source(0..10u64)
        .pipe(|x: u64| x)
        .name("stats_off")
        .sink()
        .buffer(2)
        .stats(false)
        .build()
        .unwrap();
    assert_eq!(quiet.by_ref().count(), 10);
    quiet.stop().unwrap();
    drop(quiet);
    assert!(reports_for("stats_off").is_empty());
}

#[test]
fn a_pipeline_stopped_early_reports_once() {
    capture();
    let mut p = PipelineBuilder::new()
        .source(0..)
        .pipe(|x: u64| x)
        .name("stopped_early")
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().take(5).count(), 5);
    p.stop().unwrap();
    drop(p);
    let reports = reports_for("stopped_early");
    assert_eq!(reports.len(), 1, "{reports:?}");
}

#[test]
fn the_final_report_tells_how_long_the_consumer_waited() {
    capture();
    let p = PipelineBuilder::new()
        .source(0..20u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(5));
            x
        })
        .name("keeps_the_consumer_waiting")
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(p.count(), 20);
    let all = capture().events();
    let consumer: Vec<&Report> = all
        .iter()
        .filter(|r| {
            r.field("message")
                .is_some_and(|m| m.contains("bottleneck: `keeps_the_consumer_waiting`"))
                && r.field("consumer_items").is_some()
        })
        .collect();
    assert_eq!(consumer.len(), 1, "{all:?}");
    let event = consumer[0];
    assert_eq!(event.field("report"), Some("final"));
    assert_eq!(event.field("consumer_items"), Some("20"));
    let share: f64 = event.field("wait_share").unwrap().parse().unwrap();
    assert!(share > 0.5, "the consumer did nothing but wait: {share}");
    let wait_us: f64 = event.field("wait_mean_us").unwrap().parse().unwrap();
    assert!(wait_us >= 2_500.0, "{wait_us}");
    assert!(event
        .field("message")
        .unwrap()
        .starts_with("[consumer] waited"));
}
