//! The picture of a run: the statistics over time ([`StatsSeries`]) drawn as a
//! self-contained SVG, one panel per stage and one for the consumer, the bottleneck marked.
//!
//! Each panel has time on the x axis, items per second on the left axis, and shares (busy,
//! occupancy of the queue feeding the stage, the consumer's wait) in percent on the right.
//! Every line carries its series' name and time-weighted mean as `data-*` attributes, so a
//! program (or a test) can read the figures back without parsing the geometry.

use std::fmt::Write as _;
use std::time::Duration;

use super::table::duration;
use super::{PipelineStats, StageKind, StatsSeries};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 70.0;
const HEADER: f64 = 118.0;
const PANEL: f64 = 110.0;
/// Room above a panel for its title, and below it for the time labels.
const GAP: f64 = 58.0;

const ITEMS: &str = "#1f77b4";
const BUSY: &str = "#ff7f0e";
const QUEUE: &str = "#2ca02c";
const WAIT: &str = "#d62728";

/// One line of a panel.
struct Line {
    /// The series' name, for `data-series`.
    name: &'static str,
    colour: &'static str,
    dashed: bool,
    /// Values per interval (`None`: not measured then); shares are in `[0, 1]`.
    values: Vec<Option<f64>>,
    /// Drawn against the right axis (a share) or the left one (items/s).
    share: bool,
}

/// A panel: a title, whether it is the bottleneck, and its lines.
struct Panel<'a> {
    name: &'a str,
    title: String,
    bottleneck: bool,
    lines: Vec<Line>,
}

/// At most this many points per line: the series' intervals are merged into bins of at
/// least `1 / BINS` of the run, so that a short last interval, or tasks longer than an
/// interval (whose busy time counts when they end), do not draw spikes.
const BINS: usize = 60;

/// Renders the report: a header with the run's figures, then the panels.
pub(crate) fn render(series: &StatsSeries, stats: &PipelineStats) -> String {
    let binned = bin(series, BINS);
    let series = &binned;
    let bottleneck = if stats.stages.len() > 1 {
        stats.bottleneck().map(|s| s.name.as_str())
    } else {
        None
    };
    let mut panels = Vec::new();
    for (i, stage) in series.stages.iter().enumerate() {
        let figures = stats.stages.iter().find(|s| s.name == stage.name);
        let mut title = format!(
            "{} ({}, {} lane{})",
            stage.name,
            kind_word(stage.kind),
            stage.concurrency,
            if stage.concurrency == 1 { "" } else { "s" }
        );
        if let Some(s) = figures {
            let _ = write!(title, ": {} tasks", s.tasks);
            if s.kind != StageKind::Source && s.tasks > 0 {
                let _ = write!(title, ", mean {}", duration(s.mean_task_time()));
            }
            let _ = write!(title, ", busy {:.0}%", s.busy_share() * 100.0);
        }
        let mut lines = vec![
            Line {
                name: "items_per_sec",
                colour: ITEMS,
                dashed: false,
                values: some(&stage.items_per_sec),
                share: false,
            },
            Line {
                name: "busy_share",
                colour: BUSY,
                dashed: false,
                values: some(&stage.busy_share),
                share: true,
            },
        ];
        // The queue that feeds stage `i`: the one it reads (in a chain, the one after stage
        // `i - 1`; a merge or a join reads several, and none is drawn).
        let feeding = stats.queues.iter().position(|q| q.reader == Some(i));
        if let Some(q) = feeding.and_then(|j| series.queues.get(j)) {
            lines.push(Line {
                name: "input_occupancy",
                colour: QUEUE,
                dashed: true,
                values: q.occupancy.clone(),
                share: true,
            });
        }
        panels.push(Panel {
            name: &stage.name,
            title,
            bottleneck: Some(stage.name.as_str()) == bottleneck,
            lines,
        });
    }
    let c = &stats.consumer;
    let consumer_title = if c.items == 0 {
        "consumer: no items taken".to_owned()
    } else {
        format!(
            "consumer: {} items; waited {} per item (p90 {}), {:.0}% of its time; step {}",
            c.items,
            duration(c.wait.mean),
            duration(c.wait.p90),
            c.wait_share() * 100.0,
            duration(c.step.mean),
        )
    };
    let mut consumer_lines = vec![
        Line {
            name: "items_per_sec",
            colour: ITEMS,
            dashed: false,
            values: some(&series.consumer.items_per_sec),
            share: false,
        },
        Line {
            name: "wait_share",
            colour: WAIT,
            dashed: false,
            values: some(&series.consumer.wait_share),
            share: true,
        },
    ];
    if let Some(q) = series.queues.last() {
        consumer_lines.push(Line {
            name: "input_occupancy",
            colour: QUEUE,
            dashed: true,
            values: q.occupancy.clone(),
            share: true,
        });
    }
    panels.push(Panel {
        name: "consumer",
        title: consumer_title,
        bottleneck: stats.consumer_bound(),
        lines: consumer_lines,
    });

    let height = HEADER + panels.len() as f64 * (PANEL + GAP) + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    header(&mut out, stats);
    let end = series
        .ends
        .last()
        .copied()
        .unwrap_or(stats.elapsed)
        .max(Duration::from_millis(1));
    for (k, panel) in panels.iter().enumerate() {
        let top = HEADER + k as f64 * (PANEL + GAP) + 22.0;
        draw_panel(&mut out, series, panel, top, end.as_secs_f64());
    }
    out.push_str("</svg>\n");
    out
}

