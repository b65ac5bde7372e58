//! One rank of a multi-process training job (the `distributed` example): its share of each
//! shuffled epoch, per-item randomness, and exact resume, with the rank read from the
//! launcher's environment (torchrun, SLURM, Open MPI; see
//! [`Rank::from_env`](pipeline_runtime::distributed::Rank::from_env)).
//!
//! ```text
//! distributed --items N --batch-size B --seed S --epochs E --concurrency C
//!     --order input|completion --out DIR
//!     [--stop-after-batches K --state-out FILE] [--resume-from FILE_OR_DIR]
//!     [--split drop|pad|even] [--no-shuffle] [--fail-one-in M] [--spawn W]
//! ```
//!
//! Rank `r` appends to `DIR/rank-r.txt` one line per batch it receives,
//! `EPOCH INDEX:VALUE INDEX:VALUE ...`, where `VALUE` is the first `u64` (hex) drawn from
//! the item's generator in the first stage. Each of the two stages sleeps a random 0–2 ms
//! drawn from the item's generator, so completion order really varies.
//!
//! * `--stop-after-batches K --state-out FILE`: after the `K`-th batch this process
//!   receives, write the rank's state (JSON) to `FILE` and exit without reading further.
//! * `--resume-from FILE_OR_DIR`: resume from this rank's state file, or from a directory
//!   holding every old rank's state (`*.json`); on another world size the epoch's remaining
//!   items are re-split across the new ranks.
//! * `{rank}` in `FILE` or `FILE_OR_DIR` is replaced by the rank.
//! * `--spawn W` starts `W` ranks of this program on this machine (setting `RANK`,
//!   `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE` for each) and waits for them. A
//!   `--state-out` without `{rank}` is then a directory, and rank `r` writes
//!   `rank-r.json` in it.
//! * `--fail-one-in M`: the first stage fails items whose value is a multiple of `M` (they
//!   are not delivered, and stay failed across a resume).
//! * `--split`: what to do with the items that do not divide evenly across the ranks
//!   (drop them, pad by repeating, or `even` for evaluation: every item once).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use pipeline_runtime::distributed::{DistributedState, ItemKey, Rank, Resume, Sampler, Split};
use pipeline_runtime::{Order, PipelineBuilder, ResumeState};

/// The command line of one rank (or of the spawner).
#[derive(Debug, Clone)]
pub struct Args {
    /// Items in the dataset.
    pub items: u64,
    /// Items per batch.
    pub batch_size: usize,
    /// Seed of the shuffles and of the items' generators.
    pub seed: u64,
    /// Epochs to read.
    pub epochs: u64,
    /// Concurrency of each stage.
    pub concurrency: usize,
    /// Output order of the stages.
    pub order: Order,
    /// Where the rank files go.
    pub out: PathBuf,
    /// Stop after this many batches (with `state_out`).
    pub stop_after_batches: Option<u64>,
    /// Where the state goes when stopping.
    pub state_out: Option<String>,
    /// A state file, or a directory of every rank's state files.
    pub resume_from: Option<String>,
    /// How an epoch is split across ranks.
    pub split: Split,
    /// Whether epochs are shuffled.
    pub shuffle: bool,
    /// Fail items whose value is a multiple of this (0: none).
    pub fail_one_in: u64,
    /// Start this many ranks on this machine instead of being one.
    pub spawn: Option<u32>,
}

const USAGE: &str = "usage: distributed --items N --batch-size B [--seed S] [--epochs E] \
    [--concurrency C] [--order input|completion] --out DIR [--stop-after-batches K \
    --state-out FILE] [--resume-from FILE_OR_DIR] [--split drop|pad|even] [--no-shuffle] \
    [--fail-one-in M] [--spawn W]";

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
        it.next()
            .cloned()
            .ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{flag} {v:?}: not a number"))
    }
    let (mut items, mut batch_size, mut out) = (None, None, None);
    let mut a = Args {
        items: 0,
        batch_size: 0,
        seed: 0,
        epochs: 1,
        concurrency: 1,
        order: Order::Input,
        out: PathBuf::new(),
        stop_after_batches: None,
        state_out: None,
        resume_from: None,
        split: Split::DropRemainder,
        shuffle: true,
        fail_one_in: 0,
        spawn: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        match flag {
            "--items" => items = Some(number(&value(&mut it, flag)?, flag)?),
            "--batch-size" => batch_size = Some(number(&value(&mut it, flag)?, flag)?),
            "--seed" => a.seed = number(&value(&mut it, flag)?, flag)?,
            "--epochs" => a.epochs = number(&value(&mut it, flag)?, flag)?,
            "--concurrency" => a.concurrency = number(&value(&mut it, flag)?, flag)?,
            "--order" => {
                a.order = match value(&mut it, flag)?.as_str() {
                    "input" => Order::Input,
                    "completion" => Order::Completion,
                    other => return Err(format!("--order {other:?}: `input` or `completion`")),
                }
            }
            "--out" => out = Some(PathBuf::from(value(&mut it, flag)?)),
            "--stop-after-batches" => {
                a.stop_after_batches = Some(number(&value(&mut it, flag)?, flag)?)
            }
            "--state-out" => a.state_out = Some(value(&mut it, flag)?),
            "--resume-from" => a.resume_from = Some(value(&mut it, flag)?),
            "--split" => {
                a.split = match value(&mut it, flag)?.as_str() {
                    "drop" => Split::DropRemainder,
                    "pad" => Split::Pad,
                    "even" => Split::Even,
                    other => return Err(format!("--split {other:?}: `drop`, `pad` or `even`")),
                }
            }
            "--no-shuffle" => a.shuffle = false,
            "--fail-one-in" => a.fail_one_in = number(&value(&mut it, flag)?, flag)?,
            "--spawn" => a.spawn = Some(number(&value(&mut it, flag)?, flag)?),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    a.items = items.ok_or("--items is required")?;
    a.batch_size = batch_size.ok_or("--batch-size is required")?;
    a.out = out.ok_or("--out is required")?;
    if a.batch_size == 0 || a.concurrency == 0 {
        return Err("--batch-size and --concurrency must be at least 1".to_owned());
    }
    if a.stop_after_batches.is_some() != a.state_out.is_some() {
        return Err("--stop-after-batches and --state-out go together".to_owned());
    }
    if a.spawn == Some(0) {
        return Err("--spawn needs at least 1 rank".to_owned());
    }
    Ok(a)
}

/// The program: parses the command line, then spawns ranks or is one. Errors are printed
/// and make the exit status non-zero.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|a| match a.spawn {
        Some(world) => spawn(&args, world),
        None => run_rank(&a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("distributed: error: {message}");
            ExitCode::FAILURE
        }
    }
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
            // This machine's launcher variables (if any) describe the spawner, not the ranks.
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

