//! The `shards` example: writes a WebDataset of tar shards (with its index), and reads it as
//! one rank of a distributed job: equal steps per rank, exact resume after a stop, also on
//! another number of ranks.
//!
//! ```text
//! shards write --out DIR_OR_URL --shards S --samples-per-shard N --seed X
//! shards read --shards DIR_OR_URL --seed X --epochs E --batch-size B --out DIR
//!     [--split drop|pad|even] [--shuffle-buffer K] [--concurrency C]
//!     [--order input|completion] [--stop-after-batches K --state-out FILE]
//!     [--resume-from FILE_OR_DIR] [--spawn W]
//! ```
//!
//! `write` puts `S` shards `shard-00000.tar`, ... and `index.json` under `DIR_OR_URL` (a
//! directory, or with `--features s3` an `s3://bucket/prefix`, endpoint and credentials from
//! `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ALLOW_HTTP`). Sample `k` (numbered across the dataset) has the key `k` zero-padded
//! to 9 digits, a `cls` member holding `k` in decimal, and a `bin` member of 1–8 KiB of
//! bytes derived from `(X, k)`.
//!
//! `read` is one rank (rank and world from `RANK`/`WORLD_SIZE` and the other launchers'
//! variables; one process alone is rank 0 of 1). Each epoch the shards are shuffled by
//! `(X, epoch)` and the rank reads its contiguous block of their samples (its length set by
//! `--split`, default `drop`: every rank the same number), mixed by a shuffle buffer of `K`
//! samples (default 0: none). It appends one line per batch to `DIR/rank-R.txt`,
//! `EPOCH K1 K2 ...` (the `cls` numbers of the batch's samples), checks every sample's
//! `bin` bytes, and prints one JSON line at the end: `rank`, `world_size`, `sourced`,
//! `delivered`, `failed`, `filtered`, `in_flight` (sourced but not delivered when it stopped
//! early), `balanced` (every epoch's ledger account balances), `bytes_read` (bytes of shard
//! data received), `batches`, `stopped`. The counts are the pipeline's ledger's, summed over
//! the epochs the run reads (a run resumed on the same number of ranks carries its state's
//! counts of the epoch it resumes in).
//!
//! * `--stop-after-batches K --state-out FILE`: after the `K`-th batch this process
//!   receives, write the rank's state (JSON) to `FILE` and exit.
//! * `--resume-from FILE_OR_DIR`: resume from this rank's state file, or from a directory
//!   of every old rank's state (`*.json`), on any number of ranks.
//! * `{rank}` in `FILE` or `FILE_OR_DIR` is replaced by the rank.
//! * `--spawn W` starts `W` ranks of this program here and waits for them; a
//!   `--state-out` without `{rank}` is then a directory holding `rank-R.json`.
//!
//! A dataset without `index.json` (shards written by another tool) is indexed first by
//! reading every shard once; the message on stderr says so.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use pipeline_runtime::distributed::{Rank, Rng, Split};
use pipeline_runtime::stats::EpochAccount;
use pipeline_runtime::storage::webdataset::Sample;
use pipeline_runtime::storage::{
    block_on, Filter, IndexedShard, ShardIndex, ShardResume, ShardSampler, ShardState,
    StorageError, StorageErrorKind, Store, TarWriter,
};
use pipeline_runtime::{Order, Pipeline, PipelineBuilder, ResumeState};

const USAGE: &str =
    "usage:\n  shards write --out DIR_OR_URL --shards S --samples-per-shard N --seed X\n  \
    shards read --shards DIR_OR_URL --seed X --epochs E --batch-size B --out DIR \
    [--split drop|pad|even] [--shuffle-buffer K] [--concurrency C] [--order input|completion] \
    [--stop-after-batches K --state-out FILE] [--resume-from FILE_OR_DIR] [--spawn W]";

/// `write`'s arguments.
#[derive(Debug, Clone)]
pub struct WriteArgs {
    /// Where the shards go.
    pub out: String,
    /// Shards to write.
    pub shards: u64,
    /// Samples in each.
    pub samples_per_shard: u64,
    /// Seed of the `bin` bytes.
    pub seed: u64,
}

