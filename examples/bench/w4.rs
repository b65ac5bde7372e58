//! W4: a CPU-bound stage (SHA-256 of a 64 KiB buffer) on threads and on worker processes,
//! a plain single-thread loop over the same work, and the per-item cost of each executor
//! (a no-op stage on each).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use pipeline_examples::scratch::XorShift;
use pipeline_runtime::executor::{Executor, ThreadPool};
use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::{process_fn, PipelineBuilder, SinkBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::{check, Outcome};

const BUF_SIZE: usize = 64 * 1024;

/// One buffer shared by every item (SPDL's source repeats one `bytes` object), serialized
/// as a single byte string rather than a sequence of numbers.
#[derive(Clone)]
pub(crate) struct SharedBuf(Arc<Vec<u8>>);

impl Serialize for SharedBuf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        Ok(SharedBuf(Arc::new(bytes.into_vec())))
    }
}

fn make_buf() -> SharedBuf {
    // Any fixed bytes do; xorshift keeps them from being trivially compressible.
    SharedBuf(Arc::new(XorShift(0x9E37_79B9_7F4A_7C15).bytes(BUF_SIZE)))
}

fn sha256(buf: SharedBuf) -> [u8; 32] {
    Sha256::digest(&buf.0[..]).into()
}

fn noop(x: u64) -> u64 {
    black_box(x)
}

process_fn!(sha256, noop);

fn drain_digests(spec: SinkBuilder<[u8; 32]>, expected: [u8; 32], n: u64) -> Result<(), String> {
    let mut pipeline = spec.build().map_err(|e| e.to_string())?;
    let (mut count, mut bad) = (0u64, 0u64);
    for item in pipeline.by_ref() {
        let digest = item.map_err(|e| e.to_string())?;
        count += 1;
        bad += u64::from(digest != expected);
    }
    pipeline.stop().map_err(|e| e.to_string())?;
    check(count == n, "item count")?;
    check(bad == 0, "digests")
}

pub(crate) fn sha256_thread(n: u64) -> Result<Outcome, String> {
    let buf = make_buf();
    let expected = sha256(buf.clone());
    let t0 = Instant::now();
    let spec = PipelineBuilder::new()
        .source(std::iter::repeat_n(buf, n as usize))
        .pipe(sha256)
        .concurrency(2)
        .sink()
        .buffer(32)
        .num_threads(2);
    drain_digests(spec, expected, n)?;
    Ok(outcome(n, t0))
}

pub(crate) fn sha256_process(n: u64) -> Result<Outcome, String> {
    let buf = make_buf();
    let expected = sha256(buf.clone());
    // Started and warmed up before the timed window, as SPDL's script does.
    let pool = ProcessPool::builder()
        .num_workers(2)
        .name("w4")
        .build()
        .map_err(|e| e.to_string())?;
    let warm = PipelineBuilder::new()
        .source(std::iter::repeat_n(buf.clone(), 8))
        .process_pipe(sha256)
        .concurrency(2)
        .executor(&pool)
        .sink()
        .buffer(32)
        .num_threads(2);
    drain_digests(warm, expected, 8)?;
    let t0 = Instant::now();
    let spec = PipelineBuilder::new()
        .source(std::iter::repeat_n(buf, n as usize))
        .process_pipe(sha256)
        .concurrency(2)
        .executor(&pool)
        .sink()
        .buffer(32)
        .num_threads(2);
    drain_digests(spec, expected, n)?;
    Ok(outcome(n, t0))
}

pub(crate) fn sha256_plain(n: u64) -> Result<Outcome, String> {
    let buf = make_buf();
    let expected = sha256(buf.clone());
    let t0 = Instant::now();
    let mut bad = 0u64;
    for _ in 0..n {
        bad += u64::from(sha256(black_box(buf.clone())) != expected);
    }
    let out = outcome(n, t0);
    check(bad == 0, "digests")?;
    Ok(out)
}

/// Where the no-op stage of [`noop_overhead`] runs.
pub(crate) enum Kind {
    Default,
    Threads(usize),
    Rayon(usize),
    Async,
    Process(usize),
}

