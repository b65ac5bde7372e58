//! The statistics over time and the picture of a run: a series per stage, values that agree
//! with the run's totals, and an SVG with a panel per stage and the bottleneck marked.

use std::time::Duration;

use pipeline_runtime::PipelineBuilder;

/// The value of attribute `name` in the first element of `svg` after `from` that has it.
fn attribute<'a>(svg: &'a str, from: usize, name: &str) -> Option<&'a str> {
    let key = format!(r#"{name}=""#);
    let start = svg[from..].find(&key)? + from + key.len();
    let end = svg[start..].find('"')? + start;
    Some(&svg[start..end])
}

/// The `data-mean` of series `series` in panel `panel`.
fn panel_mean(svg: &str, panel: &str, series: &str) -> Option<f64> {
    let at = svg.find(&format!(r#"data-panel="{panel}""#))?;
    let end = svg[at..].find("</g>")? + at;
    let line = svg[at..end].find(&format!(r#"data-series="{series}""#))? + at;
    attribute(svg, line, "data-mean")?.parse().ok()
}

#[test]
fn the_series_adds_up_to_the_totals_and_the_picture_shows_every_stage() {
    let items = 120u64;
    let mut p = PipelineBuilder::new()
        .source(0..items)
        .pipe(|x: u64| x + 1)
        .name("fast")
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(5));
            x
        })
        .name("slow & steady")
        .aggregate(4)
        .sink()
        .buffer(2)
        .num_threads(3)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 30);
    let stats = p.stats();
    let series = p.stats_series();

    // At least 600 ms at 50 ms per interval.
    assert!(series.len() >= 5, "{} intervals", series.len());
    assert_eq!(series.starts.len(), series.len());
    assert_eq!(series.starts[0], Duration::ZERO);
    assert!(series.starts[1..]
        .iter()
        .zip(&series.ends)
        .all(|(start, end)| start == end));
    let names: Vec<&str> = series.stages.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<&str> = stats.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(series.queues.len(), stats.queues.len());
    let span = |i: usize| (series.ends[i] - series.starts[i]).as_secs_f64();
    for (s, totals) in series.stages.iter().zip(&stats.stages) {
        assert_eq!(s.items_per_sec.len(), series.len());
        assert_eq!(s.busy_share.len(), series.len());
        // The rates integrate back to the totals: the last mark is the final snapshot.
        let tasks: f64 = (0..series.len())
            .map(|i| s.items_per_sec[i] * span(i))
            .sum();
        assert!(
            (tasks - totals.tasks as f64).abs() < 0.5,
            "{}: {tasks} vs {}",
            s.name,
            totals.tasks
        );
    }
    let consumed: f64 = (0..series.len())
        .map(|i| series.consumer.items_per_sec[i] * span(i))
        .sum();
    assert!((consumed - 30.0).abs() < 0.5, "{consumed}");

    let svg = p.report_svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // A panel per stage (the name escaped) and one for the consumer.
    let panels: Vec<String> = stats
        .stages
        .iter()
        .map(|s| s.name.replace('&', "&amp;"))
        .chain(["consumer".to_owned()])
        .collect();
    assert!(panels.contains(&"slow &amp; steady".to_owned()));
    for name in &panels {
        assert!(svg.contains(&format!(r#"data-panel="{name}""#)), "{name}");
    }
    assert_eq!(svg.matches(r#"class="panel""#).count(), panels.len());
    assert!(!svg.contains("slow & steady"), "raw `&` in the SVG");
    // The slow stage is the bottleneck, framed and labelled; no other panel is.
    assert_eq!(svg.matches(r#"data-bottleneck="true""#).count(), 1);
    let slow_panel = svg.find(r#"data-panel="slow &amp; steady""#).unwrap();
    assert_eq!(attribute(&svg, slow_panel, "data-bottleneck"), Some("true"));
    // The means drawn agree with the totals.
    let slow = &stats.stages[2];
    let busy = panel_mean(&svg, "slow &amp; steady", "busy_share").unwrap();
    assert!(
        (busy - slow.busy_share()).abs() < 0.1,
        "drawn {busy}, totals {}",
        slow.busy_share()
    );
    assert!(busy > 0.7, "{busy}");
    let rate = panel_mean(&svg, "slow &amp; steady", "items_per_sec").unwrap();
    let total_rate = slow.tasks as f64 / stats.elapsed.as_secs_f64();
    assert!(
        (rate - total_rate).abs() < 0.1 * total_rate,
        "drawn {rate}/s, totals {total_rate}/s"
    );
    // The occupancy drawn for the queue in front of the slow stage is the queue's.
    let queue = panel_mean(&svg, "slow &amp; steady", "input_occupancy").unwrap();
    let occupancy = stats.queues[1].occupancy;
    assert!(
        (queue - occupancy).abs() < 0.1,
        "drawn {queue}, totals {occupancy}"
    );
    let wait = panel_mean(&svg, "consumer", "wait_share").unwrap();
    assert!((wait - stats.consumer.wait_share()).abs() < 0.1, "{wait}");
    assert!(svg.contains("time since start (s)") && svg.contains("items/s"));

    let dir = std::env::temp_dir().join(format!("pipeline-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.svg");
    p.write_report(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), p.report_svg());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_long_run_keeps_a_bounded_series() {
    let mut p = PipelineBuilder::new()
        .source(0..4000u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_micros(500));
            x
        })
        .sink()
        .buffer(2)
        .build()
        .unwrap();
    assert_eq!(p.by_ref().count(), 4000);
    let series = p.stats_series();
    // Two seconds or more at 50 ms first, thinned when full: never more than 256 intervals.
    assert!(series.len() > 10 && series.len() <= 256, "{}", series.len());
}
