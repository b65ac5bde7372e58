//! The GPU transfer stage (feature `cuda`).
//!
//! The build-error cases run on every machine: on one without a CUDA driver they check the
//! real "no driver" error. The device cases need a GPU; without one they print why they are
//! skipped and return. Set `PIPELINE_REQUIRE_GPU=1` (on a GPU machine) to make a skip fail.

use std::sync::{Arc, Mutex, MutexGuard};

use pipeline_runtime::cuda::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use pipeline_runtime::cuda::{self, DeviceBatch, DeviceTransfer, TransferConfig};
use pipeline_runtime::{pipeline, PipelineBuilder};
use pipeline_tests::wait_until;

/// Threads of this process whose name starts with `prefix` (Linux; 0 elsewhere).
fn threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// The device tests run one at a time: they count the transfer threads and time the device.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `Some((turn, transfer))` on a machine with a GPU; otherwise prints why the test is skipped.
fn gpu_or_skip(
    test: &str,
    config: TransferConfig,
) -> Option<(MutexGuard<'static, ()>, DeviceTransfer)> {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    match DeviceTransfer::open(config) {
        Ok(transfer) => Some((turn, transfer)),
        Err(e) => {
            assert!(
                std::env::var_os("PIPELINE_REQUIRE_GPU").is_none(),
                "{test}: PIPELINE_REQUIRE_GPU is set but no GPU can be used: {e}"
            );
            eprintln!("SKIPPED {test}: needs a CUDA device ({e})");
            None
        }
    }
}

/// Queues about `rounds` x 512 MiB of device-side memsets on `stream`, so that work queued
/// after them waits: the device is busy.
fn keep_busy(stream: &Arc<CudaStream>, rounds: usize) -> CudaSlice<u8> {
    let mut blocker = stream.alloc_zeros::<u8>(512 << 20).expect("blocker buffer");
    for _ in 0..rounds {
        stream.memset_zeros(&mut blocker).expect("memset");
    }
    blocker
}

/// The message a machine without a usable device gives, whichever part is missing.
fn assert_no_device_message(message: &str) {
    assert!(
        message.contains("CUDA driver") || message.contains("out of range"),
        "unexpected error: {message}"
    );
}

#[test]
fn builder_without_a_usable_device_fails_at_build_time() {
    let index = if cuda::is_available() { 4096 } else { 0 };
    let result = PipelineBuilder::new()
        .source((0..10).map(|i| vec![i as f32; 16]))
        .to_device(TransferConfig::device(index))
        .sink()
        .buffer(2)
        .build();
    let err = result.expect_err("no device to open");
    assert_no_device_message(err.message());
    if !cuda::is_available() {
        assert!(err.message().contains("not found"), "{err}");
    }
}

#[test]
fn out_of_range_index_is_a_build_error_on_every_machine() {
    let err = DeviceTransfer::open(TransferConfig::device(100_000)).unwrap_err();
    assert_no_device_message(err.message());
    if cuda::is_available() {
        assert!(err.message().contains("device index 100000"), "{err}");
    }
}

#[test]
fn zero_staging_slots_or_threads_is_a_build_error() {
    let err = DeviceTransfer::open(TransferConfig::device(0).staging_slots(0)).unwrap_err();
    assert!(err.message().contains("staging_slots"), "{err}");
    let err = DeviceTransfer::open(TransferConfig::device(0).staging_threads(0)).unwrap_err();
    assert!(err.message().contains("staging_threads"), "{err}");
}

#[test]
fn malformed_local_rank_is_a_build_error_naming_the_value() {
    // The only test in this binary that reads LOCAL_RANK.
    std::env::set_var("LOCAL_RANK", "rank-three");
    let err = PipelineBuilder::new()
        .source((0..4).map(|i| vec![i as u8; 4]))
        .to_device(TransferConfig::local_rank())
        .sink()
        .buffer(1)
        .build()
        .unwrap_err();
    std::env::remove_var("LOCAL_RANK");
    assert!(err.message().contains("LOCAL_RANK"), "{err}");
    assert!(err.message().contains("\"rank-three\""), "{err}");
}

