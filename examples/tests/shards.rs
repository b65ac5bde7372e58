//! The `shards` example's contract, every rank a real process (the example built as the
//! `shards-rank` binary, started with `--spawn`): ranks' blocks are disjoint, complete per
//! the split rule and equal in batches; a stopped run resumed gives the same lines (input
//! order) or the same multiset (completion order); 4 ranks resumed on 3 cover the rest of
//! the epoch exactly once; the counts on the JSON line balance. With `--features s3` the
//! same runs against a real S3 server on loopback (`s3_shards_*`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use pipeline_examples::scratch::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_shards-rank");
const SHARDS: u64 = 10;
const PER_SHARD: u64 = 37; // 370 samples: 2 dropped per epoch on 4 ranks, 1 on 3
const SEED: u64 = 11;

fn temp(tag: &str) -> TempDir {
    TempDir::new(&format!("pipeline-shards-{tag}-{}", std::process::id())).unwrap()
}

fn shards(args: &[&str], env: &[(String, String)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shards {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(env, &out);
    out
}

/// Credentials given in the environment never show in what a run prints.
fn assert_no_secret(env: &[(String, String)], out: &Output) {
    for (name, value) in env {
        if name.contains("SECRET") {
            for text in [&out.stdout, &out.stderr] {
                assert!(
                    !String::from_utf8_lossy(text).contains(value.as_str()),
                    "{name} shows in the output"
                );
            }
        }
    }
}

fn write(dataset: &str, env: &[(String, String)]) {
    let (s, n, seed) = (SHARDS.to_string(), PER_SHARD.to_string(), SEED.to_string());
    shards(
        &[
            "write",
            "--out",
            dataset,
            "--shards",
            &s,
            "--samples-per-shard",
            &n,
            "--seed",
            &seed,
        ],
        env,
    );
}

/// Runs `read` on `world` ranks with `extra` flags; returns the JSON lines.
fn read(
    dataset: &str,
    out: &Path,
    world: u32,
    extra: &[&str],
    env: &[(String, String)],
) -> Vec<BTreeMap<String, serde_json::Value>> {
    let (seed, w) = (SEED.to_string(), world.to_string());
    let out_dir = out.display().to_string();
    let mut args = vec![
        "read",
        "--shards",
        dataset,
        "--seed",
        &seed,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--out",
        &out_dir,
        "--shuffle-buffer",
        "16",
        "--concurrency",
        "3",
        "--spawn",
        &w,
    ];
    args.extend_from_slice(extra);
    let output = shards(&args, env);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Each rank's batch lines: (epoch, classes).
fn lines(out: &Path, world: u32) -> Vec<Vec<(u64, Vec<u64>)>> {
    (0..world)
        .map(|r| {
            let text =
                std::fs::read_to_string(out.join(format!("rank-{r}.txt"))).unwrap_or_default();
            text.lines()
                .map(|l| {
                    let mut words = l.split(' ').map(|w| w.parse::<u64>().unwrap());
                    (words.next().unwrap(), words.collect())
                })
                .collect()
        })
        .collect()
}

fn balanced(counts: &[BTreeMap<String, serde_json::Value>]) {
    for c in counts {
        let get = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {c:?}"));
        assert_eq!(
            get("sourced"),
            get("delivered") + get("failed") + get("filtered") + get("in_flight"),
            "{c:?}"
        );
        assert_eq!(get("failed"), 0, "{c:?}");
        assert!(get("bytes_read") > 0, "{c:?}");
        assert_eq!(c["balanced"], true, "the ledger balances: {c:?}");
    }
}

/// The samples in the ranks' lines.
fn samples(lines: &[Vec<(u64, Vec<u64>)>]) -> u64 {
    lines.iter().flatten().map(|(_, c)| c.len() as u64).sum()
}

fn contract(dataset: &str, dir: &Path, env: &[(String, String)]) {
    write(dataset, env);
    // Straight through on 4 ranks: disjoint, equal, all but the 2 dropped.
    let full_dir = dir.join("full");
    let counts = read(dataset, &full_dir, 4, &[], env);
    balanced(&counts);
    let full = lines(&full_dir, 4);
    let total = |key: &str| counts.iter().map(|c| c[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        total("delivered"),
        samples(&full),
        "the ledger counts the lines"
    );
    assert_eq!(total("in_flight"), 0);
    for epoch in 0..2 {
        let mut seen = BTreeMap::<u64, u32>::new();
        let mut batches = Vec::new();
        for rank in &full {
            let of_epoch: Vec<_> = rank.iter().filter(|(e, _)| *e == epoch).collect();
            batches.push(of_epoch.len());
            for (_, classes) in of_epoch {
                for &c in classes {
                    *seen.entry(c).or_default() += 1;
                }
            }
        }
        assert!(
            batches.iter().all(|&b| b == batches[0]),
            "equal batches: {batches:?}"
        );
        assert!(
            seen.values().all(|&n| n == 1),
            "a sample twice in epoch {epoch}"
        );
        assert_eq!(seen.len() as u64, SHARDS * PER_SHARD - 2, "epoch {epoch}");
        assert!(seen.keys().all(|&c| c < SHARDS * PER_SHARD));
    }

    // Stopped after 3 batches and resumed on 4: the same lines.
    let part = dir.join("part");
    let states = dir.join("states");
    let states_arg = states.display().to_string();
    let stopped = read(
        dataset,
        &part,
        4,
        &["--stop-after-batches", "3", "--state-out", &states_arg],
        env,
    );
    balanced(&stopped);
    assert!(stopped.iter().all(|c| c["stopped"] == true));
    // Each rank stopped after 3 batches of 8, its shuffle buffer and stages still full.
    for c in &stopped {
        assert_eq!(c["delivered"], 24, "{c:?}");
        assert!(c["in_flight"].as_u64().unwrap() > 0, "{c:?}");
    }
    let own = states.join("rank-{rank}.json").display().to_string();
    balanced(&read(
        dataset,
        &part,
        4,
        &["--resume-from", &own, "--concurrency", "5"],
        env,
    ));
    assert_eq!(
        lines(&part, 4),
        full,
        "stop + resume gives the uninterrupted run's lines"
    );

    // In completion order: the same multiset per rank.
    let (cfull, cpart, cstates) = (dir.join("cfull"), dir.join("cpart"), dir.join("cstates"));
    read(dataset, &cfull, 2, &["--order", "completion"], env);
    let cstates_arg = cstates.display().to_string();
    read(
        dataset,
        &cpart,
        2,
        &[
            "--order",
            "completion",
            "--stop-after-batches",
            "4",
            "--state-out",
            &cstates_arg,
        ],
        env,
    );
    let cown = cstates.join("rank-{rank}.json").display().to_string();
    read(
        dataset,
        &cpart,
        2,
        &["--order", "completion", "--resume-from", &cown],
        env,
    );
    let multiset = |out: &Path| -> Vec<Vec<u64>> {
        lines(out, 2)
            .into_iter()
            .map(|rank| {
                let mut all: Vec<u64> = rank
                    .into_iter()
                    .flat_map(|(e, c)| c.into_iter().map(move |c| e * 1_000_000 + c))
                    .collect();
                all.sort_unstable();
                all
            })
            .collect()
    };
    assert_eq!(multiset(&cpart), multiset(&cfull));

    // Stopped on 4, resumed on 3: the rest of epoch 0 exactly once, then epoch 1 as 3.
    let elastic = dir.join("elastic");
    let all_states = states.display().to_string();
    balanced(&read(
        dataset,
        &elastic,
        3,
        &["--resume-from", &all_states],
        env,
    ));
    // The 3 new ranks' epoch 0, and the 3 batches each old rank delivered before its stop.
    let mut seen = BTreeMap::<u64, u32>::new();
    for (r, rank) in lines(&elastic, 3).iter().enumerate() {
        for (e, classes) in rank {
            if *e == 0 {
                for &c in classes {
                    *seen.entry(c).or_default() += 1;
                }
            }
        }
        let epoch1 = rank.iter().filter(|(e, _)| *e == 1).count();
        assert!(epoch1 > 0, "rank {r} reads epoch 1");
    }
    for rank in &full {
        for (e, classes) in rank.iter().take(3) {
            assert_eq!(*e, 0);
            for &c in classes {
                *seen.entry(c).or_default() += 1;
            }
        }
    }
    assert!(seen.values().all(|&n| n == 1), "4 -> 3: a sample twice");
    assert_eq!(
        seen.len() as u64,
        SHARDS * PER_SHARD - 2,
        "4 -> 3: every sample of epoch 0"
    );
}

#[test]
fn shards_on_local_disk_keep_the_contract() {
    let dir = temp("local");
    let dataset = dir.path().join("dataset").display().to_string();
    contract(&dataset, dir.path(), &[]);
}

#[test]
fn a_foreign_state_and_a_missing_dataset_are_refused_with_a_reason() {
    let dir = temp("refused");
    let dataset = dir.path().join("ds").display().to_string();
    write(&dataset, &[]);
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"version\":1}").unwrap();
    let out = Command::new(BIN)
        .args(["read", "--shards", &dataset, "--batch-size", "4", "--out"])
        .arg(dir.path().join("o"))
        .arg("--resume-from")
        .arg(&bogus)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a state"));
    let out = Command::new(BIN)
        .args(["read", "--shards"])
        .arg(dir.path().join("missing"))
        .args(["--batch-size", "4", "--out"])
        .arg(dir.path().join("o"))
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "s3")]
#[test]
fn s3_shards_on_a_real_s3_server_keep_the_contract() {
    use pipeline_examples::s3_server::{self, ACCESS_KEY, SECRET_KEY};
    let Some(server) = s3_server::start_or_skip("shards over S3") else {
        return;
    };
    server.create_bucket("shards").unwrap();
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let dir = temp("s3");
    contract("s3://shards/dataset", dir.path(), &env);
    // Nor in the saved states, nor in the error of a run against a missing bucket.
    for entry in std::fs::read_dir(dir.path().join("states")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(SECRET_KEY), "a state shows the secret");
    }
    let failed = Command::new(BIN)
        .args([
            "read",
            "--shards",
            "s3://no-such-bucket/x",
            "--batch-size",
            "4",
            "--out",
        ])
        .arg(dir.path().join("o"))
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("no-such-bucket"),
        "the error names the URL: {}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert_no_secret(&env, &failed);
}
