//! Benchmark driver: runs one workload (W1 to W10, see `docs/src/benchmarks.md`) and prints one
//! JSON line.
//!
//! ```text
//! cargo run --release -p pipeline-examples --example bench -- --list
//! cargo run --release -p pipeline-examples --example bench -- --id W1.sync.c1 --n 200000
//! ```
//!
//! `items_per_sec` is source items divided by the time from just before the pipeline is built
//! to after the last item is drained and the pipeline stopped. `cpu_s_per_item` is the whole
//! process's user + system CPU time over the same span (see `bench/cpu.rs`) per source item.
//! Every run checks its own output and exits non-zero when it is wrong.
//!
//! W6 (JPEG decode + crop + resize, `pipeline_runtime::images`) reads `--data-dir` (default `bench-data/jpeg`), written by
//! `--id W6.x.write_data` (or by the Python generator SPDL's side of the comparison used,
//! `gen_jpeg_dataset.py`); build with `--features turbojpeg` for the libjpeg-turbo decoder.
//! W4's process stages and W7's subprocesses run this binary again, which
//! `#[pipeline_runtime::main]` on `main` turns into a worker or a child.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use pipeline_runtime::distributed::ItemKey;
use pipeline_runtime::images::{self, ImageTransform};
use pipeline_runtime::{Pipeline, PipelineBuilder, SinkBuilder};

#[path = "bench/cpu.rs"]
mod cpu;
#[path = "bench/w10.rs"]
mod w10;
#[path = "bench/w4.rs"]
mod w4;
#[path = "bench/w6r.rs"]
mod w6r;
#[path = "bench/w7.rs"]
mod w7;
#[path = "bench/w8.rs"]
mod w8;
#[path = "bench/w9.rs"]
mod w9;

struct Args {
    id: String,
    n: Option<u64>,
    data_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut id = None;
    let mut n = None;
    let mut data_dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--id" => id = it.next(),
            "--n" => {
                let v = it.next().ok_or("--n needs a value")?;
                n = Some(v.parse().map_err(|e| format!("--n {v}: {e}"))?);
            }
            "--data-dir" => {
                data_dir = Some(PathBuf::from(it.next().ok_or("--data-dir needs a value")?))
            }
            "--list" => {
                for id in IDS {
                    println!("{id}");
                }
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required (see --list)")?,
        n,
        data_dir,
    })
}

const IDS: &[&str] = &[
    "W1.sync.c1",
    "W1.sync.c8",
    "W1.sync.chain5.c1",
    "W1.sync.c1.nostats",
    "W1.plain.s1",
    "W1.plain.s5",
    "W1.x.src_sink_only",
    "W1.x.async_op.c1",
    "W1.x.handwritten.c1",
    "W1.x.handwritten.chain5",
    "W2.c1",
    "W2.c8",
    "W2.c32",
    "W2.c128",
    "W3.c1",
    "W3.c32",
    "W3.c256",
    "W3.c1024",
    "W3.x.timed.c256",
    "W3.x.timed.c1024",
    "W5.pipeline",
    "W5.plain",
    "W4.sha256.thread",
    "W4.sha256.process",
    "W4.x.sha256.plain",
    "W4.x.noop.default",
    "W4.x.noop.threads1",
    "W4.x.noop.threads2",
    "W4.x.noop.rayon2",
    "W4.x.noop.async",
    "W4.x.noop.process1",
    "W4.x.noop.process2",
    "W4.x.codec",
    "W7.rpis.int",
    "W7.rpis.bytes64k",
    "W7.iis.int",
    "W7.iis.bytes64k",
    "W7.inproc.bytes64k",
    "W7.x.rpis.pipe.bytes64k",
    "W7.x.memcpy.bytes64k",
    "W6.c2",
    "W6.rrc.c2",
    "W6.c2.budget8",
    "W6.x.plain",
    "W6.x.plain.full",
    "W6.x.plain.rrc",
    "W6.x.bomb",
    "W6.region.p2",
    "W6.stages.p2",
    "W6.threads.c2",
    "W6.tuned",
    "W6.x.write_data",
    "W8.untuned",
    "W8.best",
    "W8.tuned",
    "W8.tuned.budget",
    "W9.files",
    "W9.shards",
    "W9.shards.mem",
    "W9.s3.shards",
    "W9.s3.plain",
    "W9.s3.small",
    "W10.single",
    "W10.merge4",
    "W10.merge4.rr",
    "W10.merge4.weighted",
    "W10.route2",
    "W10.x.merge1",
];