/// What one item carries out of the stages: its key and its first draw.
type Drawn = (ItemKey, u64);

/// Runs one rank: reads its epochs, writes its rank file, and stops (saving its state) if
/// asked to.
pub fn run_rank(a: &Args) -> Result<(), String> {
    let rank = Rank::from_env().map_err(|e| e.to_string())?;
    let fresh = Sampler::new(a.items, rank)
        .seed(a.seed)
        .split(a.split)
        .shuffle(a.shuffle);
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
    let mut received = 0u64;
    for epoch in first_epoch..a.epochs {
        for batch in pipeline.epoch() {
            let batch = batch.map_err(|e| e.to_string())?;
            let mut line = epoch.to_string();
            for (key, value) in &batch {
                if key.epoch != epoch {
                    return Err(format!("an item of epoch {} in epoch {epoch}", key.epoch));
                }
                line.push_str(&format!(" {}:{value:016x}", key.index));
            }
            writeln!(file, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
            received += 1;
            if Some(received) == a.stop_after_batches {
                file.flush()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let state = pipeline.resume_state().expect("tracking is on");
                let state = DistributedState::new(&sampler, state);
                let out = a.state_out.as_deref().expect("checked with the arguments");
                return save_state(&out.replace("{rank}", &rank.rank.to_string()), &state);
            }
        }
    }
    file.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// The rank's pipeline: keys → draw (fails one in `fail_one_in`) → jitter → batches.
fn build(
    a: &Args,
    sampler: &Sampler,
    state: Option<ResumeState>,
) -> Result<pipeline_runtime::Pipeline<Vec<Drawn>>, String> {
    let fail_one_in = a.fail_one_in;
    PipelineBuilder::new()
        .continuous_source(sampler.epochs())
        .try_pipe(move |key: ItemKey| {
            let mut rng = key.rng();
            let value = rng.next_u64();
            std::thread::sleep(Duration::from_micros(rng.below(2001)));
            if fail_one_in > 0 && value.is_multiple_of(fail_one_in) {
                return Err(format!("item {} of epoch {} fails", key.index, key.epoch));
            }
            Ok((key, value))
        })
        .concurrency(a.concurrency)
        .order(a.order)
        .name("draw")
        .pipe(|(key, value): Drawn| {
            let mut rng = key.rng_stream(1);
            std::thread::sleep(Duration::from_micros(rng.below(2001)));
            (key, value)
        })
        .concurrency(a.concurrency)
        .order(a.order)
        .name("jitter")
        .aggregate(a.batch_size)
        .sink()
        .buffer(2)
        .num_threads((2 * a.concurrency).clamp(2, 64))
        .resume_from(state)
        .build()
        .map_err(|e| e.to_string())
}

/// Reads a state file, or every `*.json` state in a directory, and resumes `fresh`'s rank
/// from it (them).
fn load_resume(from: &str, fresh: &Sampler) -> Result<Resume, String> {
    let path = Path::new(from);
    if path.is_dir() {
        let mut states = Vec::new();
        let entries = fs::read_dir(path).map_err(|e| format!("--resume-from {from}: {e}"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in &files {
            states.push(read_state(file)?);
        }
        if states.is_empty() {
            return Err(format!(
                "--resume-from {from}: no state files (*.json) in it"
            ));
        }
        DistributedState::resume_all(&states, fresh)
            .map_err(|e| format!("--resume-from {from}: {e}"))
    } else {
        read_state(path)?
            .resume(fresh)
            .map_err(|e| format!("--resume-from {from}: {e}"))
    }
}

fn read_state(path: &Path) -> Result<DistributedState, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a state: {e}", path.display()))
}

fn save_state(path: &str, state: &DistributedState) -> Result<(), String> {
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
