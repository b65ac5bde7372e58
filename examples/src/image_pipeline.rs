//! The image-loading pipeline's stages, shared by `examples/image_loading.rs`,
//! `examples/train.rs` and their tests:
//!
//! ```text
//! source(paths) → read → decode + resize → normalise (f32 CHW) → aggregate(batch) → collate
//! source(shards) → samples (WebDataset) → decode + resize → ...          (the same from here)
//! ```
//!
//! The caller adds what follows (a device transfer, the sink) and the failure budget. A file
//! that cannot be read or decoded fails only its own item, with an error naming the file.
//! [`labelled_image_stages`] is the same with a label carried beside each image, for
//! training.

use std::path::PathBuf;
use std::time::Duration;

use pipeline_runtime::storage::webdataset::{self, Sample};
use pipeline_runtime::storage::{Object, Store};
use pipeline_runtime::{PipelineBuilder, StageBuilder};

use crate::images::{self, EncodedImage, ImageError, RgbImage};

/// The knobs of [`image_stages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Output height and width in pixels (square).
    pub size: u32,
    /// Images per batch (the last batch of the source may be smaller).
    pub batch_size: usize,
    /// Files read at once (I/O bound: more than the cores helps on slow storage).
    pub read_concurrency: usize,
    /// Images decoded at once (CPU bound: about the number of cores).
    pub decode_concurrency: usize,
    /// Extra time spent on each decode (a sleep), to make the loader deliberately slow and
    /// watch its consumer starve. Zero by default.
    pub decode_delay: Duration,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            size: 224,
            batch_size: 32,
            read_concurrency: 8,
            decode_concurrency: cores,
            decode_delay: Duration::ZERO,
        }
    }
}

/// A batch of images as one contiguous `N × 3 × size × size` tensor, ready for a model or a
/// transfer to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBatch {
    /// Images in the batch (`N`).
    pub images: usize,
    /// Height and width of every image.
    pub size: u32,
    /// `N * 3 * size * size` values, image after image, each as three channel planes.
    pub data: Vec<f32>,
}

/// A batch of images and their labels, in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledBatch {
    /// The images.
    pub images: TensorBatch,
    /// One label per image.
    pub labels: Vec<u32>,
}

/// The stages from a list of files to batches; finish with `.sink().buffer(..)` and build.
pub fn image_stages<I>(paths: I, options: LoaderOptions) -> StageBuilder<TensorBatch>
where
    I: IntoIterator<Item = PathBuf>,
    I::IntoIter: Send + 'static,
{
    let size = options.size;
    let read = read_stage(paths.into_iter().map(|p| (p, ())), options);
    decode_stages(read, options)
        .pipe(move |tensors: Vec<((), Vec<f32>)>| {
            collate(tensors.into_iter().map(|(_, t)| t).collect(), size)
        })
        .name("collate")
}

/// [`image_stages`] for labelled files: each `(path, label)` keeps its label through the
/// stages, and a batch holds the labels of its images.
pub fn labelled_image_stages<I>(items: I, options: LoaderOptions) -> StageBuilder<LabelledBatch>
where
    I: IntoIterator<Item = (PathBuf, u32)>,
    I::IntoIter: Send + 'static,
{
    let size = options.size;
    decode_stages(read_stage(items, options), options)
        .pipe(move |batch: Vec<(u32, Vec<f32>)>| {
            let (labels, tensors) = batch.into_iter().unzip();
            LabelledBatch {
                images: collate(tensors, size),
                labels,
            }
        })
        .name("collate")
}

/// The same stages from WebDataset shards (each sample's `jpg` field) instead of files:
/// `read_concurrency` shards are streamed at once.
pub fn shard_image_stages(
    store: &Store,
    shards: Vec<Object>,
    options: LoaderOptions,
) -> StageBuilder<TensorBatch> {
    let size = options.size;
    let samples = PipelineBuilder::new()
        .source(shards)
        .async_try_flat_pipe(webdataset::samples(store))
        .concurrency(options.read_concurrency)
        .name("samples")
        .try_pipe(|sample: Sample| sample_image(sample).map(|image| ((), image)))
        .name("jpg");
    decode_stages(samples, options)
        .pipe(move |tensors: Vec<((), Vec<f32>)>| {
            collate(tensors.into_iter().map(|(_, t)| t).collect(), size)
        })
        .name("collate")
}

/// A sample's `jpg` field, named `<shard URL>#<key>` in errors.
pub fn sample_image(sample: Sample) -> Result<EncodedImage, String> {
    let path = PathBuf::from(format!("{}#{}", sample.shard, sample.key));
    match sample.get("jpg") {
        Some(jpg) => Ok(EncodedImage {
            path,
            bytes: jpg.to_vec(),
        }),
        None => Err(format!("{}: sample has no `jpg` field", path.display())),
    }
}

/// Reading files, a tag `L` carried beside each.
fn read_stage<I, L>(items: I, options: LoaderOptions) -> StageBuilder<(L, EncodedImage)>
where
    I: IntoIterator<Item = (PathBuf, L)>,
    I::IntoIter: Send + 'static,
    L: Send + 'static,
{
    PipelineBuilder::new()
        .source(items)
        .try_pipe(|(path, tag): (PathBuf, L)| images::read(path).map(|file| (tag, file)))
        .concurrency(options.read_concurrency)
        .name("read")
}

/// Decoding onwards: decode + resize, normalise, batch (collating is the caller's), a tag
/// `L` carried beside each image.
fn decode_stages<L: Send + 'static>(
    encoded: StageBuilder<(L, EncodedImage)>,
    options: LoaderOptions,
) -> StageBuilder<Vec<(L, Vec<f32>)>> {
    let LoaderOptions {
        size, decode_delay, ..
    } = options;
    encoded
        .try_pipe(
            move |(tag, file): (L, EncodedImage)| -> Result<(L, RgbImage), ImageError> {
                if !decode_delay.is_zero() {
                    std::thread::sleep(decode_delay);
                }
                Ok((tag, images::decode(&file, size, size)?))
            },
        )
        .concurrency(options.decode_concurrency)
        .name("decode+resize")
        .pipe(|(tag, image): (L, RgbImage)| (tag, images::to_normalised_chw(&image)))
        .concurrency(options.decode_concurrency)
        .name("normalise")
        .aggregate(options.batch_size)
}

/// Concatenates per-image tensors into one batch tensor.
pub fn collate(tensors: Vec<Vec<f32>>, size: u32) -> TensorBatch {
    let images = tensors.len();
    let mut data = Vec::with_capacity(images * 3 * size as usize * size as usize);
    for t in &tensors {
        data.extend_from_slice(t);
    }
    TensorBatch { images, size, data }
}