struct Outcome {
    n_items: u64,
    wall: Duration,
    extra: Vec<(&'static str, String)>,
}

fn identity(x: u64) -> u64 {
    black_box(x)
}

fn finish<T>(spec: SinkBuilder<T>) -> Pipeline<T>
where
    T: Send + 'static,
{
    spec.build().expect("valid pipeline")
}

/// Drains a pipeline of numbers, returning (count, sum); the pipeline is stopped after.
fn drain_sum(mut pipeline: Pipeline<u64>) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    for item in pipeline.by_ref() {
        sum += item.expect("no failure");
        count += 1;
    }
    print_stats_if_asked(&pipeline);
    pipeline.stop().expect("clean stop");
    (count, sum)
}

/// With `BENCH_STATS` set, the pipeline's statistics table goes to stderr (diagnosis only:
/// the JSON line on stdout is unchanged).
fn print_stats_if_asked<T: Send + 'static>(pipeline: &Pipeline<T>) {
    if std::env::var_os("BENCH_STATS").is_some() {
        eprintln!("{}", pipeline.stats());
    }
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn w1(n: u64, stages: usize, concurrency: usize, threads: usize) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let mut b = PipelineBuilder::new().source(0..n);
    for _ in 0..stages {
        b = b.pipe(identity).concurrency(concurrency);
    }
    let (count, sum) = drain_sum(finish(b.sink().buffer(32).num_threads(threads)));
    let wall = t0.elapsed();
    check(count == n, "item count")?;
    check(sum == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

/// W1.sync.c1 with the default statistics off: the cost of statistics is the difference.
fn w1_stats_off(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .pipe(identity)
        .sink()
        .buffer(32)
        .num_threads(1)
        .stats(false);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

fn w1_async(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .async_pipe(|x| async move { black_box(x) })
        .sink()
        .buffer(32)
        .num_threads(1);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

fn w1_src_sink(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .sink()
        .buffer(32)
        .num_threads(1);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

/// The plain-Rust reference a user would otherwise write: one thread per stage, bounded
/// channels of the same capacities as our pipeline's queues.
fn w1_handwritten(n: u64, stages: usize) -> Result<Outcome, String> {
    let cap = pipeline_runtime::SinkBuilder::DEFAULT_QUEUE_CAPACITY;
    let t0 = Instant::now();
    let (tx, mut rx) = sync_channel::<u64>(cap);
    let mut threads = vec![std::thread::spawn(move || {
        for i in 0..n {
            if tx.send(i).is_err() {
                return;
            }
        }
    })];
    for s in 0..stages {
        let (tx, next_rx) = sync_channel::<u64>(if s + 1 == stages { 32 } else { cap });
        let input = std::mem::replace(&mut rx, next_rx);
        threads.push(std::thread::spawn(move || {
            for x in input {
                if tx.send(identity(x)).is_err() {
                    return;
                }
            }
        }));
    }
    let (mut count, mut sum) = (0u64, 0u64);
    for x in rx {
        count += 1;
        sum += x;
    }
    for t in threads {
        t.join().map_err(|_| "stage thread panicked")?;
    }
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

fn plain(n: u64, stages: usize) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let mut total = 0u64;
    for i in 0..n {
        let mut x = i;
        for _ in 0..stages {
            x = identity(x);
        }
        total += x;
    }
    let wall = t0.elapsed();
    check(total == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

fn mean_latency(samples: u32, mut sleep_once: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    for _ in 0..samples {
        sleep_once();
    }
    t0.elapsed().as_secs_f64() / f64::from(samples)
}

fn w2(n: u64, c: usize) -> Result<Outcome, String> {
    let latency = mean_latency(200, || std::thread::sleep(Duration::from_millis(2)));
    let t0 = cpu::start();
    let p = PipelineBuilder::new()
        .source(0..n)
        .pipe(|x| {
            std::thread::sleep(Duration::from_millis(2));
            x
        })
        .concurrency(c)
        .sink()
        .buffer(32)
        .num_threads(c);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![("sleep_latency_s", format!("{latency:.6}"))],
    })
}

fn w3(n: u64, c: usize) -> Result<Outcome, String> {
    // The same kind of sleep as the stage's: a tokio timer on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let latency = mean_latency(200, || {
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(2)).await })
    });
    drop(rt);
    let t0 = cpu::start();
    let p = PipelineBuilder::new()
        .source(0..n)
        .async_pipe(|x| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            x
        })
        .concurrency(c)
        .sink()
        .buffer(32)
        .num_threads(1);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![("sleep_latency_s", format!("{latency:.6}"))],
    })
}

