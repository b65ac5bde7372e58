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
        assert_eq!(device.len(), n, "batch {i}");
        if n > 0 {
            assert_eq!(to_host(&stream, &device), want, "batch {i}");
        }
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
        assert_eq!(pixels.len(), want.0.len());
        assert_eq!(labels.len(), want.1 .0.len());
        if !want.0.is_empty() {
            assert_eq!(to_host(&stream, &pixels), want.0);
        }
        if !want.1 .0.is_empty() {
            assert_eq!(to_host(&stream, &labels), want.1 .0);
        }
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
    use pipeline_runtime::executor::ThreadPool;
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

/// The words of test batch `k`.
fn pattern(k: u32, words: usize) -> Vec<u32> {
    (0..words as u32)
        .map(|j| j.wrapping_mul(2654435761) ^ k)
        .collect()
}

#[test]
fn empty_arrays_round_trip_alone_and_beside_others() {
    let Some((_turn, transfer)) = gpu_or_skip("empty_arrays", TransferConfig::device(0)) else {
        return;
    };
    let stream = consumer_stream(&transfer);
    eprintln!(
        "empty_arrays: device has memory pools: {}",
        transfer.context().has_async_alloc()
    );
    // Many in a row, so that the allocator's reuse of the one-element allocations is seen.
    for k in 0..300u32 {
        let alone = transfer.transfer(&Vec::<f32>::new()).unwrap();
        assert_eq!(alone.wait_on(&stream).unwrap().len(), 0);
        let mixed = (Vec::<u8>::new(), pattern(k, 3), Vec::<i64>::new());
        let (a, b, c) = transfer.transfer(&mixed).unwrap().synchronize().unwrap();
        assert_eq!((a.len(), b.len(), c.len()), (0, 3, 0));
        assert_eq!(to_host(&stream, &b), pattern(k, 3));
    }
    transfer.synchronize().unwrap();
    transfer.context().check_err().unwrap();
}

#[test]
fn recording_the_consumer_event_again_does_not_release_the_staging_slot() {
    let Some((_turn, transfer)) = gpu_or_skip(
        "consumer_event_is_separate",
        TransferConfig::device(0).staging_slots(1),
    ) else {
        return;
    };
    const WORDS: usize = 4 << 20;
    let idle = consumer_stream(&transfer);
    // The copy of batch 0 waits behind device work on the transfer stream.
    let _blocker = keep_busy(transfer.stream(), 400);
    let first = transfer.transfer(&pattern(0, WORDS)).unwrap();
    let (buffer, event) = first.into_parts();
    // The consumer records "its" event again on an idle stream: it completes at once.
    event.record(&idle).unwrap();
    event.synchronize().unwrap();
    // Batch 1 goes to the same (only) slot: the ring must still wait for batch 0's copy.
    let second = transfer.transfer(&pattern(1, WORDS)).unwrap();
    let stream = consumer_stream(&transfer);
    stream.join(transfer.stream()).unwrap();
    assert!(
        to_host(&stream, &buffer) == pattern(0, WORDS),
        "batch 0 was overwritten"
    );
    let second = second.wait_on(&stream).unwrap();
    assert!(to_host(&stream, &second) == pattern(1, WORDS));
}

#[test]
fn an_error_stored_by_an_unrelated_drop_does_not_fail_the_next_batch() {
    use pipeline_runtime::cuda::cudarc::driver::{sys::CUresult, DriverError};
    let Some((_turn, transfer)) = gpu_or_skip("stored_error", TransferConfig::device(0)) else {
        return;
    };
    let stream = consumer_stream(&transfer);
    for k in 0..3 {
        // As a failed free in some cudarc `Drop` would leave it.
        transfer
            .context()
            .record_err::<()>(Err(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)));
        let batch = transfer.transfer(&pattern(k, 1000)).unwrap();
        transfer
            .context()
            .record_err::<()>(Err(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)));
        let device = batch.wait_on(&stream).unwrap();
        transfer
            .context()
            .record_err::<()>(Err(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)));
        transfer.synchronize().unwrap();
        transfer.context().check_err().ok();
        assert_eq!(to_host(&stream, &device), pattern(k, 1000));
    }
}