/// The series with consecutive intervals merged into at most about `bins` bins of equal
/// length or more; each value is the time-weighted mean of the intervals it merges (of the
/// measured ones, for occupancy).
fn bin(series: &StatsSeries, bins: usize) -> StatsSeries {
    let Some(end) = series.ends.last() else {
        return series.clone();
    };
    let width = end.as_secs_f64() / bins.max(1) as f64;
    // Each bin: the range of intervals it merges.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut first = 0;
    for i in 0..series.len() {
        let span = (series.ends[i] - series.starts[first]).as_secs_f64();
        if span >= width * 0.95 || i + 1 == series.len() {
            groups.push(first..i + 1);
            first = i + 1;
        }
    }
    // A short last bin joins the one before it.
    if groups.len() > 1 {
        let last = groups[groups.len() - 1].clone();
        let span = (series.ends[last.end - 1] - series.starts[last.start]).as_secs_f64();
        if span < width / 2.0 {
            groups.pop();
            if let Some(previous) = groups.last_mut() {
                previous.end = last.end;
            }
        }
    }
    let dt = |i: usize| (series.ends[i] - series.starts[i]).as_secs_f64();
    let mean = |values: &[f64]| -> Vec<f64> {
        groups
            .iter()
            .map(|g| {
                let time: f64 = g.clone().map(dt).sum();
                let sum: f64 = g.clone().map(|i| values[i] * dt(i)).sum();
                if time > 0.0 {
                    sum / time
                } else {
                    0.0
                }
            })
            .collect()
    };
    let mean_measured = |values: &[Option<f64>]| -> Vec<Option<f64>> {
        groups
            .iter()
            .map(|g| {
                let measured: Vec<(f64, f64)> = g
                    .clone()
                    .filter_map(|i| values[i].map(|v| (v, dt(i))))
                    .collect();
                let time: f64 = measured.iter().map(|(_, t)| t).sum();
                (time > 0.0).then(|| measured.iter().map(|(v, t)| v * t).sum::<f64>() / time)
            })
            .collect()
    };
    let mut out = series.clone();
    out.starts = groups.iter().map(|g| series.starts[g.start]).collect();
    out.ends = groups.iter().map(|g| series.ends[g.end - 1]).collect();
    for stage in &mut out.stages {
        stage.items_per_sec = mean(&stage.items_per_sec);
        stage.busy_share = mean(&stage.busy_share);
    }
    for queue in &mut out.queues {
        queue.occupancy = mean_measured(&queue.occupancy);
    }
    out.consumer.items_per_sec = mean(&out.consumer.items_per_sec);
    out.consumer.wait_share = mean(&out.consumer.wait_share);
    out
}

fn some(values: &[f64]) -> Vec<Option<f64>> {
    values.iter().copied().map(Some).collect()
}

fn kind_word(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Source => "source",
        StageKind::Pipe => "pipe",
        StageKind::Aggregate => "aggregate",
        StageKind::Disaggregate => "disaggregate",
        StageKind::Merge => "merge",
        StageKind::Route => "route",
    }
}

