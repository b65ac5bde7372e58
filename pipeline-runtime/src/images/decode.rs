//! From encoded bytes to 8-bit RGB pixels: the header is read and checked against the
//! limits first, then the format's decoder runs. JPEG: libjpeg-turbo (feature `turbojpeg`,
//! at a reduced scale when asked) with zune-jpeg as the fallback for what it rejects, or
//! zune-jpeg alone. PNG: the `png` crate. WebP: `image-webp`.

use std::io::Cursor;

use super::header::{probe, Format, Header};
use super::{EncodedImage, Image, ImageError, Limits};

/// The decoders this build uses, for reports.
pub const DECODER: &str = if cfg!(feature = "turbojpeg") {
    "libjpeg-turbo (zune-jpeg fallback), png, image-webp; fast_image_resize bilinear"
} else {
    "zune-jpeg, png, image-webp; fast_image_resize bilinear"
};

/// Decodes a whole image at full scale under `limits`.
pub fn decode(image: &EncodedImage, limits: &Limits) -> Result<Image, ImageError> {
    let fail = |reason: String| ImageError::new(&image.name, reason);
    let header = probe(&image.bytes).map_err(fail)?;
    limits.check(&header).map_err(fail)?;
    decode_checked(&image.bytes, &header, 1).map_err(fail)
}

/// Decodes an image whose header has passed the limits, at `1 / denominator` of its size
/// (1, 2, 4 or 8) where the decoder can, else at full size: the caller reads the size it got.
pub(crate) fn decode_checked(
    bytes: &[u8],
    header: &Header,
    denominator: u32,
) -> Result<Image, String> {
    match header.format {
        Format::Jpeg => jpeg(bytes, header, denominator),
        Format::Png => png(bytes, header),
        Format::WebP => webp(bytes, header),
    }
}

#[cfg(feature = "turbojpeg")]
fn jpeg(bytes: &[u8], header: &Header, denominator: u32) -> Result<Image, String> {
    // libjpeg-turbo rejects some files zune-jpeg reads (and the other way round): try both
    // before failing, and say why each refused.
    super::turbo::decode(bytes, header, denominator).or_else(|turbo| {
        zune_jpeg(bytes, header)
            .map_err(|zune| format!("libjpeg-turbo: {turbo}; zune-jpeg fallback: {zune}"))
    })
}

#[cfg(not(feature = "turbojpeg"))]
fn jpeg(bytes: &[u8], header: &Header, _denominator: u32) -> Result<Image, String> {
    zune_jpeg(bytes, header)
}

/// zune-jpeg, strict: corrupt or truncated data is an error, never a partly grey image.
fn zune_jpeg(bytes: &[u8], header: &Header) -> Result<Image, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        // What the checked header declared: a second frame header cannot declare more.
        .set_max_width(header.width as usize)
        .set_max_height(header.height as usize);
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
    Ok(Image {
        width,
        height,
        pixels,
    })
}

/// Any PNG (1 to 16 bits, grey, palette, with or without alpha) as 8-bit RGB; alpha is
/// dropped, as Pillow's `convert("RGB")` does.
fn png(bytes: &[u8], header: &Header) -> Result<Image, String> {
    // The decoder also holds metadata chunks (text, ICC profiles) and a row or two: a margin
    // over the pixels, still far below anything a bomb would ask for.
    let budget = usize::try_from(header.decoded_bytes + (8 << 20)).unwrap_or(usize::MAX);
    let mut decoder =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: budget });
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("corrupt PNG: image too large for memory")?;
    if size as u64 > header.decoded_bytes {
        return Err(format!(
            "corrupt PNG: {size} bytes to decode, more than its header declared"
        ));
    }
    let mut buffer = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    buffer.truncate(frame.buffer_size());
    let (width, height) = (frame.width, frame.height);
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => {
            return Err(format!(
                "unsupported PNG colour type {other:?} after expansion"
            ))
        }
    };
    if buffer.len() != width as usize * height as usize * channels {
        return Err(format!(
            "corrupt PNG: decoded {} bytes for {width}x{height} with {channels} channels",
            buffer.len()
        ));
    }
    let pixels = match channels {
        3 => buffer,
        _ => buffer
            .chunks_exact(channels)
            .flat_map(|px| {
                if channels >= 3 {
                    [px[0], px[1], px[2]]
                } else {
                    [px[0]; 3]
                }
            })
            .collect(),
    };
    Ok(Image {
        width,
        height,
        pixels,
    })
}

/// A WebP (its first frame, if animated) as 8-bit RGB; alpha is dropped.
fn webp(bytes: &[u8], header: &Header) -> Result<Image, String> {
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes))
        .map_err(|e| format!("corrupt WebP: {e}"))?;
    let (width, height) = decoder.dimensions();
    // Our parser read the first chunk; the decoder may read the canvas elsewhere.
    if (width, height) != (header.width, header.height) {
        return Err(format!(
            "corrupt WebP: {width}x{height} to decode, {}x{} declared",
            header.width, header.height
        ));
    }
    decoder.set_memory_limit(usize::try_from(header.decoded_bytes).unwrap_or(usize::MAX));
    let size = decoder
        .output_buffer_size()
        .ok_or("corrupt WebP: image too large for memory")?;
    let mut buffer = vec![0u8; size];
    decoder
        .read_image(&mut buffer)
        .map_err(|e| format!("corrupt WebP: {e}"))?;
    let pixels = if decoder.has_alpha() {
        buffer
            .chunks_exact(4)
            .flat_map(|px| [px[0], px[1], px[2]])
            .collect()
    } else {
        buffer
    };
    Ok(Image {
        width,
        height,
        pixels,
    })
}