#[test]
fn release_after_keeps_memory_read_through_a_raw_pointer_until_that_work_is_done() {
    use pipeline_runtime::cuda::cudarc::driver::{result, DevicePtr, DevicePtrMut};
    let Some((_turn, transfer)) = gpu_or_skip("release_after", TransferConfig::device(0)) else {
        return;
    };
    const WORDS: usize = 4 << 20; // 16 MiB
    let other = consumer_stream(&transfer); // "another library's" stream
    let mut copied = other.alloc_zeros::<u32>(WORDS).unwrap();
    other.synchronize().unwrap();
    let batch = transfer.transfer(&pattern(0, WORDS)).unwrap();
    let source = batch.ready_on(&other).unwrap();
    // A raw pointer, used where cudarc cannot see it: its read-tracking guard is forgotten.
    let (src, untracked) = source.device_ptr(&other);
    std::mem::forget(untracked);
    // The other library's kernel (a device-to-device copy) runs late, behind other work.
    let _blocker = keep_busy(&other, 400);
    {
        let (dst, _record) = copied.device_ptr_mut(&other);
        // SAFETY: both buffers hold WORDS u32 and are alive; the stream is `other`'s.
        unsafe { result::memcpy_dtod_async(dst, src, WORDS * 4, other.cu_stream()) }.unwrap();
    }
    batch.release_after(&other).unwrap();
    // New batches of the same size: with the free not ordered after the copy above, the
    // pool would hand them the same memory and they would overwrite it before it is read.
    let later: Vec<_> = (1..4)
        .map(|k| transfer.transfer(&pattern(k, WORDS)).unwrap())
        .collect();
    other.synchronize().unwrap();
    assert!(
        to_host(&other, &copied) == pattern(0, WORDS),
        "the memory was reused while the raw-pointer copy still read it"
    );
    drop(later);
}

/// This thread's current context (null for none).
fn current_context() -> Option<pipeline_runtime::cuda::cudarc::driver::sys::CUcontext> {
    pipeline_runtime::cuda::cudarc::driver::result::ctx::get_current().unwrap()
}

#[test]
fn opening_and_dropping_keep_the_callers_current_context() {
    use pipeline_runtime::cuda::cudarc::driver::CudaContext;
    use pipeline_runtime::cuda::keep_current_context;
    let Some((_turn, first)) = gpu_or_skip("current_context", TransferConfig::device(0)) else {
        return;
    };
    drop(first);
    std::thread::spawn(|| {
        // A thread with no current context keeps none.
        assert_eq!(current_context(), None);
        let transfer = DeviceTransfer::open(TransferConfig::device(0)).unwrap();
        assert_eq!(current_context(), None, "open");
        let batch = transfer.transfer(&vec![1u8; 4096]).unwrap();
        assert_eq!(current_context(), None, "transfer");
        let buffer = batch.synchronize().unwrap();
        assert_eq!(current_context(), None, "synchronize");
        keep_current_context(|| drop(buffer));
        assert_eq!(current_context(), None, "keep_current_context");
        drop(transfer.transfer(&vec![2u8; 4096]).unwrap());
        assert_eq!(current_context(), None, "dropping a batch");
        drop(transfer);
        assert_eq!(current_context(), None, "dropping the transfer");

        // A thread where another library's context is current keeps it.
        let theirs = CudaContext::new_non_primary(0, 0).unwrap();
        assert_eq!(current_context(), Some(theirs.cu_ctx()));
        let transfer = DeviceTransfer::open(TransferConfig::device(0)).unwrap();
        assert_eq!(current_context(), Some(theirs.cu_ctx()), "open");
        let batch = transfer.transfer(&vec![3u8; 4096]).unwrap();
        let stream = keep_current_context(|| transfer.context().new_stream().unwrap());
        batch.ready_on(&stream).unwrap();
        batch.release_after(&stream).unwrap();
        assert_eq!(current_context(), Some(theirs.cu_ctx()), "release_after");
        keep_current_context(|| drop((stream, transfer)));
        assert_eq!(current_context(), Some(theirs.cu_ctx()), "drops");
    })
    .join()
    .unwrap();
}