#[test]
fn macro_stage_over_a_transfer_that_cannot_open_reports_the_error() {
    // The macro path: the transfer is opened before the pipeline, as a `BuildError`.
    let opened = DeviceTransfer::open(TransferConfig::device(100_000));
    let err = opened.unwrap_err();
    assert_no_device_message(err.message());
}

/// A consumer stream on the transfer's device.
fn consumer_stream(transfer: &DeviceTransfer) -> Arc<CudaStream> {
    transfer.context().new_stream().expect("consumer stream")
}

fn to_host<T: DeviceRepr + Default + Clone>(
    stream: &Arc<CudaStream>,
    buf: &CudaSlice<T>,
) -> Vec<T> {
    stream.clone_dtoh(buf).expect("copy back")
}

#[test]
fn round_trip_of_many_batches_of_several_shapes_and_types() {
    let Some((_turn, transfer)) = gpu_or_skip("round_trip", TransferConfig::device(0)) else {
        return;
    };
    let stream = consumer_stream(&transfer);

    // A single array per batch, of varying lengths (empty included), through the builder.
    let lengths = [0usize, 1, 255, 256, 257, 4096, 1 << 20, 3, 1 << 18];
    let p = PipelineBuilder::new()
        .source((0..200usize).map(move |i| {
            let n = lengths[i % lengths.len()];
            (0..n).map(|j| (i * 31 + j) as f32).collect::<Vec<f32>>()
        }))
        .to_device_with(&transfer)
        .sink()
        .buffer(4)
        .build()
        .unwrap();
    let mut count = 0;
    for (i, batch) in p.enumerate() {
        let device = batch.unwrap().wait_on(&stream).unwrap();
        let n = lengths[i % lengths.len()];
        let want: Vec<f32> = (0..n).map(|j| (i * 31 + j) as f32).collect();
        assert_eq!(to_host(&stream, &device), want, "batch {i}");
        count += 1;
    }
    assert_eq!(count, 200);

    // Tuples of several element types, through the macro.
    let source = (0..100u32).map(|i| {
        let pixels: Vec<u8> = (0..(i as usize * 97) % 5000)
            .map(|j| (j as u32 ^ i) as u8)
            .collect();
        let labels: Vec<i64> = (0..(i as i64 % 7))
            .map(|j| j * 1_000_000_007 - i as i64)
            .collect();
        let boxes: Box<[f64]> = (0..4).map(|j| f64::from(i) / f64::from(j + 1)).collect();
        (pixels, (labels, boxes), vec![i as i32; 3])
    });
    let expected: Vec<_> = source.clone().collect();
    let p = pipeline! {
        source(source)
        -> pipe(try transfer.stage(), executor = transfer.executor(), name = "to_device")
        -> sink(buffer = 4)
    }
    .unwrap();
    let mut seen = 0;
    for (batch, want) in p.zip(&expected) {
        let batch: DeviceBatch<_> = batch.unwrap();
        let (pixels, (labels, boxes), ids) = batch.synchronize().unwrap();
        assert_eq!(to_host(&stream, &pixels), want.0);
        assert_eq!(to_host(&stream, &labels), want.1 .0);
        assert_eq!(to_host(&stream, &boxes), want.1 .1.to_vec());
        assert_eq!(to_host(&stream, &ids), want.2);
        seen += 1;
    }
    assert_eq!(seen, expected.len());
}