/// A source, one no-op stage and the sink: `ns_per_item` is the whole pipeline's cost per
/// item; subtract `W1.x.src_sink_only` for the stage's own share.
pub(crate) fn noop_overhead(n: u64, kind: Kind) -> Result<Outcome, String> {
    let mut pool = None;
    let t0 = Instant::now();
    let source = PipelineBuilder::new().source(0..n);
    let spec = match kind {
        Kind::Default => source.pipe(noop),
        Kind::Threads(k) => {
            let threads = ThreadPool::builder()
                .num_threads(k)
                .build()
                .map_err(|e| e.to_string())?;
            source.pipe(noop).concurrency(k).executor(threads)
        }
        Kind::Rayon(k) => {
            let rayon = pipeline_runtime::executor::rayon::ThreadPoolBuilder::new()
                .num_threads(k)
                .build()
                .map_err(|e| e.to_string())?;
            source
                .pipe(noop)
                .concurrency(k)
                .executor(Executor::Rayon(Arc::new(rayon)))
        }
        Kind::Async => source.async_pipe(|x| async move { noop(x) }),
        Kind::Process(k) => {
            // Workers are started outside the timed window, like W4.sha256.process.
            let workers = ProcessPool::builder()
                .num_workers(k)
                .build()
                .map_err(|e| e.to_string())?;
            let spec = source.process_pipe(noop).concurrency(k).executor(&workers);
            pool = Some(workers);
            spec
        }
    };
    let t0 = if pool.is_some() { Instant::now() } else { t0 };
    let mut pipeline = spec
        .sink()
        .buffer(32)
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut count, mut sum) = (0u64, 0u64);
    for item in pipeline.by_ref() {
        sum += item.map_err(|e| e.to_string())?;
        count += 1;
    }
    pipeline.stop().map_err(|e| e.to_string())?;
    let mut out = outcome(n, t0);
    drop(pool);
    check(count == n && sum == n * (n - 1) / 2, "count and checksum")?;
    let ns = out.wall.as_nanos() as f64 / n as f64;
    out.extra.push(("ns_per_item", format!("{ns:.0}")));
    Ok(out)
}

fn outcome(n: u64, t0: Instant) -> Outcome {
    Outcome {
        n_items: n,
        wall: t0.elapsed(),
        extra: vec![],
    }
}

/// What crosses a process boundary, encoded and decoded by `postcard` (the codec of
/// process stages): a 64 KiB byte string, 8192 `u64`s, 16384 `f32`s (64 KiB each) and a small
/// record. Prints one JSON line per payload, in ns per round trip. (The `bincode` comparison row
/// was dropped with the dependency: RUSTSEC-2025-0141, unmaintained.)
pub(crate) fn codecs(n: u64) -> Result<Outcome, String> {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Record {
        id: u64,
        label: String,
        score: f32,
        tags: Vec<u16>,
    }
    fn round<T, E, D>(name: &str, payload: &str, n: u64, value: &T, enc: E, dec: D) -> usize
    where
        T: PartialEq + std::fmt::Debug,
        E: Fn(&T) -> Vec<u8>,
        D: Fn(&[u8]) -> T,
    {
        let t0 = Instant::now();
        let mut size = 0;
        for _ in 0..n {
            let bytes = enc(black_box(value));
            size = bytes.len();
            let back = dec(black_box(&bytes));
            assert!(&back == value);
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{{\"id\": \"W4.x.codec\", \"codec\": \"{name}\", \"payload\": \"{payload}\", \
             \"encoded_bytes\": {size}, \"ns_per_round_trip\": {ns:.0}}}"
        );
        size
    }
    let t0 = Instant::now();
    let bytes = serde_bytes::ByteBuf::from(make_buf().0.to_vec());
    let numbers: Vec<u64> = (0..8192u64).map(|i| i * 2_654_435_761).collect();
    let floats: Vec<f32> = (0..16384u32).map(|i| i as f32 * 0.25).collect();
    let record = Record {
        id: 42,
        label: "sample-000042.jpg".to_owned(),
        score: 0.5,
        tags: vec![1, 2, 3],
    };
    macro_rules! one {
        ($payload:expr, $value:expr, $ty:ty) => {
            round(
                "postcard",
                $payload,
                n,
                $value,
                |v| postcard::to_allocvec(v).unwrap(),
                |b| postcard::from_bytes::<$ty>(b).unwrap(),
            );
        };
    }
    one!("bytes_64k", &bytes, serde_bytes::ByteBuf);
    one!("u64x8192", &numbers, Vec<u64>);
    one!("f32x16384", &floats, Vec<f32>);
    one!("record", &record, Record);
    Ok(outcome(n, t0))
}