/// CPU time used by the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn waiting_for_a_batch_on_the_host_sleeps_instead_of_spinning() {
    let Some((_turn, transfer)) = gpu_or_skip("blocking_sync", TransferConfig::device(0)) else {
        return;
    };
    let _blocker = keep_busy(transfer.stream(), 2_000);
    let batch = transfer.transfer(&vec![1u8; 4096]).unwrap();
    let (cpu, wall) = (thread_cpu_time(), std::time::Instant::now());
    batch.synchronize().unwrap();
    let (cpu, wall) = (thread_cpu_time() - cpu, wall.elapsed());
    eprintln!("blocking_sync: waited {wall:?} using {cpu:?} of CPU");
    assert!(
        wall > std::time::Duration::from_millis(20),
        "the device was not busy"
    );
    assert!(cpu < wall / 4, "the wait spun: {cpu:?} of CPU in {wall:?}");
}

#[test]
fn the_memory_pool_keeps_what_it_frees() {
    use pipeline_runtime::cuda::cudarc::driver::{result, sys};
    let Some((_turn, transfer)) = gpu_or_skip("pool_threshold", TransferConfig::device(0)) else {
        return;
    };
    let ctx = transfer.context();
    if !ctx.has_async_alloc() {
        eprintln!("SKIPPED pool_threshold: the device has no memory pools");
        return;
    }
    let mut value = 0u64;
    // SAFETY: the device is the context's; the attribute's value is a u64.
    unsafe {
        let pool = result::device::get_mem_pool(ctx.cu_device()).unwrap();
        result::mem_pool::get_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut value as *mut u64).cast(),
        )
        .unwrap();
    }
    assert_eq!(value, u64::MAX);
}

#[test]
fn batches_over_the_pinned_bound_are_copied_without_staging() {
    const BOUND: usize = 1 << 20;
    let Some((_turn, transfer)) = gpu_or_skip(
        "pinned_bound",
        TransferConfig::device(0).max_pinned_bytes(BOUND),
    ) else {
        return;
    };
    let stream = consumer_stream(&transfer);
    // Under, at and over the bound, in turn; a tuple whose arrays together exceed it.
    for (k, words) in [1000usize, BOUND / 4, BOUND / 4 + 1, 4 * BOUND / 4, 77]
        .into_iter()
        .enumerate()
    {
        let k = k as u32;
        let device = transfer
            .transfer(&pattern(k, words))
            .unwrap()
            .wait_on(&stream)
            .unwrap();
        assert!(
            to_host(&stream, &device) == pattern(k, words),
            "{words} words"
        );
        assert!(transfer.staging_bytes() <= BOUND);
    }
    let pair = (pattern(9, BOUND / 8), pattern(10, BOUND / 4));
    let (a, b) = transfer.transfer(&pair).unwrap().synchronize().unwrap();
    assert!(to_host(&stream, &a) == pair.0 && to_host(&stream, &b) == pair.1);
    assert!(transfer.staging_bytes() <= BOUND);
}

/// Run by `one_visible_device_is_used_whatever_local_rank_says` in a child process; does
/// nothing otherwise.
#[test]
fn one_visible_device_child_process() {
    if std::env::var_os("PIPELINE_GPU_ONE_DEVICE_CHILD").is_none() {
        return;
    }
    let transfer = DeviceTransfer::open(TransferConfig::local_rank()).unwrap();
    assert_eq!(transfer.device(), 0);
    let stream = consumer_stream(&transfer);
    let device = transfer
        .transfer(&vec![3u16; 10])
        .unwrap()
        .wait_on(&stream)
        .unwrap();
    assert_eq!(to_host(&stream, &device), vec![3u16; 10]);
}

#[test]
fn one_visible_device_is_used_whatever_local_rank_says() {
    let Some((_turn, transfer)) = gpu_or_skip("one_visible_device", TransferConfig::device(0))
    else {
        return;
    };
    drop(transfer);
    // CUDA_VISIBLE_DEVICES is read once per process, at the driver's initialisation: a child.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "one_visible_device_child_process", "--nocapture"])
        .env("PIPELINE_GPU_ONE_DEVICE_CHILD", "1")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .env("LOCAL_RANK", "3")
        .env("RANK", "3")
        .env("WORLD_SIZE", "4")
        .env("LOCAL_WORLD_SIZE", "4")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}
