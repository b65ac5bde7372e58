//! Reading from S3 against a real S3-compatible server on the loopback interface (s3s-fs or
//! moto_server, see `pipeline_examples::s3_server`), never a mock: shards and objects
//! through the server, and the faults a training job meets: a missing bucket, wrong
//! credentials, an object deleted between the listing and the read, the server gone
//! mid-run. Each test starts its own server at a free port and kills it when done (also on
//! panic). Without a server the tests print why and pass, unless `PIPELINE_REQUIRE_S3=1`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use pipeline_examples::s3_server::{start_or_skip, S3Server, ServerKind};
use pipeline_runtime::storage::object_store::ObjectStoreExt;
use pipeline_runtime::storage::{
    block_on, webdataset, Filter, Object, Retry, StorageErrorKind, Store, StoreOptions, TarWriter,
};
use pipeline_runtime::{MaxFailures, PipelineBuilder};

/// A shard of `n` samples of `size`-byte `bin` fields plus a `cls` field.
fn shard(shard: usize, n: usize, size: usize) -> Vec<u8> {
    let mut w = TarWriter::new();
    for i in 0..n {
        let key = format!("{shard:03}_{i:04}");
        w.append(&format!("{key}.bin"), &vec![(i % 251) as u8; size]);
        w.append(&format!("{key}.cls"), i.to_string().as_bytes());
    }
    w.finish()
}

/// Quick retries, so that a fault shows in seconds.
fn options(server: &S3Server) -> StoreOptions {
    let quick = Retry {
        max_retries: 2,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    };
    server
        .options()
        .retry(quick)
        .http_retry(quick, Duration::from_secs(3))
        .request_timeout(Duration::from_secs(5))
}

/// A bucket `data` holding `shards` shards under `train/`, and a store on that prefix.
fn bucket(server: &S3Server, shards: usize, n: usize, size: usize) -> Store {
    server.create_bucket("data").unwrap();
    let store = Store::open_with("s3://data/train", options(server)).unwrap();
    block_on(async {
        for s in 0..shards {
            let path = store.path(&format!("shard-{s:03}.tar"));
            store.put(&path, shard(s, n, size).into()).await.unwrap();
        }
    });
    store
}

fn list(store: &Store) -> Vec<Object> {
    block_on(store.list(&Filter::glob("shard-*.tar"))).unwrap()
}

#[test]
fn shards_stream_from_the_server_into_samples() {
    let Some(server) = start_or_skip("shards_stream_from_the_server_into_samples") else {
        return;
    };
    let store = bucket(&server, 3, 10, 10_000);
    let shards = list(&store);
    assert_eq!(shards.len(), 3);
    assert!(shards[0].size > 100_000);
    let p = PipelineBuilder::new()
        .source(shards.clone())
        .async_try_flat_pipe(webdataset::samples(&store))
        .concurrency(3)
        .sink()
        .max_failures(MaxFailures::Count(0))
        .build()
        .unwrap();
    let samples: Vec<_> = p.collect::<Result<_, _>>().unwrap();
    assert_eq!(samples.len(), 30);
    assert!(samples
        .iter()
        .all(|s| s.get("bin").unwrap().len() == 10_000));
    assert!(samples[0].shard.starts_with("s3://data/train/shard-"));
    let range = block_on(store.get_range(&shards[0].path, 512..520)).unwrap();
    assert_eq!(
        &range[..],
        &[0u8; 8],
        "the first sample's data starts after its header"
    );
    let counts = store.counters().snapshot();
    assert!(
        counts.bytes >= shards.iter().map(|s| s.size).sum::<u64>(),
        "{counts:?}"
    );
    assert_eq!((counts.retries, counts.failures), (0, 0));
}

#[test]
fn a_missing_bucket_fails_the_listing_naming_the_url() {
    let Some(server) = start_or_skip("a_missing_bucket_fails_the_listing_naming_the_url") else {
        return;
    };
    let store = Store::open_with("s3://no-such-bucket/train", options(&server)).unwrap();
    let t = Instant::now();
    let e = block_on(store.list(&Filter::All)).unwrap_err();
    assert!(
        e.to_string().contains("list s3://no-such-bucket/train"),
        "{e}"
    );
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "not retried for long"
    );
}