#[test]
fn a_staging_buffer_is_not_overwritten_while_its_copy_is_in_flight() {
    let Some((_turn, transfer)) = gpu_or_skip(
        "no_reuse_in_flight",
        TransferConfig::device(0).staging_slots(2),
    ) else {
        return;
    };
    // Two slots and large batches: the host stages batch k+2 into the slot batch k was copied
    // from. The copies are held back behind device work queued first on the transfer stream,
    // so the host runs far ahead of them: had it not waited for the copy out of a slot, batch
    // k on the device would hold batch k+2's bytes. Nothing is read back until every batch
    // has been queued.
    const WORDS: usize = 4 << 20; // 16 MiB of u32 per batch
    let hosts: Vec<Vec<u32>> = (0..24u32)
        .map(|k| {
            (0..WORDS as u32)
                .map(|j| j.wrapping_mul(2654435761) ^ k)
                .collect()
        })
        .collect();
    let _blocker = keep_busy(transfer.stream(), 400);
    let batches: Vec<DeviceBatch<CudaSlice<u32>>> = hosts
        .iter()
        .map(|host| transfer.transfer(host).unwrap())
        .collect();
    let stream = consumer_stream(&transfer);
    for (k, batch) in batches.into_iter().enumerate() {
        let device = batch.wait_on(&stream).unwrap();
        let back = to_host(&stream, &device);
        let bad = back
            .iter()
            .enumerate()
            .filter(|(j, v)| **v != (*j as u32).wrapping_mul(2654435761) ^ k as u32)
            .count();
        assert_eq!(bad, 0, "batch {k}: {bad} words differ");
    }
    assert!(transfer.staging_bytes() >= 2 * WORDS * 4);
}

#[test]
fn pipeline_stops_cleanly_while_the_device_is_busy() {
    let Some((_turn, transfer)) = gpu_or_skip("stop_while_busy", TransferConfig::device(0)) else {
        return;
    };
    // Transfer threads of earlier tests end on their own once their handles are gone.
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        threads_named("cuda-transfer-0") == 1
    }));
    let stream = transfer.stream().clone();
    {
        let mut p = PipelineBuilder::new()
            .source((0..1_000u32).map(|k| vec![k; 16 << 20])) // 64 MiB each
            .to_device_with(&transfer)
            .buffer(2)
            .sink()
            .buffer(2)
            .build()
            .unwrap();
        // The stage keeps the transfer alive while it runs.
        drop(transfer);
        // Take one batch, make the device busy for a while, and drop everything while copies
        // are queued behind that work and staged batches wait for free slots.
        let first = p.next().unwrap().unwrap();
        let blocker = keep_busy(&stream, 2_000);
        drop(p);
        drop(first);
        drop(blocker);
    }
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            threads_named("cuda-transfer-0") == 0
        }),
        "the transfer thread is still running"
    );
    // The device is still usable afterwards.
    let transfer = DeviceTransfer::open(TransferConfig::device(0)).unwrap();
    let stream = consumer_stream(&transfer);
    let back = to_host(
        &stream,
        &transfer
            .transfer(&vec![7u16; 1000])
            .unwrap()
            .wait_on(&stream)
            .unwrap(),
    );
    assert_eq!(back, vec![7u16; 1000]);
    transfer.context().check_err().unwrap();
}

/// The transfer's stage function owns its dedicated thread (so that `to_device` needs no
/// handle kept by the caller). This checks that pattern on the CPU: a stage whose function
/// holds the only handle to the pool it runs on still lets that thread end when the pipeline
/// is dropped mid-stream.
#[test]
fn a_stage_owning_its_own_thread_lets_it_end_on_drop() {
    use pipeline_runtime::ThreadPool;
    {
        let pool = ThreadPool::builder().name("stage-owned").build().unwrap();
        let held = pool.clone();
        let mut p = PipelineBuilder::new()
            .source(0..1_000_000u64)
            .pipe(move |x: u64| {
                let _keep = &held;
                x + 1
            })
            .executor(pool)
            .buffer(2)
            .sink()
            .buffer(2)
            .build()
            .unwrap();
        assert_eq!(p.next().unwrap().unwrap(), 1);
        assert_eq!(threads_named("stage-owned-"), 1);
    }
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            threads_named("stage-owned-") == 0
        }),
        "the stage's own thread is still running"
    );
}
