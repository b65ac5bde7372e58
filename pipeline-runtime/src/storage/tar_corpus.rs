//! The differential test of the tar reader against Python's `tarfile`: `tar_corpus.py`
//! builds a corpus of crafted archives (the TARmageddon pax size override, long names,
//! base-256 sizes, links, damage, sparse members, unsafe names...) and reads each one with
//! `tarfile`'s defaults; this test reads each one with [`TarReader`] and compares. A case
//! agrees when both give the same regular files with the same bytes; or when ours fails
//! where tarfile fails or stops silently at damage (ours then delivered the same files
//! before the damage); or when ours refuses it by one of the documented [`Rule`]s after
//! delivering a prefix of tarfile's files; or when the reader agrees and a file's path is
//! one that the sample-key check refuses. Each case says which of these it expects, and the
//! test fails on any other outcome. It prints the table (`--nocapture` shows it) and skips,
//! saying why, when `python3` is not installed.

use std::process::Command;

use serde_json::Value;

use super::tar::{TarError, TarReader};
use super::webdataset::check_member_path;

type Files = Vec<(Vec<u8>, Vec<u8>)>;

/// Our reading of an archive fed in awkward chunks: its files, and how it ended.
fn read_ours(bytes: &[u8]) -> (Files, Result<(), TarError>) {
    let mut r = TarReader::new();
    let mut files = Vec::new();
    for chunk in bytes.chunks(777) {
        r.push(chunk);
        loop {
            match r.next_entry() {
                Ok(Some(e)) => files.push((e.name.to_vec(), e.data.to_vec())),
                Ok(None) => break,
                Err(e) => return (files, Err(e)),
            }
        }
    }
    let end = r.finish();
    (files, end)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn is_prefix(a: &Files, b: &Files) -> bool {
    a.len() <= b.len() && a[..] == b[..a.len()]
}

#[test]
fn the_reader_agrees_with_python_tarfile_on_a_corpus_of_crafted_archives() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipped: python3 is not installed, so there is no tarfile to compare with");
        return;
    }
    let dir = std::env::temp_dir().join(format!("pipeline-tar-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("tar_corpus.py");
    std::fs::write(&script, include_str!("tar_corpus.py")).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar_corpus.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let mut table = vec![format!(
        "{:<32} {:<22} {:<40} {}",
        "case", "tarfile", "ours", "agree/rule"
    )];
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case["case"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let verdict = case["verdict"].as_str().unwrap();
        let theirs: Files = case["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (unhex(m[0].as_str().unwrap()), unhex(m[1].as_str().unwrap())))
            .collect();
        let bytes = std::fs::read(case["file"].as_str().unwrap()).unwrap();
        let (ours, end) = read_ours(&bytes);
        let outcome = match (&end, verdict) {
            (Ok(()), "ok") if ours == theirs => {
                if ours.iter().any(|(n, _)| check_member_path(n).is_err()) {
                    "key".to_owned()
                } else {
                    "agree".to_owned()
                }
            }
            (Err(e), _) if e.rule.is_some() && is_prefix(&ours, &theirs) => {
                format!("rule:{}", e.rule.unwrap().tag())
            }
            (Err(e), "stopped") if e.rule.is_none() && ours == theirs => "fail".to_owned(),
            (Err(e), "error") if e.rule.is_none() && is_prefix(&ours, &theirs) => "fail".to_owned(),
            _ => "DISAGREE".to_owned(),
        };
        if let Err(e) = &end {
            assert!(
                e.message.contains("at byte"),
                "{name}: the error names no offset: {}",
                e.message
            );
        }
        let tarfile = format!("{verdict}, {} files", theirs.len());
        let ours_text = match &end {
            Ok(()) => format!("ok, {} files", ours.len()),
            Err(e) => format!("{} files, fails at byte {}", ours.len(), e.offset),
        };
        let agreement = match outcome.as_str() {
            "agree" => "agree".to_owned(),
            "fail" if verdict == "stopped" => "rule: damage is an error (tarfile stops)".to_owned(),
            "fail" => "agree (both fail)".to_owned(),
            "key" => "agree; rule: unsafe key".to_owned(),
            other => other.replace("rule:", "rule: "),
        };
        table.push(format!(
            "{name:<32} {tarfile:<22} {ours_text:<40} {agreement}"
        ));
        if outcome != expect {
            wrong.push(format!(
                "{name}: expected {expect}, got {outcome}; tarfile: {verdict} {} {:?}; ours: {:?} {:?}",
                case["error"],
                theirs.iter().map(|(n, d)| (String::from_utf8_lossy(n), d.len())).collect::<Vec<_>>(),
                ours.iter().map(|(n, d)| (String::from_utf8_lossy(n), d.len())).collect::<Vec<_>>(),
                end
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", table.join("\n"));
    println!(
        "{} cases, {} as expected",
        cases.len(),
        cases.len() - wrong.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