/// W3 with the sleep timed inside the stage: the mean time a lane's sleep took, and the
/// mean time between one item's sleep ending and the lane's next sleep starting.
fn w3_timed(n: u64, c: usize) -> Result<Outcome, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let slept = Arc::new(AtomicU64::new(0));
    let t0 = cpu::start();
    let s2 = slept.clone();
    let p = PipelineBuilder::new()
        .source(0..n)
        .async_pipe(move |x| {
            let slept = s2.clone();
            async move {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(2)).await;
                slept.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                x
            }
        })
        .concurrency(c)
        .sink()
        .buffer(32)
        .num_threads(1);
    let (count, sum) = drain_sum(finish(p));
    let wall = t0.elapsed();
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    let mean_sleep = slept.load(Ordering::Relaxed) as f64 / n as f64 / 1e9;
    let per_round = wall.as_secs_f64() * c as f64 / n as f64;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![
            ("mean_sleep_in_stage_s", format!("{mean_sleep:.6}")),
            ("mean_lane_round_s", format!("{per_round:.6}")),
        ],
    })
}

fn w5(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let p = PipelineBuilder::new()
        .source(0..n)
        .aggregate(32)
        .pipe(|batch: Vec<u64>| batch.iter().sum::<u64>())
        .name("sum")
        .sink()
        .buffer(32)
        .num_threads(1);
    let mut pipeline = finish(p);
    let (mut batches, mut sum) = (0u64, 0u64);
    for s in pipeline.by_ref() {
        sum += s.map_err(|e| e.to_string())?;
        batches += 1;
    }
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(batches == n.div_ceil(32), "batch count")?;
    check(sum == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![(
            "batches_per_sec",
            format!("{:.1}", batches as f64 / wall.as_secs_f64()),
        )],
    })
}

fn w5_plain(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(32);
    let mut sum = 0u64;
    for i in 0..n {
        batch.push(black_box(i));
        if batch.len() == 32 {
            sum += batch.iter().sum::<u64>();
            batch.clear();
        }
    }
    sum += batch.iter().sum::<u64>();
    let wall = t0.elapsed();
    check(sum == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![],
    })
}

