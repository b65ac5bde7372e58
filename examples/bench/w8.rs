//! W8: autotune. Source of `n` ids → `fetch` (async: sleeps 3 ms, returns a payload of
//! 64 KiB) → `decode` (sync: SHA-256 of the first 64 KiB, four times) → `augment` (sync:
//! SHA-256 of it once) → `aggregate(32)` → sink.
//!
//! * `W8.untuned`: every concurrency 1, a default pool of 1 thread.
//! * `W8.best`: the best fixed configuration of a sweep run first (short runs of each
//!   point of a grid: fetch 8/16/32, decode 1-4, augment 1-2, threads cores-1..=cores,
//!   the space autotune searches with its default thread limit), then measured like the
//!   others; prints the configuration.
//! * `W8.tuned`: `W8.untuned`'s configuration with autotune on; prints the steady
//!   throughput (over the last 40% of the run) and the time at which the throughput over
//!   half a second first reached 90% of it (`t90_s`), and the configuration it ended with.
//! * `W8.tuned.budget`: as `W8.tuned` with payloads of 1 MiB and `memory_limit` 32 MiB;
//!   prints `peak_inflight_bytes` (the budget's own peak) and `peak_alloc_bytes` (payload
//!   bytes alive at once, counted by the workload itself from allocation to the consumer's
//!   drop).
//!
//! With `W8_DECISIONS` set in the environment, the tuned ids print autotune's decisions to
//! stderr.
//!
//! W6 with autotune (`W6.tuned`) is here too: W6.c2's pipeline from concurrency 1 on one
//! thread, with autotune on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_examples::datasets;
use pipeline_runtime::images::{self, ImageTransform};
use pipeline_runtime::stats::PipelineStats;
use pipeline_runtime::{Pipeline, PipelineBuilder, StageBuilder};
use sha2::{Digest, Sha256};

use super::{check, Outcome};

const KIB: usize = 1024;
/// The bytes each stage hashes (the payload's first 64 KiB, whatever its size).
const HASHED: usize = 64 * KIB;
const BATCH: usize = 32;

/// A fixed configuration: concurrency of each stage and the pool's threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    fetch: usize,
    decode: usize,
    augment: usize,
    threads: usize,
}

impl Config {
    const UNTUNED: Config = Config {
        fetch: 1,
        decode: 1,
        augment: 1,
        threads: 1,
    };

    fn json(&self) -> String {
        format!(
            "{{\"fetch\": {}, \"decode\": {}, \"augment\": {}, \"threads\": {}}}",
            self.fetch, self.decode, self.augment, self.threads
        )
    }

    fn from_stats(stats: &PipelineStats) -> Config {
        let c = |name: &str| {
            stats
                .stages
                .iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.concurrency)
        };
        Config {
            fetch: c("fetch"),
            decode: c("decode"),
            augment: c("augment"),
            threads: stats.pool_threads,
        }
    }
}

/// A payload and the digest of its hashed prefix.
struct Item {
    id: u64,
    payload: Vec<u8>,
    digest: [u8; 32],
}

