//! GPU transfer benchmark: host-to-device throughput through the transfer stage against a
//! raw cudarc copy from pinned memory, and copies overlapping device work on another stream.
//!
//! ```text
//! cargo run --release -p pipeline-examples --features cuda --example gpu_bench [-- --total-mib N]
//! ```
//!
//! 1. For batches of 1, 4, 16, 64 MiB and 1 GiB: GB/s of (a) `memcpy_htod` from one pinned buffer
//!    into one device buffer, back to back on one stream (the raw figure), and (b) the same
//!    bytes as `Arc<[u8]>` batches through a pipeline whose last stage is the transfer stage
//!    (staging copy into the pinned ring, a new device buffer per batch), timed until the
//!    last batch's event completed, and the ratio of (b) to (a). About `--total-mib`
//!    (default 2048) MiB per size, at least 8 batches (4 of 1 GiB). The last column is the
//!    stage with its staging copy on one thread (`staging_threads(1)`). Then batches of one
//!    empty array (no bytes: the cost per batch of the stage itself).
//! 2. Overlap: a stand-in for compute (device-side memsets of a 256 MiB buffer on another
//!    stream; no kernel is compiled, so no NVRTC is needed) alone, 16 MiB transfers alone,
//!    and both at once. With full overlap "both" takes about the longer of the two.
//!
//! Without a GPU (or without the `cuda` feature) it says so and exits with status 0.

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    match bench::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!(
        "gpu_bench: built without the `cuda` feature; run it with \
         `cargo run --release -p pipeline-examples --features cuda --example gpu_bench`"
    );
}

#[cfg(feature = "cuda")]
mod bench {
    use std::error::Error;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pipeline_runtime::cuda::cudarc::driver::{CudaEvent, CudaStream};
    use pipeline_runtime::cuda::{DeviceTransfer, TransferConfig};
    use pipeline_runtime::PipelineBuilder;

    const MIB: usize = 1 << 20;

    pub(crate) fn run() -> Result<(), Box<dyn Error>> {
        let total_mib = parse_total_mib()?;
        let transfer = match DeviceTransfer::open(TransferConfig::local_rank()) {
            Ok(t) => t,
            Err(e) => {
                println!("gpu_bench: no GPU present, nothing measured ({e})");
                return Ok(());
            }
        };
        let ctx = transfer.context().clone();
        println!(
            "gpu_bench: device {} ({}), {} MiB per size",
            transfer.device(),
            ctx.name()?,
            total_mib
        );
        // The same stage with the staging copy on the transfer thread alone.
        let single = DeviceTransfer::open(TransferConfig::local_rank().staging_threads(1))?;
        println!(
            "{:>8} {:>8} {:>10} {:>12} {:>7} {:>16}",
            "batch", "count", "raw GB/s", "stage GB/s", "ratio", "1-thread GB/s"
        );
        for size_mib in [1usize, 4, 16, 64, 1024] {
            let size = size_mib * MIB;
            let fewest = if size_mib >= 1024 { 4 } else { 8 };
            let count = (total_mib / size_mib).clamp(fewest, 4096);
            let raw = raw_copy(&transfer, size, count)?;
            let staged = through_stage(&transfer, size, count)?;
            let staged_single = through_stage(&single, size, count)?;
            println!(
                "{:>4} MiB {count:>8} {raw:>10.2} {staged:>12.2} {:>6.0}% {staged_single:>16.2}",
                size_mib,
                100.0 * staged / raw
            );
        }
        drop(single);
        let count = 10_000;
        let per_batch = empty_batches(&transfer, count)?;
        println!(
            "   empty {count:>8} {:>10} {:>12} {:>7} ({:.1} us per batch, {:.0} batches/s)",
            "-",
            "-",
            "-",
            per_batch.as_secs_f64() * 1e6,
            1.0 / per_batch.as_secs_f64()
        );
        overlap(&transfer)?;
        Ok(())
    }

    /// Batches of one empty array through the stage: the time per batch.
    fn empty_batches(transfer: &DeviceTransfer, count: usize) -> Result<Duration, Box<dyn Error>> {
        let empty: Arc<[f32]> = Vec::new().into();
        transfer.transfer(&empty)?.synchronize()?;
        let pipeline = PipelineBuilder::new()
            .source(std::iter::repeat_n(empty, count))
            .to_device_with(transfer)
            .buffer(4)
            .sink()
            .buffer(4)
            .build()?;
        let start = Instant::now();
        let mut last = None;
        let mut seen = 0;
        for batch in pipeline {
            let (buffer, ready) = batch?.into_parts();
            if !buffer.is_empty() {
                return Err("an empty array came back with elements".into());
            }
            last = Some(ready);
            seen += 1;
        }
        if let Some(ready) = last {
            ready.synchronize()?;
        }
        assert_eq!(seen, count);
        Ok(start.elapsed() / count as u32)
    }

    fn gbps(bytes: usize, elapsed: Duration) -> f64 {
        bytes as f64 / elapsed.as_secs_f64() / 1e9
    }