/// W6's source: the sorted `img_*.jpg` files of the data directory, `repeat` times. Every file
/// is read once first (untimed) so that the page cache is warm, as in SPDL's script.
fn w6_paths(data_dir: Option<&Path>, repeat: usize) -> Result<Vec<PathBuf>, String> {
    let dir = data_dir.map_or_else(|| PathBuf::from("bench-data/jpeg"), Path::to_path_buf);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| {
            format!(
                "{}: {e}; write the images with `--id W6.x.write_data` (or SPDL's \
                 gen_jpeg_dataset.py)",
                dir.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("img_") && n.ends_with(".jpg"))
        })
        .collect();
    files.sort();
    check(!files.is_empty(), "images in --data-dir")?;
    for f in &files {
        black_box(std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    Ok((0..repeat).flat_map(|_| files.iter().cloned()).collect())
}

/// What W6 checks per image (shape) and in total (sum of all pixel values).
fn w6_consume(image: &images::Image, pixel_sum: &mut u64) -> Result<(), String> {
    check(
        image.width == 224 && image.height == 224 && image.pixels.len() == 224 * 224 * 3,
        "224x224 RGB output",
    )?;
    *pixel_sum += image.pixels.iter().map(|&v| u64::from(v)).sum::<u64>();
    Ok(())
}

fn w6_outcome(n: usize, wall: Duration, pixel_sum: u64) -> Outcome {
    Outcome {
        n_items: n as u64,
        wall,
        extra: vec![
            ("pixel_sum", pixel_sum.to_string()),
            ("decoder", format!("\"{}\"", images::DECODER)),
            ("peak_rss_mb", w6_peak_rss_mb()),
        ],
    }
}

fn w6_peak_rss_mb() -> String {
    cpu::peak_rss_bytes().map_or("null".into(), |b| format!("{:.1}", b as f64 / 1e6))
}

/// W6.x.bomb: a JPEG of a few hundred bytes whose frame header declares 16,000 × 16,000
/// pixels (768 MB to decode), read and refused `n` times by the evaluation transform; the
/// slowest refusal and the process's peak RSS say that nothing large was allocated.
fn w6_bomb(n: u64) -> Result<Outcome, String> {
    let mut rgb = vec![0u8; 16 * 16 * 3];
    rgb.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i * 7) as u8);
    let mut bomb = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bomb, 90)
        .encode(&rgb, 16, 16, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    let sof = bomb
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .ok_or("no frame header")?;
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3E, 0x80]); // 16000 x 16000
    let path = std::env::temp_dir().join(format!("pipeline-bomb-{}.jpg", std::process::id()));
    std::fs::write(&path, &bomb).map_err(|e| e.to_string())?;
    let eval = ImageTransform::center_crop(256, 224);
    let t0 = cpu::start();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let refused = images::read(path.clone()).and_then(|file| eval.apply(&file));
        slowest = slowest.max(t.elapsed());
        let err = refused.err().ok_or("the bomb was decoded")?;
        check(err.reason.contains("refused"), "refused by the limits")?;
    }
    let wall = t0.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![
            ("file_bytes", bomb.len().to_string()),
            ("slowest_ms", format!("{:.3}", slowest.as_secs_f64() * 1e3)),
            ("peak_rss_mb", w6_peak_rss_mb()),
        ],
    })
}

/// W6's transforms: evaluation (shorter side to 256, centre 224), the same decoding every
/// pixel at full scale (the reference for what the crop and reduced-scale decoding save), and
/// training (RandomResizedCrop 224 + horizontal flip).
#[derive(Clone, Copy)]
enum W6 {
    Eval,
    EvalFull,
    Rrc,
}

impl W6 {
    fn transform(self) -> ImageTransform {
        match self {
            W6::Eval => ImageTransform::center_crop(256, 224),
            W6::EvalFull => ImageTransform::center_crop(256, 224).full_scale_decode(),
            W6::Rrc => ImageTransform::random_resized_crop(224),
        }
    }
}

/// Item `i`'s key: the random crop and flip are drawn from it.
fn w6_key(i: usize) -> ItemKey {
    ItemKey {
        seed: 6,
        epoch: 0,
        index: i as u64,
    }
}