/// Payload bytes alive now, and the most at once.
#[derive(Default)]
struct Alive {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Alive {
    fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// When the consumer received its batches: (seconds from the start, items so far).
type Arrivals = Vec<(f64, u64)>;

/// How a run is set up.
struct Run {
    n: u64,
    payload: usize,
    /// `None`: autotune from the untuned configuration.
    fixed: Option<Config>,
    memory_limit: Option<u64>,
}

/// Runs W8 once; returns the outcome, the consumer's arrival times (seconds from the start,
/// items so far) and the final statistics.
fn run_once(run: &Run) -> Result<(Outcome, Arrivals, PipelineStats), String> {
    let alive = Arc::new(Alive::default());
    let payload = run.payload;
    let t0 = Instant::now();
    let source = PipelineBuilder::new().source(0..run.n);
    let source: StageBuilder<u64> = match run.memory_limit {
        Some(_) => source.item_bytes(move |_| payload),
        None => source,
    };
    let fetch_alive = alive.clone();
    let mut stages = source
        .async_pipe(move |id: u64| {
            let alive = fetch_alive.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                alive.add(payload as u64);
                Item {
                    id,
                    payload: vec![id as u8; payload],
                    digest: [0; 32],
                }
            }
        })
        .name("fetch");
    if let Some(c) = run.fixed {
        stages = stages.concurrency(c.fetch);
    }
    let mut stages = stages
        .pipe(|mut item: Item| {
            let mut digest = [0u8; 32];
            for _ in 0..4 {
                digest = sha(&item.payload[..HASHED.min(item.payload.len())]);
            }
            item.digest = digest;
            item
        })
        .name("decode");
    if let Some(c) = run.fixed {
        stages = stages.concurrency(c.decode);
    }
    let mut stages = stages
        .pipe(|mut item: Item| {
            let again = sha(&item.payload[..HASHED.min(item.payload.len())]);
            item.digest[0] ^= again[0];
            item
        })
        .name("augment");
    if let Some(c) = run.fixed {
        stages = stages.concurrency(c.augment);
    }
    let mut sink = stages.aggregate(BATCH).sink();
    sink = match run.fixed {
        Some(c) => sink.num_threads(c.threads),
        None => sink.num_threads(1).autotune(true),
    };
    if let Some(limit) = run.memory_limit {
        sink = sink.memory_limit(limit);
    }
    let mut pipeline: Pipeline<Vec<Item>> = sink.build().map_err(|e| e.to_string())?;
    let (mut count, mut id_sum) = (0u64, 0u64);
    let mut arrivals = Vec::with_capacity(run.n as usize / BATCH + 1);
    for batch in pipeline.by_ref() {
        let batch = batch.map_err(|e| e.to_string())?;
        for item in &batch {
            check(item.payload.len() == payload, "payload size")?;
            check(item.digest != [0; 32], "hashed")?;
            id_sum += item.id;
        }
        count += batch.len() as u64;
        alive.sub((batch.len() * payload) as u64);
        drop(batch);
        arrivals.push((t0.elapsed().as_secs_f64(), count));
    }
    let stats = pipeline.stats();
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(count == run.n, "item count")?;
    check(id_sum == run.n * (run.n - 1) / 2, "every id once")?;
    let mut extra = Vec::new();
    if let Some(memory) = stats.memory {
        extra.push(("peak_inflight_bytes", memory.peak.to_string()));
        extra.push(("memory_limit", memory.limit.to_string()));
        extra.push((
            "peak_alloc_bytes",
            alive.peak.load(Ordering::Relaxed).to_string(),
        ));
    }
    Ok((
        Outcome {
            n_items: count,
            wall,
            extra,
        },
        arrivals,
        stats,
    ))
}

/// Steady throughput (items/s over the last 40% of the run) and the first time at which the
/// throughput over the next half second reached 90% of it.
fn ramp(arrivals: &[(f64, u64)]) -> (f64, Option<f64>) {
    let Some(&(end, total)) = arrivals.last() else {
        return (0.0, None);
    };
    let from = end * 0.6;
    let at = |t: f64| -> (f64, u64) {
        arrivals
            .iter()
            .copied()
            .find(|&(time, _)| time >= t)
            .unwrap_or((end, total))
    };
    let (t_from, n_from) = at(from);
    let steady = (total - n_from) as f64 / (end - t_from).max(1e-9);
    const SPAN: f64 = 0.5;
    let mut before = (0.0, 0u64);
    for &(t, n) in arrivals {
        let (t_end, n_end) = at(t + SPAN);
        if t_end - t >= SPAN * 0.9 && (n_end - n) as f64 / (t_end - t) >= 0.9 * steady {
            return (steady, Some(before.0));
        }
        before = (t, n);
    }
    (steady, None)
}

pub(crate) fn untuned(n: u64) -> Result<Outcome, String> {
    let (mut o, _, _) = run_once(&Run {
        n,
        payload: 64 * KIB,
        fixed: Some(Config::UNTUNED),
        memory_limit: None,
    })?;
    o.extra.push(("config", Config::UNTUNED.json()));
    Ok(o)
}

pub(crate) fn best(n: u64) -> Result<Outcome, String> {
    let cores = std::thread::available_parallelism().map_or(4, |c| c.get());
    let mut grid = Vec::new();
    // The space autotune searches: the pool within the thread limit (the cores).
    for fetch in [8, 16, 32] {
        for decode in [1, 2, 3, 4] {
            for augment in [1, 2] {
                for threads in (cores.saturating_sub(1).max(1))..=cores {
                    grid.push(Config {
                        fetch,
                        decode,
                        augment,
                        threads,
                    });
                }
            }
        }
    }
    let mut best: Option<(f64, Config)> = None;
    let sweep_started = Instant::now();
    for config in grid {
        let (o, _, _) = run_once(&Run {
            n: 1_500,
            payload: 64 * KIB,
            fixed: Some(config),
            memory_limit: None,
        })?;
        let rate = o.n_items as f64 / o.wall.as_secs_f64();
        if best.is_none_or(|(r, _)| rate > r) {
            best = Some((rate, config));
        }
    }
    let (_, config) = best.ok_or("an empty sweep")?;
    let sweep_s = sweep_started.elapsed().as_secs_f64();
    let (mut o, arrivals, _) = run_once(&Run {
        n,
        payload: 64 * KIB,
        fixed: Some(config),
        memory_limit: None,
    })?;
    let (steady, _) = ramp(&arrivals);
    o.extra.push(("config", config.json()));
    o.extra
        .push(("steady_items_per_sec", format!("{steady:.1}")));
    o.extra.push(("sweep_s", format!("{sweep_s:.1}")));
    Ok(o)
}

pub(crate) fn tuned(n: u64, budget: bool) -> Result<Outcome, String> {
    let (payload, memory_limit) = if budget {
        (1024 * KIB, Some(32 * 1024 * KIB as u64))
    } else {
        (64 * KIB, None)
    };
    let (mut o, arrivals, stats) = run_once(&Run {
        n,
        payload,
        fixed: None,
        memory_limit,
    })?;
    let (steady, t90) = ramp(&arrivals);
    if std::env::var_os("W8_DECISIONS").is_some() {
        for d in &stats.tuning {
            eprintln!("{d}");
        }
    }
    o.extra
        .push(("steady_items_per_sec", format!("{steady:.1}")));
    o.extra.push((
        "t90_s",
        t90.map_or_else(|| "null".to_owned(), |t| format!("{t:.2}")),
    ));
    o.extra
        .push(("final_config", Config::from_stats(&stats).json()));
    o.extra.push(("decisions", stats.tuning.len().to_string()));
    Ok(o)
}

/// W6.tuned: W6.c2's read + decode + resize stage from concurrency 1 on one thread, with
/// autotune on.
pub(crate) fn w6_tuned(data_dir: Option<&Path>) -> Result<Outcome, String> {
    let paths = super::w6_paths(data_dir, 2)?;
    let n = paths.len();
    let eval = ImageTransform::center_crop(256, 224);
    let load = move |path: PathBuf| eval.apply(&images::read(path)?);
    load(paths[0].clone()).map_err(|e| e.to_string())?; // library init, untimed
    let t0 = Instant::now();
    let mut pipeline = PipelineBuilder::new()
        .source(paths)
        .try_pipe(load)
        .name("decode")
        .sink()
        .buffer(32)
        .num_threads(1)
        .autotune(true)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut count, mut pixel_sum) = (0usize, 0u64);
    for image in pipeline.by_ref() {
        super::w6_consume(&image.map_err(|e| e.to_string())?, &mut pixel_sum)?;
        count += 1;
    }
    let stats = pipeline.stats();
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(count == n, "image count")?;
    let mut o = super::w6_outcome(n, wall, pixel_sum);
    let decode = stats.stages.iter().find(|s| s.name == "decode");
    o.extra.push((
        "final_config",
        format!(
            "{{\"decode\": {}, \"threads\": {}}}",
            decode.map_or(0, |s| s.concurrency),
            stats.pool_threads
        ),
    ));
    Ok(o)
}

/// W6.x.write_data: writes W6's dataset of `n` JPEGs (`img_00000.jpg`..) into `--data-dir`
/// (default `bench-data/jpeg`) with this crate's generator, for machines without Python's
/// Pillow (its bytes differ from `gen_jpeg_dataset.py`'s; the shapes and count match).
pub(crate) fn w6_write_data(n: u64, data_dir: Option<&Path>) -> Result<Outcome, String> {
    let dir = data_dir.map_or_else(|| PathBuf::from("bench-data/jpeg"), Path::to_path_buf);
    let t0 = Instant::now();
    let files = datasets::write_jpeg_dataset(&dir, n as usize).map_err(|e| e.to_string())?;
    Ok(Outcome {
        n_items: files.len() as u64,
        wall: t0.elapsed(),
        extra: vec![("dir", format!("\"{}\"", dir.display()))],
    })
}
