//! The `remote` example: a region served by remote workers over Arrow Flight, with local
//! lanes first and every item delivered exactly once (`pipeline_runtime::remote`).
//!
//! ```text
//! remote serve --addr 127.0.0.1:PORT --token T
//!     Runs a worker until killed; prints `listening on ADDR` once ready. The token may
//!     come from PIPELINE_REMOTE_TOKEN instead of --token (which other users can see in
//!     the process list). --addr defaults to 127.0.0.1:0 (loopback, a free port).
//!   Extra options of `serve`:
//!     --tls-cert F        serve TLS with the certificate chain in PEM file F (needs
//!     --tls-key F         its private key, PEM file F); trainers then need --tls-ca
//!
//! remote run --workers ADDR,ADDR,... --token T --items N --epochs E --local-lanes L
//!            --order input|completion --out FILE [--work-us U]
//!     Runs E epochs of indices 0..N through the region, which turns index i into
//!     (i * 2654435761) mod 2^32 after U microseconds of CPU work (default 0). Writes
//!     `EPOCH INDEX VALUE` per delivered item to FILE, in delivery order, and prints one
//!     JSON line at the end: delivered, local, remote, replayed, late_dropped, per_worker,
//!     seconds. --workers may be empty (local lanes only); --local-lanes 0 sends
//!     everything to the workers. Exits with 1 and the pipeline's error on failure.
//!   Extra options of `run`:
//!     --ticket-size K     inputs per ticket (default 64)
//!     --timeout-ms MS     a worker holding a ticket longer is replayed elsewhere; also the
//!                         connection timeout (default 10000)
//!     --give-up-ms MS     a worker unreachable this long counts as gone (default 10000)
//!     --item-bytes B      each output carries B more bytes (default 0), for measuring
//!     --local-work-us U   extra CPU work per item in local lanes only (throttles them)
//!     --process-workers P run the region as a plain process region of P workers instead
//!                         (no workers, no JSON fields but delivered and seconds): the
//!                         baseline the guide measures against
//!     --protocol V        claim remote protocol V (tests a worker's refusal)
//!     --tls-ca F          speak TLS to the workers, trusting only the CA certificate in
//!                         PEM file F (the one that signed the workers' --tls-cert)
//!     --tls-domain NAME   the name the workers' certificates carry, when it is not the
//!                         host of their addresses
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pipeline_runtime::process::ProcessPool;
use pipeline_runtime::remote::{RemoteWorkers, Worker};
use pipeline_runtime::{Order, PipelineBuilder, StageBuilder};
use serde::{Deserialize, Serialize};

/// An output of the region.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hashed {
    pub epoch: u64,
    pub index: u64,
    pub value: u32,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What the region is asked to do with one index (crosses to the worker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub epoch: u64,
    pub index: u64,
    pub work_us: u32,
    pub payload_bytes: u32,
}

/// Busy CPU work for `us` microseconds (not a sleep: a worker's cores are the point).
fn spin(us: u32) {
    if us == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_micros(us.into());
    let mut x = 0u64;
    while Instant::now() < until {
        for _ in 0..64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// The value of index `i`.
pub fn value_of(index: u64) -> u32 {
    (index.wrapping_mul(2654435761) % (1u64 << 32)) as u32
}

/// Extra work per item in this process only: set by `run`, so it slows the local lanes
/// (which run in the trainer's process) and never a worker.
static LOCAL_EXTRA_US: AtomicU32 = AtomicU32::new(0);

fn hash(job: Job) -> Hashed {
    spin(job.work_us + LOCAL_EXTRA_US.load(Ordering::Relaxed));
    Hashed {
        epoch: job.epoch,
        index: job.index,
        value: value_of(job.index),
        payload: vec![0xAB; job.payload_bytes as usize],
    }
}

/// The region: the same in local lanes, process workers and remote workers.
pub fn hash_region(jobs: StageBuilder<Job>) -> StageBuilder<Hashed> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    jobs.pipe(hash).concurrency(threads).order(Order::Input)
}
pipeline_runtime::process_region!(hash_region);

#[derive(Debug)]
struct RunArgs {
    workers: Vec<String>,
    token: String,
    items: u64,
    epochs: u64,
    local_lanes: usize,
    order: Order,
    out: String,
    work_us: u32,
    local_work_us: u32,
    ticket_size: usize,
    timeout_ms: u64,
    give_up_ms: u64,
    item_bytes: u32,
    process_workers: usize,
    protocol: Option<u32>,
    tls_ca: Option<String>,
    tls_domain: Option<String>,
}

fn value<'a>(args: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    args.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: `{text}` is not a number"))
}

