//! The `distributed` example's contract, with every rank a real process (the example's code
//! built as the `distributed-rank` binary, started with `--spawn`): ranks' shares are
//! disjoint, complete and equal; runs replay exactly; a stopped run resumes exactly, also on
//! another number of ranks; bad environments and foreign states are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use pipeline_examples::scratch::TempDir;
use pipeline_runtime::distributed::ItemKey;

const BIN: &str = env!("CARGO_BIN_EXE_distributed-rank");
const ITEMS: u64 = 403; // 403 % 4 == 3 items dropped per epoch on 4 ranks, 1 on 3
const SEED: u64 = 7;

/// One batch line: its epoch and its `(index, value)` items.
type Batch = (u64, Vec<(u64, u64)>);

fn temp(tag: &str) -> TempDir {
    TempDir::new(&format!(
        "pipeline-distributed-{tag}-{}",
        std::process::id()
    ))
    .unwrap()
}

fn run(out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = [
        "--items",
        &ITEMS.to_string(),
        "--batch-size",
        "5",
        "--seed",
        &SEED.to_string(),
        "--epochs",
        "2",
        "--concurrency",
        "3",
        "--order",
        "input",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--out".to_owned(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    // Later flags win: `extra` may override the defaults above.
    Command::new(BIN)
        .args(dedup_flags(&args))
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap()
}

/// Keeps the last value of each flag given twice.
fn dedup_flags(args: &[String]) -> Vec<String> {
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].clone();
        let value = args.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
        i += 1 + usize::from(value.is_some());
        pairs.retain(|(f, _)| *f != flag);
        pairs.push((flag, value));
    }
    pairs
        .into_iter()
        .flat_map(|(f, v)| std::iter::once(f).chain(v))
        .collect()
}