/// The title, the run's figures in words, and the legend.
fn header(out: &mut String, stats: &PipelineStats) {
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="26" font-size="17" font-weight="bold">Pipeline run: {} stages over {}, {} items to the consumer</text>"#,
        stats.stages.len(),
        duration(stats.elapsed),
        stats.consumer.items,
    );
    let mut y = 48.0;
    for line in stats.summary_lines() {
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{y}" font-size="13">{}</text>"#,
            escape(&line)
        );
        y += 18.0;
    }
    let legend = [
        (ITEMS, false, "items/s (left axis)"),
        (BUSY, false, "busy share of the lanes (right)"),
        (QUEUE, true, "input queue held items (right)"),
        (WAIT, false, "consumer waiting (right)"),
    ];
    let mut x = LEFT;
    let y = HEADER - 12.0;
    for (colour, dashed, label) in legend {
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{colour}" stroke-width="2.5"{}/>"#,
            y - 4.0,
            x + 22.0,
            y - 4.0,
            dash(dashed)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y}" font-size="11">{label}</text>"#,
            x + 27.0
        );
        x += 40.0 + label.len() as f64 * 5.6;
    }
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="6 3""#
    } else {
        ""
    }
}

fn draw_panel(out: &mut String, series: &StatsSeries, panel: &Panel<'_>, top: f64, end: f64) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    // Values map to `y0` (zero) .. `y1` (the top of the axis), a little below the frame so
    // that a line at 100% stays clear of it.
    let (y0, y1) = (top + PANEL, top + 8.0);
    let frame = if panel.bottleneck { WAIT } else { "#999" };
    let _ = writeln!(
        out,
        r#"<g class="panel" data-panel="{}" data-bottleneck="{}">"#,
        escape(panel.name),
        panel.bottleneck
    );
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(&panel.title)
    );
    if panel.bottleneck {
        let _ = writeln!(
            out,
            r#"<text x="{x1}" y="{}" font-size="13" font-weight="bold" fill="{WAIT}" text-anchor="end">bottleneck</text>"#,
            top - 8.0
        );
    }
    // Grid and the right axis (shares).
    for pct in [0, 25, 50, 75, 100] {
        let y = y0 - (y0 - y1) * f64::from(pct) / 100.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/>"##
        );
        if pct % 50 == 0 {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{:.1}" font-size="10" fill="#555">{pct}%</text>"##,
                x1 + 5.0,
                y + 3.5
            );
        }
    }
    // The left axis: items/s, from 0 to a round number above the largest value.
    let max_items = panel
        .lines
        .iter()
        .filter(|l| !l.share)
        .flat_map(|l| l.values.iter().copied().flatten())
        .fold(0.0f64, f64::max);
    // Some room above the largest value, so the line does not run along the top.
    let top_items = nice_ceiling(max_items * 1.1);
    for k in 0..=2 {
        let v = top_items * f64::from(k) / 2.0;
        let y = y0 - (y0 - y1) * f64::from(k) / 2.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" font-size="10" fill="{ITEMS}" text-anchor="end">{}</text>"##,
            x0 - 5.0,
            y + 3.5,
            number(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="10" fill="{ITEMS}" text-anchor="middle" transform="rotate(-90 {} {})">items/s</text>"#,
        x0 - 48.0,
        (y0 + y1) / 2.0,
        x0 - 48.0,
        (y0 + y1) / 2.0
    );
    // The time axis.
    let step = nice_step(end / 6.0);
    let mut t = 0.0;
    while t <= end * 1.0001 {
        let x = x0 + (x1 - x0) * t / end;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" font-size="10" fill="#555" text-anchor="middle">{}</text>"##,
            y0 + 4.0,
            y0 + 15.0,
            fixed(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{x1}" y="{}" font-size="10" fill="#555" text-anchor="end">time since start (s)</text>"##,
        y0 + 28.0
    );
    // The frame under the lines, so that a line at 100% stays visible.
    let _ = writeln!(
        out,
        r#"<rect x="{x0}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="{frame}" stroke-width="{}"/>"#,
        x1 - x0,
        if panel.bottleneck { 2.5 } else { 1.0 }
    );
    // The lines, through the middle of each interval, broken where nothing was measured.
    for line in &panel.lines {
        let scale = if line.share { 1.0 } else { top_items };
        let mut path = String::new();
        let mut pen_down = false;
        for (i, v) in line.values.iter().enumerate() {
            let (Some(a), Some(b)) = (series.starts.get(i), series.ends.get(i)) else {
                break;
            };
            let Some(v) = v else {
                pen_down = false;
                continue;
            };
            let mid = (a.as_secs_f64() + b.as_secs_f64()) / 2.0;
            let x = x0 + (x1 - x0) * (mid / end).min(1.0);
            let y = y0 - (y0 - y1) * (v / scale).clamp(0.0, 1.0);
            let _ = write!(path, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
            pen_down = true;
        }
        let _ = writeln!(
            out,
            r#"<path class="series" data-series="{}" data-mean="{:.4}" fill="none" stroke="{}" stroke-width="{}"{} d="{}"/>"#,
            line.name,
            time_weighted_mean(series, &line.values),
            line.colour,
            if line.share { 1.6 } else { 2.0 },
            dash(line.dashed),
            path.trim_end()
        );
    }
    out.push_str("</g>\n");
}

/// The mean of a series over the time it was measured (each interval weighted by its
/// length).
fn time_weighted_mean(series: &StatsSeries, values: &[Option<f64>]) -> f64 {
    let (mut sum, mut time) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let (Some(a), Some(b), Some(v)) = (series.starts.get(i), series.ends.get(i), v) else {
            continue;
        };
        let dt = b.saturating_sub(*a).as_secs_f64();
        sum += v * dt;
        time += dt;
    }
    if time > 0.0 {
        sum / time
    } else {
        0.0
    }
}

/// The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k) at or above `v` (1
/// for nothing), so that the axis is never much taller than the data.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * base)
}

