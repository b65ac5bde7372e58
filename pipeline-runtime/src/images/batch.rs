//! A batch of images as one contiguous buffer, in the layout and element type a model takes.
//! Each image is written once, straight into its slot (its layout change and normalisation
//! done on the way), so the batch costs one pass over its bytes and one allocation.

use super::{Image, ImageError};
use crate::memory::ItemBytes;

/// Where a batch's values sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `N × H × W × 3`: pixels interleaved, as decoded.
    Hwc,
    /// `N × 3 × H × W`: one plane per channel, as PyTorch models take.
    Chw,
}

/// `(v / 255 - mean[c]) / std[c]` per channel `c` (RGB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Per-channel mean, in `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, in `[0, 1]`.
    pub std: [f32; 3],
}

impl Normalize {
    /// The ImageNet training set's statistics, the usual normalisation.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

/// `images` images of `height` × `width` × 3 values in one buffer, image after image.
#[derive(Clone, PartialEq)]
pub struct ImageBatch<T> {
    /// Images in the batch (`N`).
    pub images: usize,
    /// Height of every image.
    pub height: u32,
    /// Width of every image.
    pub width: u32,
    /// How each image's values are laid out.
    pub layout: Layout,
    /// `images * 3 * height * width` values.
    pub data: Vec<T>,
}

impl<T> ImageBatch<T> {
    /// The values of image `i` (its slot).
    pub fn image(&self, i: usize) -> &[T] {
        let slot = 3 * self.height as usize * self.width as usize;
        &self.data[i * slot..(i + 1) * slot]
    }
}

// The shape, not the values (millions of them).
impl<T> std::fmt::Debug for ImageBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBatch")
            .field("images", &self.images)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("layout", &self.layout)
            .field("data", &format_args!("[{} values]", self.data.len()))
            .finish()
    }
}

impl<T> ItemBytes for ImageBatch<T> {
    fn item_bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice())
    }
}

/// Collates images of one size into a `u8` batch (what a GPU stage should carry: a quarter
/// of the bytes of `f32`, with normalisation on the device). A stage function over
/// `aggregate`'s output; images of different sizes fail the batch.
pub fn collate_u8(images: &[Image], layout: Layout) -> Result<ImageBatch<u8>, ImageError> {
    if layout == Layout::Hwc {
        // As decoded: one copy of each image into its slot.
        let (width, height, slot) = common_size(images)?;
        let mut data = Vec::with_capacity(images.len() * slot);
        for image in images {
            data.extend_from_slice(&image.pixels);
        }
        return Ok(ImageBatch {
            images: images.len(),
            height,
            width,
            layout,
            data,
        });
    }
    collate_channels(images, layout, |_, v| v)
}

/// Collates images of one size into a normalised `f32` batch.
pub fn collate_f32(
    images: &[Image],
    layout: Layout,
    normalize: &Normalize,
) -> Result<ImageBatch<f32>, ImageError> {
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * normalize.std[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| normalize.mean[c] / normalize.std[c]);
    // A table per channel: one lookup per value instead of a multiply-add and a conversion.
    let tables: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| v as f32 * scale[c] - offset[c]));
    collate_channels(images, layout, |c, v| tables[c][usize::from(v)])
}

fn collate_channels<T>(
    images: &[Image],
    layout: Layout,
    convert: impl Fn(usize, u8) -> T,
) -> Result<ImageBatch<T>, ImageError> {
    let (width, height, slot) = common_size(images)?;
    // Filled by `extend` in slot order: every value is written once, none zeroed first.
    let mut data = Vec::with_capacity(images.len() * slot);
    for image in images {
        match layout {
            Layout::Hwc => data.extend(
                image
                    .pixels
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| convert(i % 3, v)),
            ),
            Layout::Chw => {
                for c in 0..3 {
                    data.extend(image.pixels[c..].iter().step_by(3).map(|&v| convert(c, v)));
                }
            }
        }
    }
    Ok(ImageBatch {
        images: images.len(),
        height,
        width,
        layout,
        data,
    })
}

/// The one size of every image (width, height, values per slot), or which image differs.
fn common_size(images: &[Image]) -> Result<(u32, u32, usize), ImageError> {
    let (width, height) = images.first().map_or((0, 0), |i| (i.width, i.height));
    let slot = 3 * width as usize * height as usize;
    for (i, image) in images.iter().enumerate() {
        if (image.width, image.height) != (width, height) || image.pixels.len() != slot {
            return Err(ImageError::new(
                &format!("batch image {i}"),
                format!(
                    "{}x{} with {} bytes in a batch of {width}x{height} RGB images",
                    image.width,
                    image.height,
                    image.pixels.len()
                ),
            ));
        }
    }
    Ok((width, height, slot))
}
