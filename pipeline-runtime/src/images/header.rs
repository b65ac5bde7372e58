//! What an image declares before any pixel is decoded: format and dimensions, read by a
//! small parser of our own (JPEG markers up to the frame header, PNG's IHDR, WebP's first
//! chunk) that allocates nothing and reads only within the bytes given, so the limits are
//! checked before any decoder is created.

/// An image file format this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (JFIF, Exif): baseline, extended or progressive.
    Jpeg,
    /// PNG.
    Png,
    /// WebP, lossy or lossless (the first frame of an animation).
    WebP,
}

/// What an image's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The format, from the file's signature.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The most bytes decoding it at full scale will allocate at once: the RGB output, plus
    /// what the format's decoder holds beside it (a progressive JPEG's coefficients, a PNG's
    /// up to 16-bit RGBA rows expanded to 8 bits with alpha before conversion to RGB).
    pub decoded_bytes: u64,
}

impl Header {
    /// `width * height`.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// Reads an encoded image's header: its format and what decoding it would take.
pub fn probe(bytes: &[u8]) -> Result<Header, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg(bytes)
    } else if bytes.starts_with(&PNG_SIGNATURE) {
        png(bytes)
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        webp(bytes)
    } else {
        let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Err(format!(
            "not a JPEG, PNG or WebP file (starts with {})",
            start.join(" ")
        ))
    }
}

/// Walks the JPEG markers from SOI to the first frame header (SOFn).
fn jpeg(bytes: &[u8]) -> Result<Header, String> {
    let mut at = 2;
    loop {
        // A marker is 0xFF, any number of fill 0xFF bytes, then its code.
        if bytes.get(at) != Some(&0xFF) {
            return Err(format!("corrupt JPEG: no marker at byte {at}"));
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else {
            return Err("truncated JPEG: ends inside a marker".into());
        };
        at += 1;
        match code {
            // Markers with no length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err("corrupt JPEG: end of image before a frame header".into()),
            0xDA => return Err("corrupt JPEG: scan before a frame header".into()),
            _ => {}
        }
        let length = match bytes.get(at..at + 2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err("truncated JPEG: ends inside a segment length".into()),
        };
        if length < 2 {
            return Err(format!("corrupt JPEG: segment length {length}"));
        }
        // SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC), which share the range.
        if (0xC0..=0xCF).contains(&code) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            let Some(frame) = bytes.get(at + 2..at + 8) else {
                return Err("truncated JPEG: ends inside the frame header".into());
            };
            let precision = frame[0];
            let height = u32::from(u16::from_be_bytes([frame[1], frame[2]]));
            let width = u32::from(u16::from_be_bytes([frame[3], frame[4]]));
            let components = u64::from(frame[5]);
            if width == 0 || height == 0 {
                return Err(format!(
                    "unsupported JPEG: frame size {width}x{height} (a height set later by a DNL \
                     marker is not supported)"
                ));
            }
            if !(1..=4).contains(&components) {
                return Err(format!("corrupt JPEG: {components} components"));
            }
            let pixels = u64::from(width) * u64::from(height);
            // Progressive and hierarchical frames keep every coefficient (2 bytes per sample
            // per component at most) beside the output.
            let progressive = matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE);
            let sample = u64::from(precision.div_ceil(8)).max(1);
            let coefficients = if progressive {
                pixels * components * 2
            } else {
                0
            };
            return Ok(Header {
                format: Format::Jpeg,
                width,
                height,
                decoded_bytes: pixels * 3 * sample + coefficients,
            });
        }
        at += length;
    }
}

/// Reads PNG's first chunk, which the format requires to be IHDR.
fn png(bytes: &[u8]) -> Result<Header, String> {
    let Some(ihdr) = bytes.get(8..8 + 8 + 13) else {
        return Err("truncated PNG: ends inside the IHDR chunk".into());
    };
    if &ihdr[4..8] != b"IHDR" {
        return Err("corrupt PNG: the first chunk is not IHDR".into());
    }
    let field =
        |at: usize| u32::from_be_bytes([ihdr[at], ihdr[at + 1], ihdr[at + 2], ihdr[at + 3]]);
    let (width, height) = (field(8), field(12));
    let depth = u64::from(ihdr[16]);
    if width == 0 || height == 0 {
        return Err(format!("corrupt PNG: size {width}x{height}"));
    }
    if !matches!(depth, 1 | 2 | 4 | 8 | 16) {
        return Err(format!("corrupt PNG: bit depth {depth}"));
    }
    let pixels = u64::from(width) * u64::from(height);
    // The decoder's output (up to 4 channels of 8 bits after expansion and stripping), then
    // the RGB image made from it; the raw rows of up to 16-bit RGBA are read one at a time.
    Ok(Header {
        format: Format::Png,
        width,
        height,
        // PNG's sides are 31 bits: this can pass u64 (saturated, then refused by the limits).
        decoded_bytes: pixels.saturating_mul(4 + 3),
    })
}

/// Reads WebP's first chunk: a lossy frame (VP8), a lossless one (VP8L), or the extended
/// header (VP8X) with the canvas size.
fn webp(bytes: &[u8]) -> Result<Header, String> {
    let truncated = || "truncated WebP: ends inside its first chunk".to_string();
    let chunk = bytes.get(12..16).ok_or_else(truncated)?;
    let data = |at: usize, len: usize| bytes.get(20 + at..20 + at + len).ok_or_else(truncated);
    let le = |b: &[u8]| b.iter().rev().fold(0u32, |v, &x| (v << 8) | u32::from(x));
    let (width, height) = match chunk {
        b"VP8 " => {
            // A 3-byte frame tag, the start code, then 14-bit width and height.
            let frame = data(0, 10)?;
            if frame[3..6] != [0x9D, 0x01, 0x2A] {
                return Err("corrupt WebP: no VP8 start code".into());
            }
            (le(&frame[6..8]) & 0x3FFF, le(&frame[8..10]) & 0x3FFF)
        }
        b"VP8L" => {
            // A signature byte, then width - 1 and height - 1 in 14 bits each.
            let header = data(0, 5)?;
            if header[0] != 0x2F {
                return Err("corrupt WebP: no VP8L signature".into());
            }
            let bits = le(&header[1..5]);
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        }
        b"VP8X" => {
            // Flags and reserved bytes, then canvas width - 1 and height - 1 in 24 bits each.
            let header = data(0, 10)?;
            (le(&header[4..7]) + 1, le(&header[7..10]) + 1)
        }
        other => {
            return Err(format!(
                "corrupt WebP: first chunk {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    };
    if width == 0 || height == 0 {
        return Err(format!("corrupt WebP: size {width}x{height}"));
    }
    let pixels = u64::from(width) * u64::from(height);
    // The decoder's RGBA output, a lossless frame's ARGB words beside it, then our RGB.
    Ok(Header {
        format: Format::WebP,
        width,
        height,
        decoded_bytes: pixels * (4 + 4 + 3),
    })
}