/// `read`'s arguments.
#[derive(Debug, Clone)]
pub struct ReadArgs {
    /// Where the shards are.
    pub shards: String,
    /// Seed of the shuffles and of the `bin` bytes.
    pub seed: u64,
    /// Epochs to read (counted from 0, also when resuming).
    pub epochs: u64,
    /// Samples per batch.
    pub batch_size: usize,
    /// Where the rank files go.
    pub out: PathBuf,
    /// How an epoch is split across ranks.
    pub split: Split,
    /// Shuffle buffer, in samples.
    pub shuffle_buffer: usize,
    /// Concurrency of the checking stage.
    pub concurrency: usize,
    /// Output order of the checking stage.
    pub order: Order,
    /// Stop after this many batches (with `state_out`).
    pub stop_after_batches: Option<u64>,
    /// Where the state goes when stopping.
    pub state_out: Option<String>,
    /// A state file, or a directory of every rank's state files.
    pub resume_from: Option<String>,
    /// Start this many ranks here instead of being one.
    pub spawn: Option<u32>,
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub enum Args {
    /// `shards write ...`
    Write(WriteArgs),
    /// `shards read ...`
    Read(ReadArgs),
}

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    it.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag} {v:?}: not a number"))
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let mut it = rest.iter();
    match command.as_str() {
        "write" => {
            let (mut out, mut shards, mut per, mut seed) = (None, None, None, None);
            while let Some(flag) = it.next() {
                let flag = flag.as_str();
                match flag {
                    "--out" => out = Some(value(&mut it, flag)?),
                    "--shards" => shards = Some(number(&value(&mut it, flag)?, flag)?),
                    "--samples-per-shard" => per = Some(number(&value(&mut it, flag)?, flag)?),
                    "--seed" => seed = Some(number(&value(&mut it, flag)?, flag)?),
                    other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
                }
            }
            Ok(Args::Write(WriteArgs {
                out: out.ok_or("--out is required")?,
                shards: shards.ok_or("--shards is required")?,
                samples_per_shard: per.ok_or("--samples-per-shard is required")?,
                seed: seed.unwrap_or(0),
            }))
        }
        "read" => {
            let (mut shards, mut out, mut batch_size) = (None, None, None);
            let mut a = ReadArgs {
                shards: String::new(),
                seed: 0,
                epochs: 1,
                batch_size: 0,
                out: PathBuf::new(),
                split: Split::DropRemainder,
                shuffle_buffer: 0,
                concurrency: 4,
                order: Order::Input,
                stop_after_batches: None,
                state_out: None,
                resume_from: None,
                spawn: None,
            };
            while let Some(flag) = it.next() {
                let flag = flag.as_str();
                match flag {
                    "--shards" => shards = Some(value(&mut it, flag)?),
                    "--seed" => a.seed = number(&value(&mut it, flag)?, flag)?,
                    "--epochs" => a.epochs = number(&value(&mut it, flag)?, flag)?,
                    "--batch-size" => batch_size = Some(number(&value(&mut it, flag)?, flag)?),
                    "--out" => out = Some(PathBuf::from(value(&mut it, flag)?)),
                    "--split" => {
                        a.split = match value(&mut it, flag)?.as_str() {
                            "drop" => Split::DropRemainder,
                            "pad" => Split::Pad,
                            "even" => Split::Even,
                            other => {
                                return Err(format!("--split {other:?}: `drop`, `pad` or `even`"))
                            }
                        }
                    }
                    "--shuffle-buffer" => a.shuffle_buffer = number(&value(&mut it, flag)?, flag)?,
                    "--concurrency" => a.concurrency = number(&value(&mut it, flag)?, flag)?,
                    "--order" => {
                        a.order = match value(&mut it, flag)?.as_str() {
                            "input" => Order::Input,
                            "completion" => Order::Completion,
                            other => {
                                return Err(format!("--order {other:?}: `input` or `completion`"))
                            }
                        }
                    }
                    "--stop-after-batches" => {
                        a.stop_after_batches = Some(number(&value(&mut it, flag)?, flag)?)
                    }
                    "--state-out" => a.state_out = Some(value(&mut it, flag)?),
                    "--resume-from" => a.resume_from = Some(value(&mut it, flag)?),
                    "--spawn" => a.spawn = Some(number(&value(&mut it, flag)?, flag)?),
                    other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
                }
            }
            a.shards = shards.ok_or("--shards is required")?;
            a.out = out.ok_or("--out is required")?;
            a.batch_size = batch_size.ok_or("--batch-size is required")?;
            if a.batch_size == 0 || a.concurrency == 0 {
                return Err("--batch-size and --concurrency must be at least 1".into());
            }
            if a.stop_after_batches.is_some() != a.state_out.is_some() {
                return Err("--stop-after-batches and --state-out go together".into());
            }
            if a.spawn == Some(0) {
                return Err("--spawn needs at least 1 rank".into());
            }
            Ok(Args::Read(a))
        }
        "--help" | "-h" => Err(USAGE.to_owned()),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// The program: parses the command line and runs it; errors are printed and make the exit
/// status non-zero.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|parsed| match parsed {
        Args::Write(w) => write_dataset(&w),
        Args::Read(r) => match r.spawn {
            Some(world) => spawn(&args, world),
            None => read_rank(&r),
        },
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shards: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The `bin` bytes of sample `k` of a dataset written with `seed`: 1–8 KiB.
pub fn bin_bytes(seed: u64, k: u64) -> Vec<u8> {
    let mut rng = Rng::seed_from_u64(seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let len = 1024 + rng.below(7 * 1024 + 1) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes the dataset and its index.
pub fn write_dataset(a: &WriteArgs) -> Result<(), String> {
    let store = Store::open(&a.out).map_err(|e| e.to_string())?;
    let mut shards = Vec::new();
    let mut bytes = 0u64;
    for s in 0..a.shards {
        let mut tar = TarWriter::new();
        let mut starts = Vec::new();
        for i in 0..a.samples_per_shard {
            let k = s * a.samples_per_shard + i;
            starts.push(tar.len());
            tar.append(&format!("{k:09}.cls"), k.to_string().as_bytes());
            tar.append(&format!("{k:09}.bin"), &bin_bytes(a.seed, k));
        }
        let end = tar.len();
        let data = tar.finish();
        let name = format!("shard-{s:05}.tar");
        let size = data.len() as u64;
        bytes += size;
        block_on(store.put(&store.path(&name), data.into())).map_err(|e| e.to_string())?;
        shards.push(IndexedShard::new(name, size, starts, end).map_err(|e| e.to_string())?);
    }
    let index = ShardIndex::new(shards).map_err(|e| e.to_string())?;
    block_on(index.save(&store)).map_err(|e| e.to_string())?;
    println!(
        "{{\"shards\":{},\"samples\":{},\"bytes\":{bytes},\"out\":{:?}}}",
        a.shards,
        index.samples(),
        store.url()
    );
    Ok(())
}

/// Starts `world` ranks of this program and waits for them all.
fn spawn(args: &[String], world: u32) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut child_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--spawn" => {
                it.next();
            }
            "--state-out" => {
                let v = it.next().cloned().unwrap_or_default();
                child_args.push(arg.clone());
                if v.contains("{rank}") {
                    child_args.push(v);
                } else {
                    fs::create_dir_all(&v).map_err(|e| format!("--state-out {v}: {e}"))?;
                    child_args.push(format!("{v}/rank-{{rank}}.json"));
                }
            }
            _ => child_args.push(arg.clone()),
        }
    }
    let mut children = Vec::new();
    for rank in 0..world {
        let child = Command::new(&exe)
            .args(&child_args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", world.to_string())
            .env("PIPELINE_LAUNCHER", "torchrun")
            .spawn()
            .map_err(|e| format!("cannot start rank {rank}: {e}"))?;
        children.push((rank, child));
    }
    let mut failed = Vec::new();
    for (rank, mut child) in children {
        match child.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => failed.push(format!("rank {rank} ({status})")),
            Err(e) => failed.push(format!("rank {rank} ({e})")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// What the checking stage passes on: the sample's `cls` number, once its `bin` bytes are
/// checked.
fn check_sample(seed: u64) -> impl Fn(Result<Sample, StorageError>) -> Result<u64, String> {
    move |sample| {
        let sample = sample.map_err(|e| e.to_string())?;
        let bad = |why: &str| format!("sample `{}` of {}: {why}", sample.key, sample.shard);
        let cls = sample
            .get("cls")
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("no decimal `cls` member"))?;
        match sample.get("bin") {
            Some(bin) if bin[..] == bin_bytes(seed, cls)[..] => Ok(cls),
            Some(_) => Err(bad(&format!("`bin` is not the bytes of sample {cls}"))),
            None => Err(bad("no `bin` member")),
        }
    }
}

fn build(
    a: &ReadArgs,
    sampler: &ShardSampler,
    state: Option<ResumeState>,
) -> Result<Pipeline<Vec<u64>>, String> {
    PipelineBuilder::new()
        .continuous_source(sampler.epochs())
        .try_pipe(check_sample(a.seed))
        .concurrency(a.concurrency)
        .order(a.order)
        .name("check")
        .aggregate(a.batch_size)
        .sink()
        .buffer(2)
        .stats(true)
        .resume_from(state)
        .build()
        .map_err(|e| e.to_string())
}

/// The dataset's index: `index.json`, or built by reading every shard.
fn load_index(store: &Store) -> Result<ShardIndex, String> {
    match block_on(ShardIndex::load(store)) {
        Ok(index) => Ok(index),
        Err(e) if e.kind() == StorageErrorKind::NotFound => {
            eprintln!(
                "shards: {} has no index.json; indexing its .tar shards (reads each once)",
                store.url()
            );
            block_on(ShardIndex::scan(store, &Filter::suffix(".tar"), 8)).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one rank: reads its epochs, writes its rank file, stops (saving its state) if
/// asked to, and prints its counts.
pub fn read_rank(a: &ReadArgs) -> Result<(), String> {
    let rank = Rank::from_env().map_err(|e| e.to_string())?;
    let store = Store::open(&a.shards).map_err(|e| e.to_string())?;
    let index = Arc::new(load_index(&store)?);
    let fresh = ShardSampler::new(&store, index, rank)
        .seed(a.seed)
        .shuffle_buffer(a.shuffle_buffer)
        .split(a.split);
    let resume = match &a.resume_from {
        Some(from) => Some(load_resume(
            &from.replace("{rank}", &rank.rank.to_string()),
            &fresh,
        )?),
        None => None,
    };
    let (sampler, state, first_epoch) = match resume {
        Some(r) => (r.sampler.clone(), Some(r.pipeline.clone()), r.epoch()),
        None => (fresh, None, 0),
    };
    let mut pipeline = build(a, &sampler, state)?;

    fs::create_dir_all(&a.out).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    let path = a.out.join(format!("rank-{}.txt", rank.rank));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut file = BufWriter::new(file);
    let mut batches = 0u64;
    let mut stopped = false;
    'epochs: for epoch in first_epoch..a.epochs {
        for batch in pipeline.epoch() {
            let batch = batch.map_err(|e| e.to_string())?;
            let mut line = epoch.to_string();
            for cls in &batch {
                line.push_str(&format!(" {cls}"));
            }
            writeln!(file, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
            batches += 1;
            if Some(batches) == a.stop_after_batches {
                let state = pipeline.resume_state().expect("tracking is on");
                let state = ShardState::new(&sampler, state);
                let out = a.state_out.as_deref().expect("checked with the arguments");
                save_state(&out.replace("{rank}", &rank.rank.to_string()), &state)?;
                stopped = true;
                break 'epochs;
            }
        }
    }
    file.flush()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The ledger's accounts of the epochs the job reads (the source may have begun the
    // next); a stopped pipeline keeps its items in flight.
    pipeline.stop().map_err(|e| e.to_string())?;
    let mut accounts = pipeline.accounts();
    // (The pipeline counts epochs from the sampler's first, after a re-split.)
    accounts.retain(|account| sampler.first_epoch() + account.epoch < a.epochs);
    let sum = |count: fn(&EpochAccount) -> u64| accounts.iter().map(count).sum::<u64>();
    let (sourced, delivered, failed, filtered, in_flight) = (
        sum(|a| a.sourced),
        sum(|a| a.delivered),
        sum(|a| a.failed),
        sum(|a| a.filtered),
        sum(|a| a.in_flight),
    );
    let balanced = accounts.iter().all(EpochAccount::balanced);
    println!(
        "{{\"rank\":{},\"world_size\":{},\"sourced\":{sourced},\"delivered\":{delivered},\
         \"failed\":{failed},\"filtered\":{filtered},\"in_flight\":{in_flight},\
         \"balanced\":{balanced},\"bytes_read\":{},\"batches\":{batches},\"stopped\":{stopped}}}",
        rank.rank,
        rank.world_size,
        sampler.bytes_read()
    );
    Ok(())
}

/// Reads a state file, or every `*.json` state in a directory, and resumes `fresh`'s rank
/// from it (them).
fn load_resume(from: &str, fresh: &ShardSampler) -> Result<ShardResume, String> {
    let path = Path::new(from);
    if path.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| format!("--resume-from {from}: {e}"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let states = files
            .iter()
            .map(|f| read_state(f))
            .collect::<Result<Vec<_>, _>>()?;
        if states.is_empty() {
            return Err(format!(
                "--resume-from {from}: no state files (*.json) in it"
            ));
        }
        ShardState::resume_all(&states, fresh).map_err(|e| format!("--resume-from {from}: {e}"))
    } else {
        read_state(path)?
            .resume(fresh)
            .map_err(|e| format!("--resume-from {from}: {e}"))
    }
}

fn read_state(path: &Path) -> Result<ShardState, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a state: {e}", path.display()))
}

fn save_state(path: &str, state: &ShardState) -> Result<(), String> {
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    let mut file = File::create(path).map_err(|e| format!("--state-out {path}: {e}"))?;
    file.write_all(json.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(|e| format!("--state-out {path}: {e}"))
}
