//! Trace export: with `tracing-chrome` installed, a run writes a Chrome/Perfetto trace
//! whose task spans carry their stage's name, one span per task.

use std::collections::HashMap;
use std::time::Duration;

use pipeline_runtime::PipelineBuilder;
use tracing_chrome::ChromeLayerBuilder;
use tracing_subscriber::prelude::*;

#[test]
fn the_trace_file_is_valid_json_with_a_span_per_task() {
    let path = std::env::temp_dir().join(format!("pipeline-trace-{}.json", std::process::id()));
    let (layer, guard) = ChromeLayerBuilder::new()
        .file(&path)
        .include_args(true)
        .build();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let p = PipelineBuilder::new()
        .source(0..40u64)
        .pipe(|x: u64| {
            std::thread::sleep(Duration::from_millis(1));
            x
        })
        .concurrency(4)
        .name("decode")
        .pipe(|x: u64| x + 1)
        .concurrency(2)
        .name("add")
        .aggregate(8)
        .sink()
        .buffer(2)
        .num_threads(4)
        .build()
        .unwrap();
    assert_eq!(p.map(Result::unwrap).map(|b| b.len()).sum::<usize>(), 40);
    drop(guard); // writes the end of the file

    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON");
    // Count begin and end events of task spans per stage (threaded style: "B" and "E").
    let mut begins: HashMap<String, u64> = HashMap::new();
    let mut ends: HashMap<String, u64> = HashMap::new();
    for e in &events {
        if e["name"] != "task" {
            continue;
        }
        let stage = e["args"]["stage"].as_str().unwrap_or_default().to_owned();
        match e["ph"].as_str() {
            Some("B") => *begins.entry(stage).or_default() += 1,
            Some("E") => *ends.entry(stage).or_default() += 1,
            other => panic!("unexpected phase {other:?} in {e}"),
        }
        assert!(e["ts"].is_number() && e["tid"].is_number());
    }
    assert_eq!(begins.get("decode"), Some(&40), "{begins:?}");
    assert_eq!(begins.get("add"), Some(&40));
    assert_eq!(begins.get("aggregate(8, drop_last=false)"), Some(&40));
    assert_eq!(begins, ends, "every span closed");
    // Four lanes of `decode` on four threads: its spans run on more than one thread.
    let decode_threads: std::collections::HashSet<_> = events
        .iter()
        .filter(|e| e["name"] == "task" && e["args"]["stage"] == "decode")
        .map(|e| e["tid"].as_u64())
        .collect();
    assert!(
        decode_threads.len() > 1,
        "per-stage concurrency shows as parallel tracks"
    );
}