/// W6.c2 and W6.rrc.c2: read + decode + crop + resize to 224x224 RGB `u8` in one stage,
/// concurrency 2 on 2 threads, sink 32 (SPDL's `pipe(op, concurrency=2)`,
/// `build(num_threads=2)`).
fn w6(data_dir: Option<&Path>, kind: W6) -> Result<Outcome, String> {
    let paths = w6_paths(data_dir, 2)?;
    let n = paths.len();
    let transform = kind.transform();
    let first = images::read(paths[0].clone()).map_err(|e| e.to_string())?;
    transform // library init, untimed
        .apply(&first.with_key(w6_key(0)))
        .map_err(|e| e.to_string())?;
    let t0 = cpu::start();
    let mut pipeline = PipelineBuilder::new()
        .source(paths.into_iter().enumerate().map(|(i, p)| (w6_key(i), p)))
        .try_pipe(move |item| transform.apply(&images::read_keyed(item)?))
        .concurrency(2)
        .name("decode")
        .sink()
        .buffer(32)
        .num_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut count, mut pixel_sum) = (0usize, 0u64);
    for image in pipeline.by_ref() {
        w6_consume(&image.map_err(|e| e.to_string())?, &mut pixel_sum)?;
        count += 1;
    }
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(count == n, "image count")?;
    Ok(w6_outcome(n, wall, pixel_sum))
}

/// W6.c2.budget8: W6.c2 under a memory limit of eight batches of 32 decoded images. Each
/// path is admitted at the most it becomes on its way (the dataset's largest decode, read
/// from the headers before timing, plus the output), the bound the guide's image chapter
/// gives for a source of paths.
fn w6_budget(data_dir: Option<&Path>) -> Result<Outcome, String> {
    let paths = w6_paths(data_dir, 2)?;
    let n = paths.len();
    let mut largest = 0u64;
    for path in &paths[..n / 2] {
        let file = images::read(path.clone()).map_err(|e| e.to_string())?;
        largest = largest.max(images::probe(&file.bytes)?.decoded_bytes);
    }
    let output = 224 * 224 * 3;
    let per_item = (largest + output) as usize;
    let limit = 8 * 32 * output;
    let eval = W6::Eval.transform();
    let t0 = cpu::start();
    let mut pipeline = PipelineBuilder::new()
        .source(paths)
        .item_bytes(move |_: &PathBuf| per_item)
        .try_pipe(move |path| eval.apply(&images::read(path)?))
        .concurrency(2)
        .name("decode")
        .sink()
        .buffer(32)
        .num_threads(2)
        .memory_limit(limit)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut count, mut pixel_sum) = (0usize, 0u64);
    for image in pipeline.by_ref() {
        w6_consume(&image.map_err(|e| e.to_string())?, &mut pixel_sum)?;
        count += 1;
    }
    let memory = pipeline.stats().memory.ok_or("no memory statistics")?;
    pipeline.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    check(count == n, "image count")?;
    check(
        memory.peak <= memory.limit,
        "peak in flight within the limit",
    )?;
    let mut o = w6_outcome(n, wall, pixel_sum);
    o.extra.push(("memory_limit", memory.limit.to_string()));
    o.extra
        .push(("peak_inflight_bytes", memory.peak.to_string()));
    o.extra.push(("item_bytes", per_item.to_string()));
    Ok(o)
}

/// W6.x.plain, W6.x.plain.full and W6.x.plain.rrc: the same work in a plain loop on one
/// thread (the pixel sums match the pipeline's: the crops are drawn from the same keys).
fn w6_plain(data_dir: Option<&Path>, kind: W6) -> Result<Outcome, String> {
    let paths = w6_paths(data_dir, 2)?;
    let transform = kind.transform();
    let load = |i: usize, path: &PathBuf| {
        let file = images::read_keyed((w6_key(i), path.clone())).map_err(|e| e.to_string())?;
        transform.apply(&file).map_err(|e| e.to_string())
    };
    load(0, &paths[0])?;
    let t0 = cpu::start();
    let mut pixel_sum = 0u64;
    for (i, path) in paths.iter().enumerate() {
        w6_consume(&load(i, path)?, &mut pixel_sum)?;
    }
    let wall = t0.elapsed();
    Ok(w6_outcome(paths.len(), wall, pixel_sum))
}