fn ok(output: Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn failed(output: Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8(output.stderr).unwrap()
}

/// Every rank's batches.
fn read(dir: &Path, world: u32) -> Vec<Vec<Batch>> {
    (0..world)
        .map(|r| {
            let text =
                std::fs::read_to_string(dir.join(format!("rank-{r}.txt"))).unwrap_or_default();
            text.lines()
                .map(|line| {
                    let mut words = line.split(' ');
                    let epoch = words.next().unwrap().parse().unwrap();
                    let items = words
                        .map(|w| {
                            let (i, v) = w.split_once(':').unwrap();
                            (i.parse().unwrap(), u64::from_str_radix(v, 16).unwrap())
                        })
                        .collect();
                    (epoch, items)
                })
                .collect()
        })
        .collect()
}

fn files(dir: &Path, world: u32) -> Vec<String> {
    (0..world)
        .map(|r| std::fs::read_to_string(dir.join(format!("rank-{r}.txt"))).unwrap())
        .collect()
}

/// One rank's items of `epoch`, in order.
fn items(batches: &[Batch], epoch: u64) -> Vec<(u64, u64)> {
    batches
        .iter()
        .filter(|b| b.0 == epoch)
        .flat_map(|b| b.1.clone())
        .collect()
}

fn sorted(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    v
}

/// The first draw of the item's generator, as the example's stage makes it.
fn value(epoch: u64, index: u64) -> u64 {
    ItemKey {
        seed: SEED,
        epoch,
        index,
    }
    .rng()
    .next_u64()
}

#[test]
fn four_ranks_read_disjoint_complete_equal_shares_that_change_each_epoch() {
    let dir = temp("shares");
    ok(run(dir.path(), &["--spawn", "4"]));
    let ranks = read(dir.path(), 4);
    let mut orders = Vec::new();
    for epoch in 0..2 {
        let mut all = BTreeSet::new();
        for batches in &ranks {
            let mine = items(batches, epoch);
            assert_eq!(mine.len() as u64, ITEMS / 4, "equal lengths");
            for &(index, v) in &mine {
                assert!(index < ITEMS);
                assert_eq!(v, value(epoch, index), "the value is the item's first draw");
                assert!(
                    all.insert(index),
                    "index {index} on two ranks in epoch {epoch}"
                );
            }
            assert!(batches
                .iter()
                .filter(|b| b.0 == epoch)
                .all(|b| b.1.len() == 5));
            orders.push(mine.iter().map(|p| p.0).collect::<Vec<_>>());
        }
        assert_eq!(
            all.len() as u64,
            ITEMS - ITEMS % 4,
            "complete but for the remainder"
        );
    }
    for r in 0..4 {
        assert_ne!(
            orders[r],
            orders[4 + r],
            "rank {r}: epoch 1 is another order"
        );
    }
}

#[test]
fn runs_replay_identically_whatever_the_concurrency() {
    let (a, b, c) = (temp("replay-a"), temp("replay-b"), temp("replay-c"));
    ok(run(a.path(), &["--spawn", "4"]));
    ok(run(b.path(), &["--spawn", "4"]));
    ok(run(c.path(), &["--spawn", "4", "--concurrency", "1"]));
    assert_eq!(files(a.path(), 4), files(b.path(), 4));
    assert_eq!(files(a.path(), 4), files(c.path(), 4));
}

#[test]
fn a_stopped_run_resumes_to_the_uninterrupted_files_in_input_order() {
    let whole = temp("input-whole");
    ok(run(whole.path(), &["--spawn", "4", "--fail-one-in", "9"]));
    let expected = files(whole.path(), 4);
    let failed_items = read(whole.path(), 4)
        .concat()
        .iter()
        .flat_map(|b| b.1.clone())
        .filter(|p| p.1 % 9 == 0)
        .count();
    assert_eq!(failed_items, 0, "failed items are not delivered");
    // Stopping in epoch 0 and in epoch 1 (20 batches per epoch less the failures).
    for k in ["7", "23"] {
        let (out, states) = (
            temp(&format!("input-out-{k}")),
            temp(&format!("input-st-{k}")),
        );
        let st = states.path().display().to_string();
        let common = ["--spawn", "4", "--fail-one-in", "9"];
        ok(run(
            out.path(),
            &[
                &common[..],
                &["--stop-after-batches", k, "--state-out", &st],
            ]
            .concat(),
        ));
        let lines: Vec<usize> = files(out.path(), 4)
            .iter()
            .map(|f| f.lines().count())
            .collect();
        assert!(
            lines.iter().all(|&n| n == k.parse::<usize>().unwrap()),
            "{lines:?}"
        );
        ok(run(
            out.path(),
            &[&common[..], &["--concurrency", "2", "--resume-from", &st]].concat(),
        ));
        assert_eq!(files(out.path(), 4), expected, "stopped after {k} batches");
    }
}

#[test]
fn a_stopped_run_resumes_to_the_same_items_in_completion_order() {
    let whole = temp("completion-whole");
    ok(run(
        whole.path(),
        &[
            "--spawn",
            "4",
            "--order",
            "completion",
            "--concurrency",
            "6",
        ],
    ));
    let expected = read(whole.path(), 4);
    let (out, states) = (temp("completion-out"), temp("completion-st"));
    let st = states.path().display().to_string();
    let common = [
        "--spawn",
        "4",
        "--order",
        "completion",
        "--concurrency",
        "6",
    ];
    ok(run(
        out.path(),
        &[
            &common[..],
            &["--stop-after-batches", "13", "--state-out", &st],
        ]
        .concat(),
    ));
    ok(run(
        out.path(),
        &[&common[..], &["--resume-from", &st]].concat(),
    ));
    let got = read(out.path(), 4);
    for r in 0..4 {
        for epoch in 0..2 {
            let (g, e) = (items(&got[r], epoch), items(&expected[r], epoch));
            assert_eq!(
                g.len(),
                e.len(),
                "rank {r} epoch {epoch}: none twice, none skipped"
            );
            assert_eq!(sorted(g), sorted(e), "rank {r} epoch {epoch}");
        }
    }
}

#[test]
fn four_ranks_resume_as_three() {
    let (old, new, states) = (temp("resplit-old"), temp("resplit-new"), temp("resplit-st"));
    let st = states.path().display().to_string();
    ok(run(
        old.path(),
        &[
            "--spawn",
            "4",
            "--stop-after-batches",
            "7",
            "--state-out",
            &st,
        ],
    ));
    ok(run(new.path(), &["--spawn", "3", "--resume-from", &st]));
    let (before, after) = (read(old.path(), 4), read(new.path(), 3));

    // Epoch 0: what the 4 ranks read, then the rest split across 3, each item once.
    let mut seen = BTreeMap::new();
    for (index, v) in before.iter().chain(&after).flat_map(|b| items(b, 0)) {
        assert_eq!(v, value(0, index));
        assert!(seen.insert(index, v).is_none(), "index {index} read twice");
    }
    let full = ITEMS - ITEMS % 4;
    let read_by_four = 4 * 7 * 5;
    let left = full - read_by_four;
    assert_eq!(
        seen.len() as u64,
        full - left % 3,
        "only the remainder of the split is dropped"
    );
    let lens: Vec<usize> = after.iter().map(|b| items(b, 0).len()).collect();
    assert!(lens.iter().all(|&l| l as u64 == left / 3), "{lens:?}");
    // ... and exactly the items the 4 ranks would have read.
    let whole = temp("resplit-whole");
    ok(run(whole.path(), &["--spawn", "4"]));
    let epoch0: BTreeSet<u64> = read(whole.path(), 4)
        .iter()
        .flat_map(|b| items(b, 0))
        .map(|p| p.0)
        .collect();
    assert!(seen.keys().all(|i| epoch0.contains(i)));

    // Epoch 1: a fresh split on 3 ranks.
    let mut all = BTreeSet::new();
    for batches in &after {
        let mine = items(batches, 1);
        assert_eq!(mine.len() as u64, ITEMS / 3);
        for (index, v) in mine {
            assert_eq!(v, value(1, index));
            assert!(all.insert(index));
        }
    }
    assert_eq!(all.len() as u64, ITEMS - ITEMS % 3);
}

#[test]
fn bad_environments_are_clear_errors() {
    let dir = temp("env");
    let one = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--items", "10", "--batch-size", "2", "--out"])
            .arg(dir.path());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        failed(cmd.output().unwrap())
    };
    let m = one(&[("RANK", "4"), ("WORLD_SIZE", "4")]);
    assert!(m.contains("RANK=4") && m.contains("WORLD_SIZE=4"), "{m}");
    let m = one(&[("RANK", "two"), ("WORLD_SIZE", "4")]);
    assert!(m.contains("RANK=\"two\""), "{m}");
    let m = one(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("SLURM_PROCID", "1"),
        ("SLURM_NTASKS", "2"),
    ]);
    assert!(
        m.contains("disagree") && m.contains("SLURM_PROCID=1"),
        "{m}"
    );
    let m = one(&[("OMPI_COMM_WORLD_RANK", "0")]);
    assert!(m.contains("OMPI_COMM_WORLD_SIZE"), "{m}");
}

#[test]
fn a_state_from_another_dataset_or_batch_size_is_refused() {
    let (out, states) = (temp("foreign-out"), temp("foreign-st"));
    let st = states.path().display().to_string();
    ok(run(
        out.path(),
        &[
            "--spawn",
            "2",
            "--stop-after-batches",
            "2",
            "--state-out",
            &st,
        ],
    ));
    let m = failed(run(
        out.path(),
        &["--spawn", "2", "--items", "500", "--resume-from", &st],
    ));
    assert!(
        m.contains("dataset of 403 items") && m.contains("500 items"),
        "{m}"
    );
    let m = failed(run(
        out.path(),
        &["--spawn", "2", "--batch-size", "6", "--resume-from", &st],
    ));
    assert!(
        m.contains("another shape") && m.contains("aggregate(5"),
        "{m}"
    );
    let m = failed(run(
        out.path(),
        &["--spawn", "2", "--seed", "8", "--resume-from", &st],
    ));
    assert!(m.contains("seed"), "{m}");
    let one = format!("{st}/rank-0.json");
    let m = failed(run(out.path(), &["--spawn", "3", "--resume-from", &one]));
    assert!(m.contains("world of 2"), "{m}");
}