#[test]
fn wrong_credentials_are_refused_at_the_listing() {
    let Some(server) = start_or_skip("wrong_credentials_are_refused_at_the_listing") else {
        return;
    };
    if server.kind() == ServerKind::Moto {
        eprintln!(
            "skipping wrong_credentials_are_refused_at_the_listing: moto accepts any credentials"
        );
        return;
    }
    let _ = bucket(&server, 1, 1, 10);
    let wrong = options(&server).credentials("pipeline-test-key", "not-the-secret");
    let store = Store::open_with("s3://data/train", wrong).unwrap();
    let e = block_on(store.list(&Filter::All)).unwrap_err();
    assert!(e.to_string().contains("list s3://data/train"), "{e}");
    assert_eq!(e.kind(), StorageErrorKind::Denied, "{e}");
}

#[test]
fn an_object_deleted_between_listing_and_read_fails_that_shard_only() {
    let Some(server) =
        start_or_skip("an_object_deleted_between_listing_and_read_fails_that_shard_only")
    else {
        return;
    };
    let store = bucket(&server, 3, 5, 1000);
    let shards = list(&store);
    block_on(store.object_store().delete(&shards[1].path)).unwrap();
    let mut p = PipelineBuilder::new()
        .source(shards.clone())
        .async_try_flat_pipe(webdataset::samples(&store))
        .name("samples")
        .sink()
        .max_failures(MaxFailures::Count(1))
        .build()
        .unwrap();
    let samples: Vec<_> = p.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(samples.len(), 10, "the other two shards are read whole");
    let failures: u64 = p.stats().stages.iter().map(|s| s.failures).sum();
    assert_eq!(failures, 1);
    let mut alone = Box::pin(webdataset::read_shard(&store, shards[1].path.clone()));
    let e = block_on(alone.next()).unwrap().unwrap_err();
    assert_eq!(e.kind(), StorageErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains("s3://data/train/shard-001.tar"),
        "{e}"
    );
    assert_eq!(
        store.counters().snapshot().retries,
        0,
        "a missing object is not retried"
    );
}

#[test]
fn the_server_stopped_mid_run_fails_the_remaining_shards_with_retries_and_no_hang() {
    let Some(mut server) = start_or_skip("the_server_stopped_mid_run") else {
        return;
    };
    // 12 shards of 1 MiB: far more than the pipeline's buffers hold when the server goes.
    let store = bucket(&server, 12, 4, 256 * 1024);
    let shards = list(&store);
    let mut p = PipelineBuilder::new()
        .source(shards.clone())
        .async_try_flat_pipe(webdataset::samples(&store))
        .name("samples")
        .sink()
        .buffer(1)
        .queue_capacity(1)
        .max_failures(MaxFailures::Unlimited)
        .build()
        .unwrap();
    let first = p.next().unwrap().unwrap();
    assert_eq!(first.get("bin").unwrap().len(), 256 * 1024);
    let t = Instant::now();
    server.stop();
    let mut delivered = 1;
    for r in p.by_ref() {
        r.expect("failed items are counted, not returned: the budget is unlimited");
        delivered += 1;
    }
    let elapsed = t.elapsed();
    let failures: u64 = p.stats().stages.iter().map(|s| s.failures).sum();
    let counts = store.counters().snapshot();
    assert!(
        delivered < 48,
        "the server's loss cost samples ({delivered} delivered)"
    );
    assert!(failures >= 10, "the shards not yet opened fail: {failures}");
    assert!(
        counts.retries >= 2 * failures,
        "each failed read was retried: {counts:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "no hang: {elapsed:?}");
    // What one failed item says.
    let mut alone = Box::pin(webdataset::read_shard(&store, shards[11].path.clone()));
    let e = block_on(alone.next()).unwrap().unwrap_err();
    let text = e.to_string();
    assert_eq!(e.kind(), StorageErrorKind::Unavailable, "{text}");
    assert!(
        text.contains("s3://data/train/shard-011.tar") && text.contains("after 2 retries"),
        "{text}"
    );
}
