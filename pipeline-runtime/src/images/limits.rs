//! How large an image may be, checked against its header before anything is decoded: the
//! defence against a decompression bomb (a few hundred bytes declaring 16,000 × 16,000
//! pixels, which a decoder would otherwise allocate 768 MB for).

use super::header::Header;

/// The largest image a stage decodes. An image over either limit fails its item, having
/// allocated nothing but its encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pixels (`width * height`) declared by the header. Default 89,478,485: Pillow's
    /// `MAX_IMAGE_PIXELS`, about 9,459 × 9,459.
    pub max_pixels: u64,
    /// Most bytes decoding may allocate at once ([`Header::decoded_bytes`]). Default 512 MiB.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 89_478_485,
            max_bytes: 512 << 20,
        }
    }
}

impl Limits {
    /// Refuses what `header` declares if it is over a limit, saying which and by how much.
    pub fn check(&self, header: &Header) -> Result<(), String> {
        let (w, h) = (header.width, header.height);
        if header.pixels() > self.max_pixels {
            return Err(format!(
                "refused: {w}x{h} is {} pixels, over the limit of {} (Limits::max_pixels)",
                header.pixels(),
                self.max_pixels
            ));
        }
        if header.decoded_bytes > self.max_bytes {
            return Err(format!(
                "refused: decoding {w}x{h} takes {} bytes, over the limit of {} \
                 (Limits::max_bytes)",
                header.decoded_bytes, self.max_bytes
            ));
        }
        Ok(())
    }
}
