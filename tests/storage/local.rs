use std::collections::BTreeMap;
use std::path::PathBuf;

use pipeline_runtime::error::StageFailureKind;
use pipeline_runtime::storage::{
    block_on, shard_split, webdataset, Filter, Object, ShuffleBuffer, StorageErrorKind, Store,
    TarWriter,
};
use pipeline_runtime::{MaxFailures, PipelineBuilder, PipelineError};

/// A fresh directory under the system's temporary one, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("pipeline-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shard of `n` samples `s{shard}_{i:04}` with fields `jpg`, `json` and `cls`.
fn shard(shard: usize, n: usize) -> Vec<u8> {
    let mut w = TarWriter::new();
    for i in 0..n {
        let key = format!("s{shard}_{i:04}");
        w.append(
            &format!("{key}.jpg"),
            format!("jpeg of {key}").repeat(50).as_bytes(),
        );
        w.append(
            &format!("{key}.json"),
            format!("{{\"key\":\"{key}\"}}").as_bytes(),
        );
        w.append(&format!("{key}.cls"), (i % 10).to_string().as_bytes());
    }
    w.finish()
}

fn write_shards(dir: &Dir, shards: usize, per_shard: usize) {
    for s in 0..shards {
        std::fs::write(dir.0.join(format!("train-{s:03}.tar")), shard(s, per_shard)).unwrap();
    }
    std::fs::write(dir.0.join("README.txt"), "not a shard").unwrap();
}

fn drain<T: Send + 'static>(p: pipeline_runtime::Pipeline<T>) -> (Vec<T>, Option<PipelineError>) {
    let (mut items, mut error) = (Vec::new(), None);
    for r in p {
        match r {
            Ok(x) => items.push(x),
            Err(e) => error = Some(e),
        }
    }
    (items, error)
}

fn list(store: &Store) -> Vec<Object> {
    block_on(store.list(&Filter::glob("train-*.tar"))).unwrap()
}

#[test]
fn samples_group_a_shards_files_by_key_and_every_shard_is_read_once() {
    let dir = Dir::new("whole");
    write_shards(&dir, 4, 25);
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let shards = list(&store);
    assert_eq!(shards.len(), 4, "the glob leaves README.txt out");
    let p = PipelineBuilder::new()
        .source(shards)
        .async_try_flat_pipe(webdataset::samples(&store))
        .concurrency(3)
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let (samples, error) = drain(p);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(samples.len(), 100);
    let mut by_key = BTreeMap::new();
    for s in &samples {
        let exts: Vec<&str> = s.fields.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(exts, ["jpg", "json", "cls"], "sample {}", s.key);
        assert_eq!(
            s.get("json").unwrap(),
            format!("{{\"key\":\"{}\"}}", s.key).as_bytes()
        );
        assert!(
            s.shard.starts_with("file:///") && s.shard.ends_with(".tar"),
            "{}",
            s.shard
        );
        assert!(
            by_key.insert(s.key.clone(), s.index).is_none(),
            "{} twice",
            s.key
        );
    }
    assert_eq!(
        by_key["s2_0007"], 7,
        "index counts samples within the shard"
    );
    let counts = store.counters().snapshot();
    assert_eq!(counts.failures, 0);
    assert!(counts.bytes >= 4 * 25 * 800, "{counts:?}");
}

#[test]
fn a_truncated_shard_delivers_its_samples_before_the_cut_and_fails_naming_shard_and_offset() {
    let dir = Dir::new("truncated");
    let whole = shard(0, 10);
    // Cut inside the 6th sample's jpg (sample 5's first file): samples 0..=4 are whole.
    let sample_bytes = (whole.len() - 1024) / 10;
    let cut = 5 * sample_bytes + 700;
    std::fs::write(dir.0.join("train-000.tar"), &whole[..cut]).unwrap();
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let p = PipelineBuilder::new()
        .source(list(&store))
        .async_try_flat_pipe(webdataset::samples(&store))
        .name("samples")
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let (samples, error) = drain(p);
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        ["s0_0000", "s0_0001", "s0_0002", "s0_0003", "s0_0004"]
    );
    let error = error.expect("the truncated shard fails");
    let text = error.to_string();
    let StageFailureKind::BudgetExceeded { causes, .. } = error.first().kind() else {
        panic!("{text}");
    };
    let cause = causes[0].to_string();
    assert!(cause.contains("train-000.tar"), "{cause}");
    assert!(
        cause.contains(&format!("at byte {}", 5 * sample_bytes)),
        "{cause}"
    );
    assert!(cause.contains("truncated"), "{cause}");
}

#[test]
fn a_corrupt_shard_fails_alone_and_the_run_goes_on_within_the_budget() {
    let dir = Dir::new("corrupt");
    write_shards(&dir, 3, 20);
    let mut bad = shard(1, 20);
    let header_of_sample_3 = 3 * (bad.len() - 1024) / 20;
    bad[header_of_sample_3 + 10] ^= 0x41; // breaks the header's checksum
    std::fs::write(dir.0.join("train-001.tar"), &bad).unwrap();
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let p = PipelineBuilder::new()
        .source(list(&store))
        .async_try_flat_pipe(webdataset::samples(&store))
        .name("samples")
        .concurrency(2)
        .sink()
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let (samples, error) = drain_with_stats(p);
    assert!(
        error.0.is_none(),
        "one failure is within the budget: {:?}",
        error.0
    );
    // Samples 0 and 1 of the corrupt shard; sample 2 may miss fields (the file after it is
    // unreadable, its key unknown), so it is dropped with the shard's failure.
    assert_eq!(samples.len(), 20 + 2 + 20);
    assert_eq!(error.1, 1, "the corrupt shard is one failed item");
}

