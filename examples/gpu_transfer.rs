//! Decode → batch → GPU transfer: a loader that hands batches already on the device to a
//! training loop.
//!
//! ```text
//! cargo run --release -p pipeline-examples --features cuda --example gpu_transfer [-- --images N]
//! ```
//!
//! `decode` turns a synthetic encoded image into 3×64×64 `u8` pixels and a label (4 at a
//! time, on the default pool); `aggregate(32)` groups them; `collate` packs a group into one
//! contiguous pixel array and one label array; the transfer stage (`.to_device_with(&transfer)`)
//! copies each batch to the device given by `LOCAL_RANK` (default 0) on its own thread and
//! stream. The "training loop"
//! makes its stream wait for each batch, copies the labels back and checks them.
//!
//! On a machine without a CUDA driver or device, or when built without the `cuda` feature,
//! it says so and exits with status 0.

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    match gpu::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_transfer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!(
        "gpu_transfer: built without the `cuda` feature; run it with \
         `cargo run -p pipeline-examples --features cuda --example gpu_transfer`"
    );
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::error::Error;
    use std::time::Instant;

    use pipeline_runtime::cuda::{DeviceTransfer, TransferConfig};
    use pipeline_runtime::PipelineBuilder;

    const SIDE: usize = 64;
    const PIXELS: usize = 3 * SIDE * SIDE;
    const BATCH: usize = 32;
    const CLASSES: i64 = 1000;

    /// A synthetic encoded image: a seed and its label.
    struct Encoded {
        seed: u64,
        label: i64,
    }

    struct Decoded {
        pixels: Vec<u8>,
        label: i64,
    }

    fn encoded(id: u64) -> Encoded {
        Encoded {
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            label: (id % CLASSES as u64) as i64,
        }
    }

    /// Stands in for a JPEG decoder: a few operations per pixel.
    fn decode(img: Encoded) -> Decoded {
        let mut state = img.seed | 1;
        let pixels = (0..PIXELS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        Decoded {
            pixels,
            label: img.label,
        }
    }

    /// One contiguous array per field: what the transfer stage copies.
    fn collate(batch: Vec<Decoded>) -> (Vec<u8>, Vec<i64>) {
        let mut pixels = Vec::with_capacity(batch.len() * PIXELS);
        let mut labels = Vec::with_capacity(batch.len());
        for image in batch {
            pixels.extend_from_slice(&image.pixels);
            labels.push(image.label);
        }
        (pixels, labels)
    }

    pub(crate) fn run() -> Result<(), Box<dyn Error>> {
        let images = parse_images()?;
        let transfer = match DeviceTransfer::open(TransferConfig::local_rank()) {
            Ok(t) => t,
            Err(e) => {
                println!("gpu_transfer: no GPU to copy to, nothing to do ({e})");
                return Ok(());
            }
        };
        let stream = transfer.context().new_stream()?;
        println!(
            "gpu_transfer: {images} images of {PIXELS} bytes, batches of {BATCH}, to device {}",
            transfer.device()
        );

        let pipeline = PipelineBuilder::new()
            .source((0..images).map(encoded))
            .pipe(decode)
            .concurrency(4)
            .aggregate(BATCH)
            .pipe(collate)
            .to_device_with(&transfer)
            .buffer(4)
            .sink()
            .buffer(2)
            .num_threads(4)
            .build()?;

        let start = Instant::now();
        let (mut batches, mut bytes, mut next_id) = (0u64, 0usize, 0u64);
        for batch in pipeline {
            let (pixels, labels) = batch?.wait_on(&stream)?;
            // A real loop would launch the model here, on `stream`.
            let host_labels = stream.clone_dtoh(&labels)?;
            for label in host_labels {
                assert_eq!(label, (next_id % CLASSES as u64) as i64, "labels in order");
                next_id += 1;
            }
            bytes += pixels.len() + labels.len() * 8;
            batches += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(next_id, images, "every image arrived once");
        println!(
            "gpu_transfer: {batches} batches, {:.1} MB in {secs:.2} s ({:.0} images/s, {:.2} GB/s)",
            bytes as f64 / 1e6,
            images as f64 / secs,
            bytes as f64 / secs / 1e9
        );
        Ok(())
    }

    fn parse_images() -> Result<u64, Box<dyn Error>> {
        let mut args = std::env::args().skip(1);
        let mut images = 20_000;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--images" => images = args.next().ok_or("--images needs a value")?.parse()?,
                other => return Err(format!("unknown argument `{other}`").into()),
            }
        }
        Ok(images)
    }
}