    /// Back-to-back copies from one pinned buffer into one device buffer.
    fn raw_copy(
        transfer: &DeviceTransfer,
        size: usize,
        count: usize,
    ) -> Result<f64, Box<dyn Error>> {
        let ctx = transfer.context();
        let stream = ctx.new_stream()?;
        // SAFETY: filled right below, before any copy.
        let mut pinned = unsafe { ctx.alloc_pinned::<u8>(size) }?;
        pinned.as_mut_slice()?.fill(7);
        // SAFETY: every byte is written by the copies before anything reads it.
        let mut device = unsafe { stream.alloc::<u8>(size) }?;
        for _ in 0..3 {
            stream.memcpy_htod(&pinned, &mut device)?;
        }
        stream.synchronize()?;
        let start = Instant::now();
        for _ in 0..count {
            stream.memcpy_htod(&pinned, &mut device)?;
        }
        stream.synchronize()?;
        Ok(gbps(size * count, start.elapsed()))
    }

    /// The same bytes through a pipeline ending in the transfer stage.
    fn through_stage(
        transfer: &DeviceTransfer,
        size: usize,
        count: usize,
    ) -> Result<f64, Box<dyn Error>> {
        let data: Arc<[u8]> = vec![7u8; size].into();
        // Warm up: the ring grows to this size, the allocator's pool fills.
        for _ in 0..4 {
            transfer.transfer(&data)?.synchronize()?;
        }
        let pipeline = PipelineBuilder::new()
            .source(std::iter::repeat_n(data, count))
            .to_device_with(transfer)
            .buffer(4)
            .sink()
            .buffer(4)
            .build()?;
        let start = Instant::now();
        let mut last: Option<Arc<CudaEvent>> = None;
        let mut seen = 0;
        for batch in pipeline {
            let (buffer, ready) = batch?.into_parts();
            drop(buffer); // freed on the transfer stream, after the copy
            last = Some(ready);
            seen += 1;
        }
        if let Some(ready) = last {
            ready.synchronize()?;
        }
        assert_eq!(seen, count);
        Ok(gbps(size * count, start.elapsed()))
    }

    /// Device work on `stream`: `rounds` memsets of `buffer`.
    fn compute(
        stream: &Arc<CudaStream>,
        buffer: &mut pipeline_runtime::cuda::cudarc::driver::CudaSlice<u8>,
        rounds: usize,
    ) -> Result<(), Box<dyn Error>> {
        for _ in 0..rounds {
            stream.memset_zeros(buffer)?;
        }
        Ok(())
    }

    fn transfers(transfer: &DeviceTransfer, count: usize) -> Result<(), Box<dyn Error>> {
        let data: Arc<[u8]> = vec![3u8; 16 * MIB].into();
        let pipeline = PipelineBuilder::new()
            .source(std::iter::repeat_n(data, count))
            .to_device_with(transfer)
            .buffer(4)
            .sink()
            .buffer(4)
            .build()?;
        let mut last = None;
        for batch in pipeline {
            last = Some(batch?.into_parts().1);
        }
        if let Some(ready) = last {
            ready.synchronize()?;
        }
        Ok(())
    }

    fn overlap(transfer: &DeviceTransfer) -> Result<(), Box<dyn Error>> {
        let ctx = transfer.context();
        let stream = ctx.new_stream()?;
        let mut buffer = stream.alloc_zeros::<u8>(256 * MIB)?;
        stream.synchronize()?;
        // Size both halves to take similar time alone.
        let rounds = 200;
        let start = Instant::now();
        compute(&stream, &mut buffer, rounds)?;
        stream.synchronize()?;
        let compute_alone = start.elapsed();
        let count = 128;
        let start = Instant::now();
        transfers(transfer, count)?;
        let transfer_alone = start.elapsed();

        let start = Instant::now();
        compute(&stream, &mut buffer, rounds)?;
        transfers(transfer, count)?;
        stream.synchronize()?;
        let both = start.elapsed();

        let sum = compute_alone + transfer_alone;
        let hidden = sum.saturating_sub(both).as_secs_f64()
            / compute_alone.min(transfer_alone).as_secs_f64();
        println!(
            "overlap: compute (memset 256 MiB x {rounds}) alone {:.1} ms, transfers (16 MiB x {count}) \
             alone {:.1} ms, both at once {:.1} ms; {:.0}% of the shorter one hidden",
            compute_alone.as_secs_f64() * 1e3,
            transfer_alone.as_secs_f64() * 1e3,
            both.as_secs_f64() * 1e3,
            100.0 * hidden
        );
        Ok(())
    }

    fn parse_total_mib() -> Result<usize, Box<dyn Error>> {
        let mut args = std::env::args().skip(1);
        let mut total = 2048;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--total-mib" => total = args.next().ok_or("--total-mib needs a value")?.parse()?,
                "--bench" => {} // passed by `cargo bench`-style runners
                other => return Err(format!("unknown argument `{other}`").into()),
            }
        }
        Ok(total)
    }
}