/// A round step near `v`: 1, 2 or 5 × 10^k.
fn nice_step(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    let m = v / base;
    base * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// A number for an axis label: no more digits than it needs.
fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `v` with as many decimals as `step` needs, so that the labels of one axis agree.
fn fixed(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ConsumerSeries, StageSeries};

    #[test]
    fn bins_merge_intervals_by_time_and_keep_the_means() {
        let ms = Duration::from_millis;
        // Ten 10 ms intervals and a 1 ms tail, into about five bins of 20 ms.
        let mut starts: Vec<Duration> = (0..10).map(|i| ms(10 * i)).collect();
        let mut ends: Vec<Duration> = (1..=10).map(|i| ms(10 * i)).collect();
        starts.push(ms(100));
        ends.push(ms(101));
        let items: Vec<f64> = (0..11).map(|i| f64::from(i % 2) * 100.0).collect();
        let series = StatsSeries {
            starts,
            ends,
            stages: vec![StageSeries {
                name: "s".into(),
                kind: StageKind::Pipe,
                concurrency: 1,
                items_per_sec: items.clone(),
                busy_share: vec![0.5; 11],
            }],
            queues: Vec::new(),
            consumer: ConsumerSeries {
                items_per_sec: items,
                wait_share: vec![1.0; 11],
            },
        };
        let b = bin(&series, 5);
        assert_eq!(b.len(), 5, "{:?}", b.ends);
        assert_eq!(b.starts[0], Duration::ZERO);
        assert_eq!(
            *b.ends.last().unwrap(),
            ms(101),
            "the tail joins the last bin"
        );
        assert!((b.stages[0].items_per_sec[0] - 50.0).abs() < 1e-9);
        assert!(b.stages[0]
            .busy_share
            .iter()
            .all(|&v| (v - 0.5).abs() < 1e-9));
        let mean = |s: &StatsSeries, v: &[f64]| time_weighted_mean(s, &some(v));
        let before = mean(&series, &series.stages[0].items_per_sec);
        let after = mean(&b, &b.stages[0].items_per_sec);
        assert!((before - after).abs() < 1e-9, "{before} vs {after}");
    }

    #[test]
    fn round_numbers_for_the_axes() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(9.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 150.0);
        assert_eq!(nice_ceiling(214.0), 250.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
        assert_eq!(nice_step(0.9), 1.0);
        assert_eq!(nice_step(2.6), 2.0);
        assert_eq!(nice_step(0.04), 0.05);
        assert_eq!(number(2500.0), "2500");
        assert_eq!(number(25_000.0), "25k");
        assert_eq!(number(0.5), "0.50");
        assert_eq!(fixed(1.0, 0.2), "1.0");
        assert_eq!(fixed(20.0, 5.0), "20");
        assert_eq!(fixed(0.15, 0.05), "0.15");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
