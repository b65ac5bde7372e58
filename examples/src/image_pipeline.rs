//! The image-loading pipeline's stages, shared by `examples/image_loading.rs`,
//! `examples/train.rs` and their tests:
//!
//! ```text
//! source(paths) → read → decode + crop + resize → aggregate(batch) → collate (f32 CHW, normalised)
//! source(shards) → samples (WebDataset) → decode + crop + resize → ...   (the same from here)
//! ```
//!
//! Decoding, cropping and the batch are `pipeline_runtime::images` (feature `images`); this
//! module only arranges them. The caller adds what follows (a device transfer, the sink) and
//! the failure budget. A file that cannot be read or decoded, or that is over the decode
//! limits, fails only its own item, with an error naming the file. [`labelled_image_stages`]
//! is the same with a label carried beside each image, for training.

use std::path::PathBuf;
use std::time::Duration;

use pipeline_runtime::images::{
    self, collate_f32, EncodedImage, Image, ImageError, ImageTransform, Layout, Normalize,
};
use pipeline_runtime::storage::webdataset::{self, Sample};
use pipeline_runtime::storage::{Object, Store};
use pipeline_runtime::{PipelineBuilder, StageBuilder};

/// The knobs of [`image_stages`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderOptions {
    /// From a file to a square RGB image (its output size is the batch's image size).
    /// Default: the evaluation transform, shorter side to 256 and the centre 224 × 224.
    pub transform: ImageTransform,
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
            transform: ImageTransform::center_crop(256, 224),
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

impl TensorBatch {
    /// Normalises (ImageNet statistics) and collates square images into one CHW batch, each
    /// image written once into its slot.
    pub fn collate(images: &[Image]) -> Result<Self, ImageError> {
        let batch = collate_f32(images, Layout::Chw, &Normalize::IMAGENET)?;
        if batch.width != batch.height {
            return Err(ImageError {
                name: "batch".into(),
                reason: format!("images of {}x{} are not square", batch.width, batch.height),
            });
        }
        Ok(Self {
            images: batch.images,
            size: batch.height,
            data: batch.data,
        })
    }
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
    let read = read_stage(paths.into_iter().map(|p| (p, ())), options);
    decode_stages(read, options)
        .try_pipe(|batch: Vec<((), Image)>| collate_untagged(batch))
        .name("collate")
}

/// [`image_stages`] for labelled files: each `(path, label)` keeps its label through the
/// stages, and a batch holds the labels of its images.
pub fn labelled_image_stages<I>(items: I, options: LoaderOptions) -> StageBuilder<LabelledBatch>
where
    I: IntoIterator<Item = (PathBuf, u32)>,
    I::IntoIter: Send + 'static,
{
    decode_stages(read_stage(items, options), options)
        .try_pipe(|batch: Vec<(u32, Image)>| {
            let (labels, images): (Vec<u32>, Vec<Image>) = batch.into_iter().unzip();
            Ok::<_, ImageError>(LabelledBatch {
                images: TensorBatch::collate(&images)?,
                labels,
            })
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
    let samples = PipelineBuilder::new()
        .source(shards)
        .async_try_flat_pipe(webdataset::samples(store))
        .concurrency(options.read_concurrency)
        .name("samples")
        .try_pipe(|sample: Sample| sample_image(sample).map(|image| ((), image)))
        .name("jpg");
    decode_stages(samples, options)
        .try_pipe(|batch: Vec<((), Image)>| collate_untagged(batch))
        .name("collate")
}

fn collate_untagged(batch: Vec<((), Image)>) -> Result<TensorBatch, ImageError> {
    let images: Vec<Image> = batch.into_iter().map(|(_, image)| image).collect();
    TensorBatch::collate(&images)
}

/// A sample's `jpg` field, named `<shard URL>#<key>` in errors.
pub fn sample_image(sample: Sample) -> Result<EncodedImage, String> {
    let name = format!("{}#{}", sample.shard, sample.key);
    match sample.get("jpg") {
        Some(jpg) => Ok(EncodedImage::new(name, jpg.to_vec())),
        None => Err(format!("{name}: sample has no `jpg` field")),
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

/// Decoding onwards: decode + crop + resize, batch (collating is the caller's), a tag `L`
/// carried beside each image.
fn decode_stages<L: Send + 'static>(
    encoded: StageBuilder<(L, EncodedImage)>,
    options: LoaderOptions,
) -> StageBuilder<Vec<(L, Image)>> {
    let LoaderOptions {
        transform,
        decode_delay,
        ..
    } = options;
    encoded
        .try_pipe(
            move |(tag, file): (L, EncodedImage)| -> Result<(L, Image), ImageError> {
                if !decode_delay.is_zero() {
                    std::thread::sleep(decode_delay);
                }
                Ok((tag, transform.apply(&file)?))
            },
        )
        .concurrency(options.decode_concurrency)
        .name("decode+resize")
        .aggregate(options.batch_size)
}
