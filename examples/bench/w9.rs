//! W9: reading from storage. Images from WebDataset tar shards against the same images as
//! loose files (`W9.shards` vs `W9.files`, both decoded and resized to 224×224, as the
//! image-loading example does); a 1 GiB shard set read with small buffers, reporting the peak
//! resident memory (`W9.shards.mem`); and, with `--features s3`, S3 on the loopback
//! interface: the shard source's MB/s against a plain loop of object_store GETs of the same
//! objects (`W9.s3.shards` vs `W9.s3.plain`), and 64 KiB objects fetched one per request at
//! concurrency 64 (`W9.s3.small`).
//!
//! The S3 ids start a server themselves (s3s-fs or moto_server, whichever is installed, see
//! `pipeline_examples::s3_server`) and stop it at the end; with `PIPELINE_S3_ENDPOINT` set
//! they use that endpoint instead, with the bucket `PIPELINE_S3_BUCKET` (default `bench`,
//! which must exist) and the credentials of `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
//! The upload before the timing window is not measured.

use std::path::PathBuf;
use std::time::Instant;

use pipeline_examples::datasets;
use pipeline_examples::image_pipeline::{image_stages, shard_image_stages, LoaderOptions};
use pipeline_examples::scratch::TempDir;
use pipeline_examples::shards::write_image_shards;
use pipeline_runtime::storage::{block_on, webdataset, Filter, Store, TarWriter};
use pipeline_runtime::PipelineBuilder;

use super::Outcome;

fn options() -> LoaderOptions {
    LoaderOptions {
        batch_size: 32,
        read_concurrency: 4,
        decode_concurrency: 2,
        ..LoaderOptions::default()
    }
}

/// `n` generated JPEGs in a temporary directory, and their paths.
fn dataset(n: u64) -> Result<(TempDir, Vec<PathBuf>), String> {
    let dir =
        TempDir::new(&format!("pipeline-w9-{}", std::process::id())).map_err(|e| e.to_string())?;
    let files = datasets::write_jpeg_dataset(&dir.path().join("files"), n as usize)
        .map_err(|e| e.to_string())?;
    Ok((dir, files))
}

fn drain_images(
    stages: pipeline_runtime::StageBuilder<pipeline_examples::image_pipeline::TensorBatch>,
) -> Result<usize, String> {
    let mut p = stages
        .sink()
        .buffer(4)
        .num_threads(4)
        .build()
        .map_err(|e| e.to_string())?;
    let mut images = 0;
    for batch in p.by_ref() {
        images += batch.map_err(|e| e.to_string())?.images;
    }
    p.stop().map_err(|e| e.to_string())?;
    Ok(images)
}

/// W9.files / W9.shards: the same images, decoded the same way, from files or from shards.
pub(crate) fn images_from(n: u64, shards: bool) -> Result<Outcome, String> {
    let (dir, files) = dataset(n)?;
    let bytes: u64 = files
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    let t0;
    let count = if shards {
        let store =
            Store::open(dir.path().join("shards").to_str().unwrap()).map_err(|e| e.to_string())?;
        write_image_shards(&files, &store, 64).map_err(|e| e.to_string())?;
        let list = block_on(store.list(&Filter::suffix(".tar"))).map_err(|e| e.to_string())?;
        t0 = Instant::now();
        drain_images(shard_image_stages(&store, list, options()))?
    } else {
        t0 = Instant::now();
        drain_images(image_stages(files, options()))?
    };
    let wall = t0.elapsed();
    super::check(count as u64 == n, "image count")?;
    Ok(Outcome {
        n_items: n,
        wall,
        extra: vec![(
            "mb_per_sec",
            format!("{:.1}", bytes as f64 / 1e6 / wall.as_secs_f64()),
        )],
    })
}