fn token_or_env(token: Option<String>) -> Result<String, String> {
    token
        .or_else(|| std::env::var("PIPELINE_REMOTE_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "give a token: --token T or PIPELINE_REMOTE_TOKEN".to_owned())
}

fn read_file(path: &str, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {path}: {e}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let (mut addr, mut token) = ("127.0.0.1:0".to_owned(), None);
    let (mut cert, mut key) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => addr = value(&mut it, flag)?,
            "--token" => token = Some(value(&mut it, flag)?),
            "--tls-cert" => cert = Some(read_file(&value(&mut it, flag)?, flag)?),
            "--tls-key" => key = Some(read_file(&value(&mut it, flag)?, flag)?),
            other => return Err(format!("serve: unknown option `{other}`")),
        }
    }
    let token = token_or_env(token)?;
    let mut worker = Worker::bind(&addr, &token).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    match (cert, key) {
        (Some(cert), Some(key)) => worker = worker.tls(&cert, &key).map_err(|e| e.to_string())?,
        (None, None) => {}
        _ => return Err("serve: --tls-cert and --tls-key go together".to_owned()),
    }
    let bound = worker.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {bound}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    worker
        .serve()
        .map_err(|e| format!("the worker failed: {e}"))
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut a = RunArgs {
        workers: Vec::new(),
        token: String::new(),
        items: 0,
        epochs: 1,
        local_lanes: 1,
        order: Order::Completion,
        out: String::new(),
        work_us: 0,
        local_work_us: 0,
        ticket_size: 64,
        timeout_ms: 10_000,
        give_up_ms: 10_000,
        item_bytes: 0,
        process_workers: 0,
        protocol: None,
        tls_ca: None,
        tls_domain: None,
    };
    let mut token = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = value(&mut it, flag)?;
        match flag.as_str() {
            "--workers" => {
                a.workers = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--token" => token = Some(v),
            "--items" => a.items = number(&v, flag)?,
            "--epochs" => a.epochs = number(&v, flag)?,
            "--local-lanes" => a.local_lanes = number(&v, flag)?,
            "--order" => {
                a.order = match v.as_str() {
                    "input" => Order::Input,
                    "completion" => Order::Completion,
                    _ => return Err(format!("--order: `{v}` is not input or completion")),
                }
            }
            "--out" => a.out = v,
            "--work-us" => a.work_us = number(&v, flag)?,
            "--local-work-us" => a.local_work_us = number(&v, flag)?,
            "--ticket-size" => a.ticket_size = number(&v, flag)?,
            "--timeout-ms" => a.timeout_ms = number(&v, flag)?,
            "--give-up-ms" => a.give_up_ms = number(&v, flag)?,
            "--item-bytes" => a.item_bytes = number(&v, flag)?,
            "--process-workers" => a.process_workers = number(&v, flag)?,
            "--protocol" => a.protocol = Some(number(&v, flag)?),
            "--tls-ca" => a.tls_ca = Some(v),
            "--tls-domain" => a.tls_domain = Some(v),
            other => return Err(format!("run: unknown option `{other}`")),
        }
    }
    if a.out.is_empty() {
        return Err("run: --out FILE is required".to_owned());
    }
    if a.process_workers == 0 {
        a.token = token_or_env(token)?;
    }
    Ok(a)
}

fn run(args: &[String]) -> Result<(), String> {
    let a = parse_run(args)?;
    let (items, work_us, payload_bytes) = (a.items, a.work_us, a.item_bytes);
    // Every epoch in one finite stream (each item says its epoch), so that the tier's
    // counters cover exactly what this program reads.
    let positions = (0..a.epochs).flat_map(move |epoch| (0..items).map(move |i| (epoch, i)));
    let jobs = PipelineBuilder::new()
        .source(positions)
        .pipe(move |(epoch, index): (u64, u64)| Job {
            epoch,
            index,
            work_us,
            payload_bytes,
        })
        .name("jobs");
    let mut tier = None;
    let mut pool = None;
    let chain = if a.process_workers > 0 {
        let p = ProcessPool::builder()
            .num_workers(a.process_workers)
            .build()
            .map_err(|e| e.to_string())?;
        let chain = jobs.process_region(hash_region).executor(&p);
        pool = Some(p);
        chain
    } else {
        let mut workers = RemoteWorkers::new(a.workers.clone(), &a.token)
            .local_lanes(a.local_lanes)
            .ticket_size(a.ticket_size)
            .timeout(Duration::from_millis(a.timeout_ms))
            .give_up_after(Duration::from_millis(a.give_up_ms));
        if let Some(v) = a.protocol {
            workers = workers.protocol_version(v);
        }
        if let Some(path) = &a.tls_ca {
            workers = workers.tls_ca(read_file(path, "--tls-ca")?);
        }
        if let Some(name) = &a.tls_domain {
            workers = workers.tls_domain(name.clone());
        }
        let chain = jobs
            .remote_region(hash_region, &workers)
            .order(a.order)
            .name("hash");
        tier = Some(workers);
        chain
    };
    LOCAL_EXTRA_US.store(a.local_work_us, Ordering::Relaxed);
    let mut pipeline = chain.sink().build().map_err(|e| e.to_string())?;
    let file = File::create(&a.out).map_err(|e| format!("--out {}: {e}", a.out))?;
    let mut out = BufWriter::new(file);
    let started = Instant::now();
    let mut delivered = 0u64;
    for item in pipeline.epoch() {
        let item = item.map_err(|e| e.to_string())?;
        writeln!(out, "{} {} {}", item.epoch, item.index, item.value).map_err(|e| e.to_string())?;
        delivered += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    out.flush().map_err(|e| e.to_string())?;
    pipeline.stop().map_err(|e| e.to_string())?;
    drop(pool);
    let mut line = serde_json::json!({ "delivered": delivered, "seconds": seconds });
    if let Some(tier) = tier {
        let s = tier.stats();
        let per_worker: Vec<_> = s
            .per_worker
            .iter()
            .map(|w| serde_json::json!({"addr": w.addr, "items": w.items, "tickets": w.tickets}))
            .collect();
        line["local"] = s.local.into();
        line["remote"] = s.remote.into();
        line["replayed"] = s.replayed.into();
        line["late_dropped"] = s.late_dropped.into();
        line["per_worker"] = per_worker.into();
    }
    println!("{line}");
    Ok(())
}

/// `remote serve ...` or `remote run ...`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("run") => run(&args[1..]),
        _ => Err(
            "usage: remote serve --addr ADDR --token T | remote run --workers ... (see \
                  the top of examples/src/remote.rs)"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote: {e}");
            ExitCode::FAILURE
        }
    }
}