fn run(id: &str, n: Option<u64>, data_dir: Option<&Path>) -> Result<Outcome, String> {
    let n_or = |default: u64| n.unwrap_or(default);
    match id {
        "W1.sync.c1" => w1(n_or(200_000), 1, 1, 1),
        "W1.sync.c8" => w1(n_or(200_000), 1, 8, 8),
        "W1.sync.chain5.c1" => w1(n_or(200_000), 5, 1, 1),
        "W1.sync.c1.nostats" => w1_stats_off(n_or(200_000)),
        "W1.plain.s1" => plain(n_or(200_000), 1),
        "W1.plain.s5" => plain(n_or(200_000), 5),
        "W1.x.src_sink_only" => w1_src_sink(n_or(200_000)),
        "W1.x.async_op.c1" => w1_async(n_or(200_000)),
        "W1.x.handwritten.c1" => w1_handwritten(n_or(200_000), 1),
        "W1.x.handwritten.chain5" => w1_handwritten(n_or(200_000), 5),
        "W2.c1" => w2(n_or(1_500), 1),
        "W2.c8" => w2(n_or(10_000), 8),
        "W2.c32" => w2(n_or(12_000), 32),
        "W2.c128" => w2(n_or(12_000), 128),
        "W3.c1" => w3(n_or(1_500), 1),
        "W3.c32" => w3(n_or(16_000), 32),
        "W3.c256" => w3(n_or(16_000), 256),
        "W3.c1024" => w3(n_or(64_000), 1024),
        "W3.x.timed.c256" => w3_timed(n_or(64_000), 256),
        "W3.x.timed.c1024" => w3_timed(n_or(128_000), 1024),
        "W5.pipeline" => w5(n_or(200_000)),
        "W5.plain" => w5_plain(n_or(200_000)),
        "W4.sha256.thread" => w4::sha256_thread(n_or(20_000)),
        "W4.sha256.process" => w4::sha256_process(n_or(20_000)),
        "W4.x.sha256.plain" => w4::sha256_plain(n_or(20_000)),
        "W4.x.noop.default" => w4::noop_overhead(n_or(200_000), w4::Kind::Default),
        "W4.x.noop.threads1" => w4::noop_overhead(n_or(200_000), w4::Kind::Threads(1)),
        "W4.x.noop.threads2" => w4::noop_overhead(n_or(200_000), w4::Kind::Threads(2)),
        "W4.x.noop.rayon2" => w4::noop_overhead(n_or(200_000), w4::Kind::Rayon(2)),
        "W4.x.noop.async" => w4::noop_overhead(n_or(200_000), w4::Kind::Async),
        "W4.x.noop.process1" => w4::noop_overhead(n_or(50_000), w4::Kind::Process(1)),
        "W4.x.noop.process2" => w4::noop_overhead(n_or(50_000), w4::Kind::Process(2)),
        "W4.x.codec" => w4::codecs(n_or(2_000)),
        "W7.rpis.int" => w7::rpis_int(n_or(200_000)),
        "W7.rpis.bytes64k" => w7::rpis_bytes(n_or(20_000), w7::BYTES_SIZE, w7::DEFAULT_THRESHOLD),
        "W7.iis.int" => w7::iis_int(n_or(200_000)),
        "W7.iis.bytes64k" => w7::iis_bytes(n_or(20_000), w7::BYTES_SIZE, w7::DEFAULT_THRESHOLD),
        "W7.inproc.bytes64k" => w7::inproc_bytes(n_or(20_000), w7::BYTES_SIZE),
        "W7.x.rpis.pipe.bytes64k" => w7::rpis_bytes(n_or(20_000), w7::BYTES_SIZE, None),
        "W7.x.memcpy.bytes64k" => w7::memcpy(n_or(20_000), w7::BYTES_SIZE),
        other if other.starts_with("W7.x.iis.") => w7::sweep(other, n)
            .unwrap_or_else(|| Err(format!("bad sweep id `{other}` (W7.x.iis.shm.65536)"))),
        "W6.c2" => w6(data_dir, W6::Eval),
        "W6.rrc.c2" => w6(data_dir, W6::Rrc),
        "W6.c2.budget8" => w6_budget(data_dir),
        "W6.x.plain" => w6_plain(data_dir, W6::Eval),
        "W6.x.plain.full" => w6_plain(data_dir, W6::EvalFull),
        "W6.x.plain.rrc" => w6_plain(data_dir, W6::Rrc),
        "W6.x.bomb" => w6_bomb(n_or(1_000)),
        "W6.region.p2" => w6r::run(data_dir, n, w6r::Variant::Region),
        "W6.stages.p2" => w6r::run(data_dir, n, w6r::Variant::Stages),
        "W6.threads.c2" => w6r::run(data_dir, n, w6r::Variant::Threads),
        "W6.tuned" => w8::w6_tuned(data_dir),
        "W6.x.write_data" => w8::w6_write_data(n_or(500), data_dir),
        "W8.untuned" => w8::untuned(n_or(2_000)),
        "W8.best" => w8::best(n_or(20_000)),
        "W8.tuned" => w8::tuned(n_or(20_000), false),
        "W8.tuned.budget" => w8::tuned(n_or(20_000), true),
        "W9.files" => w9::images_from(n_or(512), false),
        "W9.shards" => w9::images_from(n_or(512), true),
        "W9.shards.mem" => w9::shards_memory(n_or(1024)),
        "W9.s3.shards" => w9::s3_shards(n_or(32)),
        "W9.s3.plain" => w9::s3_plain(n_or(32)),
        "W9.s3.small" => w9::s3_small(n_or(2048)),
        "W10.single" => w10::single(n_or(200_000)),
        "W10.merge4" => w10::merge4(n_or(200_000), w10::Policy::AsAvailable),
        "W10.merge4.rr" => w10::merge4(n_or(200_000), w10::Policy::RoundRobin),
        "W10.merge4.weighted" => w10::merge4(n_or(200_000), w10::Policy::Weighted),
        "W10.route2" => w10::route2(n_or(200_000)),
        "W10.x.merge1" => w10::merge1(n_or(200_000)),
        other => Err(format!("unknown workload id `{other}` (see --list)")),
    }
}

// W4.sha256.process runs its stage in worker processes: this binary, re-run (W7 runs whole
// pipelines in a child, the same executable run again), so `main` enters worker mode first.
#[pipeline_runtime::main]
fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let cpu_at_start = cpu::process_cpu();
    match run(&args.id, args.n, args.data_dir.as_deref()) {
        Ok(o) => {
            let wall = o.wall.as_secs_f64();
            let cpu_per_item = cpu::used_since(cpu_at_start).map_or("null".to_owned(), |s| {
                format!("{:.9}", s / o.n_items.max(1) as f64)
            });
            let mut line = format!(
                "{{\"id\": \"{}\", \"n_items\": {}, \"wall_s\": {:.6}, \"items_per_sec\": {:.1}, \"cpu_s_per_item\": {}",
                args.id,
                o.n_items,
                wall,
                o.n_items as f64 / wall,
                cpu_per_item
            );
            for (k, v) in o.extra {
                line.push_str(&format!(", \"{k}\": {v}"));
            }
            line.push('}');
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench {}: {e}", args.id);
            ExitCode::FAILURE
        }
    }
}
