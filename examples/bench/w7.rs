//! W7: a pipeline (or a bare iterator) in a subprocess, its output read by this process.
//! The timing window opens before the call that starts the child and closes after the
//! handle is dropped (the child is reaped), as in SPDL's `w7_subprocess.py`.

use std::hint::black_box;
use std::time::Instant;

use pipeline_examples::scratch::XorShift;
use pipeline_runtime::error::BuildError;
use pipeline_runtime::subprocess::{
    iterate_in_subprocess, run_pipeline_in_subprocess, Bytes, Subprocess, SubprocessOptions,
};
use pipeline_runtime::{subprocess_fn, Pipeline, PipelineBuilder};

use super::{check, identity, Outcome};

/// The byte items' size: 64 KiB.
pub(crate) const BYTES_SIZE: usize = 65536;
/// The default switch to shared memory.
pub(crate) const DEFAULT_THRESHOLD: Option<usize> =
    Some(pipeline_runtime::subprocess::DEFAULT_SHM_THRESHOLD);

/// The same buffer every time, as SPDL's `RepeatBytes` (cloning `Bytes` copies nothing).
fn payload(size: usize) -> Bytes {
    Bytes::from(XorShift(0x2545_f491_4f6c_dd1d).bytes(size))
}

fn ints_pipeline(n: u64) -> Result<Pipeline<u64>, BuildError> {
    PipelineBuilder::new()
        .source(0..n)
        .pipe(identity)
        .concurrency(1)
        .sink()
        .buffer(32)
        .num_threads(1)
        .build()
}

fn bytes_pipeline((n, size): (u64, usize)) -> Result<Pipeline<Bytes>, BuildError> {
    let buf = payload(size);
    PipelineBuilder::new()
        .source((0..n).map(move |_| buf.clone()))
        .pipe(black_box::<Bytes>)
        .concurrency(1)
        .sink()
        .buffer(32)
        .num_threads(1)
        .build()
}

fn ints(n: u64) -> std::ops::Range<u64> {
    0..n
}

fn bytes((n, size): (u64, usize)) -> impl Iterator<Item = Bytes> {
    let buf = payload(size);
    (0..n).map(move |_| buf.clone())
}

subprocess_fn!(pipeline ints_pipeline, pipeline bytes_pipeline, iter ints, iter bytes);

fn drain_ints(sub: Subprocess<u64>, n: u64, t0: Instant) -> Result<Outcome, String> {
    let setup = t0.elapsed();
    let (mut count, mut sum) = (0u64, 0u64);
    for item in sub {
        sum += item.map_err(|e| e.to_string())?;
        count += 1;
    }
    let wall = t0.elapsed();
    check(count == n, "item count")?;
    check(sum == n * (n - 1) / 2, "checksum")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![("setup_s", format!("{:.6}", setup.as_secs_f64()))],
    })
}

fn drain_bytes(
    items: impl IntoIterator<Item = Result<Bytes, String>>,
    n: u64,
    size: usize,
    t0: Instant,
) -> Result<Outcome, String> {
    let setup = t0.elapsed();
    let expected = payload(size);
    let (mut count, mut total, mut bad) = (0u64, 0u64, 0u64);
    for item in items {
        let item = item?;
        total += item.len() as u64;
        bad += u64::from(item.len() != size || item.last() != expected.last());
        count += 1;
    }
    let wall = t0.elapsed();
    check(count == n, "item count")?;
    check(bad == 0, "item contents")?;
    check(total == n * size as u64, "byte count")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![
            ("setup_s", format!("{:.6}", setup.as_secs_f64())),
            ("mib_per_sec", mib_per_sec(total, wall.as_secs_f64())),
        ],
    })
}

fn mib_per_sec(bytes: u64, secs: f64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64 / secs)
}

fn options(shm_threshold: Option<usize>) -> SubprocessOptions {
    SubprocessOptions::new().shm_threshold(shm_threshold)
}

pub(crate) fn rpis_int(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let sub = run_pipeline_in_subprocess(ints_pipeline, n, SubprocessOptions::new())
        .map_err(|e| e.to_string())?;
    drain_ints(sub, n, t0)
}

pub(crate) fn iis_int(n: u64) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let sub =
        iterate_in_subprocess(ints, n, SubprocessOptions::new()).map_err(|e| e.to_string())?;
    drain_ints(sub, n, t0)
}

/// `shm_threshold: None` sends every item through the pipe (to compare the transports).
pub(crate) fn rpis_bytes(
    n: u64,
    size: usize,
    shm_threshold: Option<usize>,
) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let sub = run_pipeline_in_subprocess(bytes_pipeline, (n, size), options(shm_threshold))
        .map_err(|e| e.to_string())?;
    drain_bytes(
        sub.into_iter().map(|r| r.map_err(|e| e.to_string())),
        n,
        size,
        t0,
    )
}

pub(crate) fn iis_bytes(
    n: u64,
    size: usize,
    shm_threshold: Option<usize>,
) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let sub = iterate_in_subprocess(bytes, (n, size), options(shm_threshold))
        .map_err(|e| e.to_string())?;
    drain_bytes(
        sub.into_iter().map(|r| r.map_err(|e| e.to_string())),
        n,
        size,
        t0,
    )
}

/// Reference: the bytes pipeline built and run in this process.
pub(crate) fn inproc_bytes(n: u64, size: usize) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let mut pipeline = bytes_pipeline((n, size)).map_err(|e| e.to_string())?;
    let items: Vec<Result<Bytes, String>> = pipeline
        .by_ref()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    pipeline.stop().map_err(|e| e.to_string())?;
    drain_bytes(items, n, size, t0)
}

/// The limit: one in-process copy of the same bytes per item into a reused buffer.
pub(crate) fn memcpy(n: u64, size: usize) -> Result<Outcome, String> {
    let src = payload(size);
    let mut dst = vec![0u8; size];
    let t0 = Instant::now();
    for _ in 0..n {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    let wall = t0.elapsed();
    check(dst[..] == src[..], "copy")?;
    let total = n * size as u64;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![("mib_per_sec", mib_per_sec(total, wall.as_secs_f64()))],
    })
}

/// `W7.x.iis.{shm|pipe}.{bytes}`: one transport for items of one size, to find the switch.
pub(crate) fn sweep(id: &str, n: Option<u64>) -> Option<Result<Outcome, String>> {
    let rest = id.strip_prefix("W7.x.iis.")?;
    let (transport, size) = rest.split_once('.')?;
    let size: usize = size.parse().ok()?;
    let threshold = match transport {
        "shm" => Some(0),
        "pipe" => None,
        _ => return None,
    };
    let n = n.unwrap_or(((1u64 << 30) / size.max(1) as u64).clamp(1_000, 200_000));
    Some(iis_bytes(n, size, threshold))
}