fn drain_with_stats<T: Send + 'static>(
    mut p: pipeline_runtime::Pipeline<T>,
) -> (Vec<T>, (Option<PipelineError>, u64)) {
    let mut items = Vec::new();
    let mut error = None;
    for r in p.by_ref() {
        match r {
            Ok(x) => items.push(x),
            Err(e) => error = Some(e),
        }
    }
    let failures = p.stats().stages.iter().map(|s| s.failures).sum();
    (items, (error, failures))
}

#[test]
fn a_shard_deleted_after_the_listing_fails_as_not_found_naming_its_url() {
    let dir = Dir::new("deleted");
    write_shards(&dir, 2, 5);
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let shards = list(&store);
    std::fs::remove_file(dir.0.join("train-001.tar")).unwrap();
    let mut read = Vec::new();
    let mut failed = Vec::new();
    for shard in shards {
        let mut stream = Box::pin(webdataset::read_shard(&store, shard.path));
        block_on(async {
            use futures::StreamExt;
            while let Some(r) = stream.next().await {
                match r {
                    Ok(s) => read.push(s.key),
                    Err(e) => failed.push(e),
                }
            }
        });
    }
    assert_eq!(read.len(), 5);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].kind(), StorageErrorKind::NotFound);
    assert!(
        failed[0].to_string().contains("train-001.tar"),
        "{}",
        failed[0]
    );
    assert_eq!(
        store.counters().snapshot().retries,
        0,
        "a missing object is not retried"
    );
}

#[test]
fn a_missing_directory_fails_the_listing_naming_the_url() {
    let store = Store::open("/nonexistent/pipeline-storage-test").unwrap();
    let e = block_on(store.list(&Filter::All)).unwrap_err();
    assert!(
        e.to_string().contains("nonexistent/pipeline-storage-test"),
        "{e}"
    );
}

#[test]
fn memory_stores_and_range_reads() {
    let store = Store::open("memory://").unwrap();
    let path = store.path("a/b.bin");
    let data: Vec<u8> = (0..=255u8).collect();
    block_on(store.put(&path, data.clone().into())).unwrap();
    let got = block_on(store.get_range(&path, 10..20)).unwrap();
    assert_eq!(&got[..], &data[10..20]);
    assert_eq!(block_on(store.get(&path)).unwrap().len(), 256);
    assert_eq!(store.url_of(&path), "memory:///a/b.bin");
}

#[test]
fn unknown_schemes_and_missing_features_are_configuration_errors() {
    let e = Store::open("ftp://host/x").unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::Config);
    assert!(e.to_string().contains("unknown scheme `ftp`"), "{e}");
    // Without the `s3` feature (which another crate of the workspace may turn on):
    if let Err(e) = Store::open("s3://bucket/x") {
        assert!(e.to_string().contains("`s3` feature"), "{e}");
    }
}

#[test]
fn ranks_read_disjoint_shards_and_a_shuffle_buffer_reorders_samples() {
    let dir = Dir::new("ranks");
    write_shards(&dir, 6, 8);
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let shards = list(&store);
    let mut seen = Vec::new();
    for rank in 0..2 {
        let mine = shard_split(&shards, rank, 2, 1234, 3);
        assert_eq!(mine.len(), 3);
        let p = PipelineBuilder::new()
            .source(mine)
            .async_try_flat_pipe(webdataset::samples(&store))
            .aggregate_with(ShuffleBuffer::new(10, 99))
            .disaggregate()
            .sink()
            .build()
            .unwrap();
        let (samples, error) = drain(p);
        assert!(error.is_none());
        let keys: Vec<String> = samples.into_iter().map(|s| s.key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_ne!(keys, sorted, "shuffled");
        seen.extend(keys);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        48,
        "the two ranks together read every sample once"
    );
}

#[test]
fn a_sample_whose_path_is_unsafe_fails_in_its_place_and_never_reaches_user_code() {
    let dir = Dir::new("unsafe-keys");
    let mut w = TarWriter::new();
    w.append("ok_0.jpg", b"first");
    w.append("../../evil.jpg", b"traversal");
    w.append("../../evil.cls", b"1");
    w.append("/abs/x.txt", b"absolute");
    w.append("ok_1.jpg", b"last");
    std::fs::write(dir.0.join("train-000.tar"), w.finish()).unwrap();
    let store = Store::open(dir.0.to_str().unwrap()).unwrap();
    let shard = list(&store).remove(0);
    let mut stream = Box::pin(webdataset::read_shard(&store, shard.path));
    let results = block_on(async {
        use futures::StreamExt;
        let mut out = Vec::new();
        while let Some(r) = stream.next().await {
            out.push(r.map(|s| (s.key, s.index)).map_err(|e| e.to_string()));
        }
        out
    });
    assert_eq!(results.len(), 4, "{results:?}");
    assert_eq!(results[0], Ok(("ok_0".to_owned(), 0)));
    let traversal = results[1].as_ref().unwrap_err();
    assert!(
        traversal.contains("train-000.tar")
            && traversal.contains("`../../evil.jpg`")
            && traversal.contains("`..` component"),
        "{traversal}"
    );
    let absolute = results[2].as_ref().unwrap_err();
    assert!(
        absolute.contains("`/abs/x.txt`") && absolute.contains("absolute"),
        "{absolute}"
    );
    assert_eq!(
        results[3],
        Ok(("ok_1".to_owned(), 3)),
        "indices count the failed samples"
    );
}
