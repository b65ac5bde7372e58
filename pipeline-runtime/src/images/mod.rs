//! Images as stage functions (feature `images`): decode JPEG, PNG and WebP under limits, crop and
//! augment deterministically per item, and collate a batch into one contiguous buffer.
//!
//! ```text
//! path ─ read ─▶ EncodedImage ─ ImageTransform::apply ─▶ Image (u8 RGB, HWC) ─ aggregate(n)
//!      ─▶ Vec<Image> ─ collate_u8 / collate_f32 ─▶ ImageBatch (one buffer, N images)
//! ```
//!
//! - **Decoding** ([`decode`]): JPEG with zune-jpeg (pure Rust) or, with the `turbojpeg`
//!   feature, the system's libjpeg-turbo, which can decode at 1/2, 1/4 or 1/8 scale; zune-jpeg
//!   is then the fallback for a file libjpeg-turbo rejects. PNG with the `png` crate (any
//!   bit depth and colour type, as 8-bit RGB), WebP with `image-webp`. Every failure is an [`ImageError`] naming the
//!   image and the reason, so a stage fails that item only.
//! - **Limits** ([`Limits`]): the dimensions are read from the header by our own small parser,
//!   and an image over `max_pixels` or `max_bytes` is refused before any decoder is created,
//!   so a few hundred bytes declaring 16,000 × 16,000 pixels allocate nothing large.
//! - **Geometry** ([`ImageTransform`]): resize the shorter side and crop the centre
//!   (evaluation), or RandomResizedCrop and a horizontal flip (training) drawn from the
//!   item's [`ItemKey`]: the same item gives the same pixels bit
//!   for bit, whatever the concurrency, on a replay or after a resume. Only the crop is
//!   resized, and the decoder is asked for the smallest scale that still covers the output.
//! - **Batches** ([`collate_u8`], [`collate_f32`]): `u8` or normalised `f32`, HWC or CHW, each
//!   image written once, straight into its slot of the batch's buffer.
//!
//! ```
//! use pipeline_runtime::images::{self, ImageTransform, Layout};
//! use pipeline_runtime::PipelineBuilder;
//! # let dir = std::env::temp_dir().join(format!("images-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("a.png");
//! # images::write_png(&path, 300, 200, &vec![128u8; 300 * 200 * 3])?;
//! # let paths = vec![path.clone(), path];
//!
//! let eval = ImageTransform::center_crop(256, 224);
//! let pipeline = PipelineBuilder::new()
//!     .source(paths)
//!     .try_pipe(images::read)
//!     .concurrency(4)
//!     .try_pipe(eval.stage())
//!     .concurrency(2)
//!     .aggregate(32)
//!     .try_pipe(|batch| images::collate_u8(&batch, Layout::Chw))
//!     .sink()
//!     .build()?;
//! for batch in pipeline {
//!     let batch = batch?;
//!     assert_eq!(batch.data.len(), batch.images * 3 * 224 * 224);
//! }
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod crop;
mod decode;
#[cfg(feature = "cuda")]
mod device;
mod header;
mod limits;
mod transform;
#[cfg(feature = "turbojpeg")]
mod turbo;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use crate::distributed::ItemKey;
use crate::memory::ItemBytes;

pub use batch::{collate_f32, collate_u8, ImageBatch, Layout, Normalize};
pub use crop::CropBox;
pub use decode::{decode, DECODER};
#[cfg(feature = "cuda")]
pub use device::DeviceImages;
pub use header::{probe, Format, Header};
pub use limits::Limits;
pub use transform::{resize, ImageTransform, RANDOM_STREAM};

/// An image's bytes, still encoded, with the name its errors give and, for random
/// augmentation, the item's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedImage {
    /// What errors call it: a path, a URL, a shard and sample key.
    pub name: String,
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// The item's key, from which [`ImageTransform`]'s random crop and flip are drawn.
    pub key: Option<ItemKey>,
}

impl EncodedImage {
    /// An image with no key (enough for evaluation transforms).
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
            key: None,
        }
    }

    /// The same image, drawing its randomness from `key`.
    pub fn with_key(mut self, key: ItemKey) -> Self {
        self.key = Some(key);
        self
    }
}

impl ItemBytes for EncodedImage {
    fn item_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

// The size, not the pixels: a failed assertion on an image should not print 150,000 numbers.
impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pixels", &format_args!("[{} bytes]", self.pixels.len()))
            .finish()
    }
}

impl ItemBytes for Image {
    fn item_bytes(&self) -> usize {
        self.pixels.len()
    }
}

/// Why an image failed: which image, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The image's [`name`](EncodedImage::name).
    pub name: String,
    /// What went wrong, in words.
    pub reason: String,
}

impl ImageError {
    pub(crate) fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

impl std::error::Error for ImageError {}

/// Reads a file as an [`EncodedImage`] named by its path: a stage function.
pub fn read(path: PathBuf) -> Result<EncodedImage, ImageError> {
    let name = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => Ok(EncodedImage::new(name, bytes)),
        Err(e) => Err(ImageError::new(&name, format!("cannot read: {e}"))),
    }
}

/// Reads a file for an item of a [`Sampler`](crate::distributed::Sampler): the image keeps
/// the item's key, for [`ImageTransform`]'s random crop and flip. A stage function.
pub fn read_keyed((key, path): (ItemKey, PathBuf)) -> Result<EncodedImage, ImageError> {
    read(path).map(|image| image.with_key(key))
}

/// Writes 8-bit RGB pixels (`width * height * 3` bytes, HWC) as a PNG file: for tests,
/// examples and generated datasets.
pub fn write_png(
    path: &std::path::Path,
    width: u32,
    height: u32,
    rgb: &[u8],
) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(rgb)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}