/// The peak resident set (VmHWM) in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// W9.shards.mem: `n` MiB of shards (4 shards, 1 MiB samples) read with 2 shards at once
/// and queues of 4: the peak RSS follows the buffers, not the 256 MiB shards.
pub(crate) fn shards_memory(n_mib: u64) -> Result<Outcome, String> {
    let dir = TempDir::new(&format!("pipeline-w9mem-{}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let per_shard = n_mib / 4;
    let sample = vec![0x5au8; 1 << 20];
    for s in 0..4 {
        let mut w = TarWriter::new();
        for i in 0..per_shard {
            w.append(&format!("{s}_{i:05}.bin"), &sample);
        }
        std::fs::write(dir.path().join(format!("shard-{s}.tar")), w.finish())
            .map_err(|e| e.to_string())?;
    }
    let before = peak_rss_mb();
    // Forget the peak of writing the shards (Linux: 5 > clear_refs resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").map_err(|e| format!("clear_refs: {e}"))?;
    let store = Store::open(dir.path().to_str().unwrap()).map_err(|e| e.to_string())?;
    let list = block_on(store.list(&Filter::suffix(".tar"))).map_err(|e| e.to_string())?;
    let total: u64 = list.iter().map(|o| o.size).sum();
    let t0 = Instant::now();
    let mut p = PipelineBuilder::new()
        .source(list)
        .async_try_flat_pipe(webdataset::samples(&store))
        .concurrency(2)
        .sink()
        .buffer(4)
        .queue_capacity(4)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for s in p.by_ref() {
        let s = s.map_err(|e| e.to_string())?;
        bytes += s.byte_len() as u64;
        count += 1;
    }
    p.stop().map_err(|e| e.to_string())?;
    let wall = t0.elapsed();
    super::check(count == 4 * per_shard, "sample count")?;
    Ok(Outcome {
        n_items: count,
        wall,
        extra: vec![
            (
                "mb_per_sec",
                format!("{:.1}", bytes as f64 / 1e6 / wall.as_secs_f64()),
            ),
            ("shard_bytes", total.to_string()),
            ("peak_rss_mb", format!("{:.1}", peak_rss_mb())),
            ("peak_rss_mb_writing", format!("{before:.1}")),
        ],
    })
}

#[cfg(feature = "s3")]
mod s3 {
    use std::sync::Arc;

    use std::time::Duration;

    use futures::{StreamExt, TryStreamExt};
    use pipeline_examples::s3_server::S3Server;
    use pipeline_runtime::storage::object_store::ObjectStoreExt;
    use pipeline_runtime::storage::{Object, StoreOptions};

    use super::*;

    /// A store on a fresh prefix of the bench bucket, and the server if we started it.
    fn store(prefix: &str) -> Result<(Store, Option<S3Server>), String> {
        if let Ok(endpoint) = std::env::var("PIPELINE_S3_ENDPOINT") {
            let bucket = std::env::var("PIPELINE_S3_BUCKET").unwrap_or_else(|_| "bench".into());
            let options = StoreOptions::new().endpoint(endpoint).allow_http(true);
            let url = format!("s3://{bucket}/{prefix}-{}", std::process::id());
            return Ok((
                Store::open_with(&url, options).map_err(|e| e.to_string())?,
                None,
            ));
        }
        let server = S3Server::start()?;
        server.create_bucket("bench")?;
        let store = Store::open_with(&format!("s3://bench/{prefix}"), server.options())
            .map_err(|e| e.to_string())?;
        Ok((store, Some(server)))
    }

    fn upload(store: &Store, objects: Vec<(String, Vec<u8>)>) -> Result<Vec<Object>, String> {
        block_on(async {
            futures::stream::iter(objects)
                .map(|(name, data)| {
                    let path = store.path(&name);
                    async move { store.put(&path, data.into()).await }
                })
                .buffer_unordered(8)
                .try_collect::<Vec<()>>()
                .await
        })
        .map_err(|e| e.to_string())?;
        block_on(store.list(&Filter::All)).map_err(|e| e.to_string())
    }

    /// `shards` shards of 16 samples of 256 KiB (4 MiB each).
    fn shard_set(store: &Store, shards: u64) -> Result<Vec<Object>, String> {
        let objects = (0..shards)
            .map(|s| {
                let mut w = TarWriter::new();
                for i in 0..16 {
                    w.append(
                        &format!("{s:03}_{i:03}.bin"),
                        &vec![(s + i) as u8; 256 * 1024],
                    );
                }
                (format!("shard-{s:03}.tar"), w.finish())
            })
            .collect();
        upload(store, objects)
    }

    fn outcome(n: u64, bytes: u64, wall: Duration, extra: Vec<(&'static str, String)>) -> Outcome {
        let mut all = vec![(
            "mb_per_sec",
            format!("{:.1}", bytes as f64 / 1e6 / wall.as_secs_f64()),
        )];
        all.extend(extra);
        Outcome {
            n_items: n,
            wall,
            extra: all,
        }
    }

    /// W9.s3.shards: the WebDataset source, 4 shards at a time.
    pub(crate) fn shards(n: u64) -> Result<Outcome, String> {
        let (store, _server) = store("w9-shards")?;
        let list = shard_set(&store, n)?;
        let t0 = Instant::now();
        let mut p = PipelineBuilder::new()
            .source(list)
            .async_try_flat_pipe(webdataset::samples(&store))
            .concurrency(4)
            .sink()
            .buffer(8)
            .build()
            .map_err(|e| e.to_string())?;
        let mut bytes = 0u64;
        for s in p.by_ref() {
            bytes += s.map_err(|e| e.to_string())?.byte_len() as u64;
        }
        p.stop().map_err(|e| e.to_string())?;
        let wall = t0.elapsed();
        super::super::check(bytes == n * 16 * 256 * 1024, "sample bytes")?;
        let read = store.counters().snapshot().bytes;
        Ok(outcome(
            n,
            read,
            wall,
            vec![("retries", store.counters().snapshot().retries.to_string())],
        ))
    }

    /// W9.s3.plain: the same objects with a plain loop of object_store GETs, 4 at a time,
    /// each body streamed to the end and its bytes counted.
    pub(crate) fn plain(n: u64) -> Result<Outcome, String> {
        let (store, _server) = store("w9-plain")?;
        let list = shard_set(&store, n)?;
        let client: Arc<dyn pipeline_runtime::storage::object_store::ObjectStore> =
            store.object_store().clone();
        let expected: u64 = list.iter().map(|o| o.size).sum();
        let t0 = Instant::now();
        let bytes = block_on(async {
            futures::stream::iter(list)
                .map(|o| {
                    let client = client.clone();
                    async move {
                        let mut body = client.get(&o.path).await?.into_stream();
                        let mut n = 0u64;
                        while let Some(chunk) = body.next().await {
                            n += chunk?.len() as u64;
                        }
                        Ok::<u64, pipeline_runtime::storage::object_store::Error>(n)
                    }
                })
                .buffer_unordered(4)
                .try_fold(0u64, |a, b| async move { Ok(a + b) })
                .await
        })
        .map_err(|e| e.to_string())?;
        let wall = t0.elapsed();
        super::super::check(bytes == expected, "bytes")?;
        Ok(outcome(n, bytes, wall, vec![]))
    }

    /// W9.s3.small: `n` objects of 64 KiB, one GET each, 64 in flight.
    pub(crate) fn small(n: u64) -> Result<Outcome, String> {
        let (store, _server) = store("w9-small")?;
        let objects = (0..n)
            .map(|i| (format!("obj-{i:06}"), vec![i as u8; 64 * 1024]))
            .collect();
        let list = upload(&store, objects)?;
        let t0 = Instant::now();
        let s = store.clone();
        let mut p = PipelineBuilder::new()
            .source(list)
            .async_try_pipe(move |o: Object| {
                let s = s.clone();
                async move { s.get(&o.path).await.map(|b| b.len() as u64) }
            })
            .concurrency(64)
            .sink()
            .buffer(64)
            .build()
            .map_err(|e| e.to_string())?;
        let (mut count, mut bytes) = (0u64, 0u64);
        for b in p.by_ref() {
            bytes += b.map_err(|e| e.to_string())?;
            count += 1;
        }
        p.stop().map_err(|e| e.to_string())?;
        let wall = t0.elapsed();
        super::super::check(count == n && bytes == n * 65536, "objects and bytes")?;
        Ok(outcome(
            n,
            bytes,
            wall,
            vec![("retries", store.counters().snapshot().retries.to_string())],
        ))
    }
}

#[cfg(not(feature = "s3"))]
mod s3 {
    use super::Outcome;

    fn missing() -> Result<Outcome, String> {
        Err(
            "the W9.s3 ids need the `s3` feature: cargo build --release -p \
             pipeline-examples --features s3 --example bench"
                .into(),
        )
    }

    pub(crate) fn shards(_: u64) -> Result<Outcome, String> {
        missing()
    }

    pub(crate) fn plain(_: u64) -> Result<Outcome, String> {
        missing()
    }

    pub(crate) fn small(_: u64) -> Result<Outcome, String> {
        missing()
    }
}

pub(crate) use s3::{plain as s3_plain, shards as s3_shards, small as s3_small};
