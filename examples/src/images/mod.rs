//! JPEG loading for the image examples and the W6 benchmark: read a file, decode it, resize
//! it to a fixed size with a bilinear filter, and turn it into a normalised `f32` CHW tensor.
//!
//! Decoding uses `zune-jpeg` (pure Rust) by default. With the `turbojpeg` feature it uses the
//! system's libjpeg-turbo instead, which can decode at a reduced DCT scale (1/2, 1/4, 1/8) when
//! the target is at most that fraction of the source: the bilinear resize then starts from an
//! image still at least as large as the target, so the result stays a correct downscale, at a
//! fraction of the decoding cost.
//!
//! Every failure (unreadable file, not a JPEG, corrupt or truncated data) is an [`ImageError`]
//! naming the file and the reason, so that a pipeline stage can fail just that item.

use std::fmt;
use std::path::{Path, PathBuf};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

mod dataset;
#[cfg(feature = "turbojpeg")]
mod turbo;

pub use dataset::{write_jpeg_dataset, write_stripes_dataset, STRIPE_CLASSES};

/// Per-channel mean of the ImageNet training set (RGB, in `[0, 1]`), the usual normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of the ImageNet training set (RGB, in `[0, 1]`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`HWC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// A file's bytes, still encoded, with the path they came from (for error messages).
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// Where the bytes were read from.
    pub path: PathBuf,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

/// Why an image could not be loaded: the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The file that failed.
    pub path: PathBuf,
    /// What went wrong, in words.
    pub reason: String,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for ImageError {}

/// The decoder this build uses, for reports.
pub const DECODER: &str = if cfg!(feature = "turbojpeg") {
    "libjpeg-turbo (DCT scaling) + fast_image_resize bilinear"
} else {
    "zune-jpeg + fast_image_resize bilinear"
};

/// Reads a file.
pub fn read(path: PathBuf) -> Result<EncodedImage, ImageError> {
    match std::fs::read(&path) {
        Ok(bytes) => Ok(EncodedImage { path, bytes }),
        Err(e) => Err(ImageError {
            path,
            reason: format!("cannot read: {e}"),
        }),
    }
}

/// Decodes a JPEG and resizes it to `width` × `height` (bilinear).
pub fn decode(image: &EncodedImage, width: u32, height: u32) -> Result<RgbImage, ImageError> {
    decode_resize(&image.bytes, width, height).map_err(|reason| ImageError {
        path: image.path.clone(),
        reason,
    })
}

/// Reads, decodes and resizes one file: [`read`] then [`decode`].
pub fn load(path: &Path, width: u32, height: u32) -> Result<RgbImage, ImageError> {
    decode(&read(path.to_path_buf())?, width, height)
}

/// Decodes JPEG bytes and resizes the image to `width` × `height` with a bilinear filter,
/// decoding at a reduced DCT scale where the build supports it and the target allows it.
pub fn decode_resize(bytes: &[u8], width: u32, height: u32) -> Result<RgbImage, String> {
    check_target(width, height)?;
    #[cfg(feature = "turbojpeg")]
    let decoded = turbo::decode_at_least(bytes, width, height)?;
    #[cfg(not(feature = "turbojpeg"))]
    let decoded = decode_full(bytes)?;
    resize_bilinear(&decoded, width, height)
}

/// Decodes JPEG bytes at full size with `zune-jpeg` (strict: corrupt or truncated data is an
/// error, not a partly grey image). The reference the reduced-scale path is tested against.
pub fn decode_full(bytes: &[u8]) -> Result<RgbImage, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    check_signature(bytes)?;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| format!("corrupt JPEG: {e}"))?;
    let info = decoder.info().ok_or("corrupt JPEG: no frame header")?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if pixels.len() != width as usize * height as usize * 3 {
        return Err(format!(
            "corrupt JPEG: decoded {} bytes for a {width}x{height} RGB image",
            pixels.len()
        ));
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// Resizes an RGB image with a bilinear (triangle) filter whose support widens with the
/// downscale factor, as Pillow's `BILINEAR` does.
pub fn resize_bilinear(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, String> {
    check_target(width, height)?;
    if image.width == width && image.height == height {
        return Ok(image.clone());
    }
    let src = ImageRef::new(image.width, image.height, &image.pixels, PixelType::U8x3)
        .map_err(|e| format!("bad source image: {e}"))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER
        .with_borrow_mut(|resizer| resizer.resize(&src, &mut dst, &options))
        .map_err(|e| format!("resize failed: {e}"))?;
    Ok(RgbImage {
        width,
        height,
        pixels: dst.into_vec(),
    })
}

thread_local! {
    // A resizer keeps scratch buffers; one per thread saves an allocation per image.
    static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
}

/// Converts an image to a `3 × height × width` tensor (channel planes), each value
/// `(v / 255 - mean[c]) / std[c]` with the ImageNet statistics.
pub fn to_normalised_chw(image: &RgbImage) -> Vec<f32> {
    let plane = image.width as usize * image.height as usize;
    let mut out = vec![0.0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * IMAGENET_STD[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| IMAGENET_MEAN[c] / IMAGENET_STD[c]);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in image.pixels.chunks_exact(3).enumerate() {
        r[i] = f32::from(px[0]) * scale[0] - offset[0];
        g[i] = f32::from(px[1]) * scale[1] - offset[1];
        b[i] = f32::from(px[2]) * scale[2] - offset[2];
    }
    out
}

/// Fails early, with a plain reason, on what is clearly not a JPEG file.
fn check_signature(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG file (no SOI marker at the start)".into());
    }
    Ok(())
}

fn check_target(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("target size {width}x{height} is empty"));
    }
    Ok(())
}
