//! One stage function from encoded bytes to the output image: read the header, check the
//! limits, choose the crop (and the flip) from the item's key, decode at the smallest scale
//! that still covers the crop at the output size, resize only the crop, flip.

use std::cell::RefCell;

use fast_image_resize::images::{Image as ResizeImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::crop::{self, CropBox};
use super::decode::decode_checked;
use super::header::{probe, Header};
use super::{EncodedImage, Image, ImageError, Limits};
use crate::distributed::ItemKey;

/// The random stream of an item's key that crops and flips draw from
/// ([`ItemKey::rng_stream`]), apart from stream 0, which users' own stages draw from.
pub const RANDOM_STREAM: u64 = 0x696d_6167_6573; // "images"

#[derive(Debug, Clone, Copy, PartialEq)]
enum Geometry {
    /// The whole image, to the output size (aspect ratio not kept).
    Resize,
    /// The shorter side to `resize`, then the centre crop.
    Center { resize: u32 },
    /// torchvision's RandomResizedCrop.
    RandomResized {
        scale: (f64, f64),
        ratio: (f64, f64),
    },
}

/// Decode, crop, resize and flip, as one stage function from [`EncodedImage`] to an
/// [`Image`] of the output size. Build one, then use [`stage`](Self::stage) (or call
/// [`apply`](Self::apply) from a stage of your own).
///
/// Resizing is bilinear with a support that widens with the downscale factor (antialiased,
/// as Pillow and torchvision's `antialias=True`). With the `turbojpeg` feature, a JPEG is
/// decoded at 1/2, 1/4 or 1/8 scale when the crop at that scale still has at least the
/// output's pixels on both sides (turn off with [`full_scale_decode`](Self::full_scale_decode)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTransform {
    width: u32,
    height: u32,
    geometry: Geometry,
    flip: bool,
    limits: Limits,
    scaled_decode: bool,
}

impl ImageTransform {
    fn new(width: u32, height: u32, geometry: Geometry) -> Self {
        assert!(
            width > 0 && height > 0,
            "output size {width}x{height} is empty"
        );
        Self {
            width,
            height,
            geometry,
            flip: false,
            limits: Limits::default(),
            scaled_decode: true,
        }
    }

    /// The whole image resized to `width` × `height`.
    pub fn resize(width: u32, height: u32) -> Self {
        Self::new(width, height, Geometry::Resize)
    }

    /// Evaluation: the shorter side resized to `resize`, then the centre `size` × `size`
    /// (torchvision's `Resize(resize)` + `CenterCrop(size)`, e.g. 256 and 224).
    pub fn center_crop(resize: u32, size: u32) -> Self {
        assert!(resize > 0, "resize to 0");
        Self::new(size, size, Geometry::Center { resize })
    }

    /// Training: torchvision's `RandomResizedCrop(size)` (area fraction in `0.08..1`, aspect
    /// ratio in `3/4..4/3`, see [`scale`](Self::scale) and [`ratio`](Self::ratio)) followed by
    /// `RandomHorizontalFlip()` (see [`flip`](Self::flip)), drawn from the image's
    /// [`key`](EncodedImage::key): an image without a key fails.
    pub fn random_resized_crop(size: u32) -> Self {
        let mut t = Self::new(
            size,
            size,
            Geometry::RandomResized {
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
        );
        t.flip = true;
        t
    }

    /// RandomResizedCrop's range of the crop's area as a fraction of the image's.
    /// Panics unless `0 < lo <= hi <= 1`, or if this is not a RandomResizedCrop.
    pub fn scale(mut self, lo: f64, hi: f64) -> Self {
        assert!(0.0 < lo && lo <= hi && hi <= 1.0, "scale range {lo}..{hi}");
        match &mut self.geometry {
            Geometry::RandomResized { scale, .. } => *scale = (lo, hi),
            _ => panic!("scale() is for random_resized_crop"),
        }
        self
    }

    /// RandomResizedCrop's range of the crop's aspect ratio (width / height), drawn
    /// log-uniformly. Panics unless `0 < lo <= hi`, or if this is not a RandomResizedCrop.
    pub fn ratio(mut self, lo: f64, hi: f64) -> Self {
        assert!(
            0.0 < lo && lo <= hi && hi.is_finite(),
            "ratio range {lo}..{hi}"
        );
        match &mut self.geometry {
            Geometry::RandomResized { ratio, .. } => *ratio = (lo, hi),
            _ => panic!("ratio() is for random_resized_crop"),
        }
        self
    }

    /// Flip horizontally with probability 1/2, drawn from the image's key (on for
    /// [`random_resized_crop`](Self::random_resized_crop)).
    pub fn flip(mut self, yes: bool) -> Self {
        self.flip = yes;
        self
    }

    /// The limits an image must pass before it is decoded (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Always decode every pixel at full scale (the reference that reduced-scale decoding is
    /// measured against).
    pub fn full_scale_decode(mut self) -> Self {
        self.scaled_decode = false;
        self
    }

    /// The output's width and height.
    pub fn output_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Whether [`apply`](Self::apply) needs the image's key.
    pub fn is_random(&self) -> bool {
        self.flip || matches!(self.geometry, Geometry::RandomResized { .. })
    }

    /// The region of a `width` × `height` source that becomes the output, and whether it is
    /// flipped: what [`apply`](Self::apply) does to an image of that size with that key.
    pub fn crop(
        &self,
        width: u32,
        height: u32,
        key: Option<&ItemKey>,
    ) -> Result<(CropBox, bool), String> {
        let mut rng = match key {
            Some(key) => Some(key.rng_stream(RANDOM_STREAM)),
            None if self.is_random() => {
                return Err("a random crop or flip needs the item's key \
                            (EncodedImage::with_key, images::read_keyed)"
                    .into())
            }
            None => None,
        };
        let region = match (self.geometry, &mut rng) {
            (Geometry::Resize, _) => CropBox::full(width, height),
            (Geometry::Center { resize }, _) => {
                crop::center(width, height, resize, self.width, self.height)
            }
            (Geometry::RandomResized { scale, ratio }, Some(rng)) => {
                crop::random_resized(width, height, scale, ratio, rng)
            }
            (Geometry::RandomResized { .. }, None) => unreachable!("is_random"),
        };
        let flipped = match (self.flip, &mut rng) {
            (true, Some(rng)) => rng.next_u64() >> 63 == 1,
            _ => false,
        };
        Ok((region, flipped))
    }

    /// Decodes, crops, resizes and flips one image; any failure names the image.
    pub fn apply(&self, image: &EncodedImage) -> Result<Image, ImageError> {
        self.apply_bytes(&image.bytes, image.key.as_ref())
            .map_err(|reason| ImageError::new(&image.name, reason))
    }

    /// This transform as a stage function (`try_pipe(t.stage())`, or in the macro
    /// `pipe(try t.stage())`).
    pub fn stage(
        &self,
    ) -> impl Fn(EncodedImage) -> Result<Image, ImageError> + Clone + Send + Sync + 'static {
        let this = *self;
        move |image: EncodedImage| this.apply(&image)
    }

    fn apply_bytes(&self, bytes: &[u8], key: Option<&ItemKey>) -> Result<Image, String> {
        let header = probe(bytes)?;
        self.limits.check(&header)?;
        let (region, flipped) = self.crop(header.width, header.height, key)?;
        let denominator = if self.scaled_decode {
            self.denominator(&header, &region)
        } else {
            1
        };
        let decoded = decode_checked(bytes, &header, denominator)?;
        // The decoder may not have scaled (or rounded the sides up): map the region onto
        // what it returned.
        let region = region.scaled(
            f64::from(decoded.width) / f64::from(header.width),
            f64::from(decoded.height) / f64::from(header.height),
            decoded.width,
            decoded.height,
        );
        let mut out = resize_region(&decoded, &region, self.width, self.height)?;
        if flipped {
            flip_horizontally(&mut out);
        }
        Ok(out)
    }

    /// The largest DCT scale denominator (8, 4, 2, else 1) at which `region` still has at
    /// least the output's pixels on both sides, so that the resize only ever shrinks.
    pub(super) fn denominator(&self, header: &Header, region: &CropBox) -> u32 {
        [8u32, 4, 2]
            .into_iter()
            .find(|&d| {
                let sx = f64::from(header.width.div_ceil(d)) / f64::from(header.width);
                let sy = f64::from(header.height.div_ceil(d)) / f64::from(header.height);
                region.width * sx >= f64::from(self.width)
                    && region.height * sy >= f64::from(self.height)
            })
            .unwrap_or(1)
    }
}

thread_local! {
    // A resizer keeps scratch buffers: one per thread saves allocations per image.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes a whole decoded image to `width` × `height` with [`ImageTransform`]'s filter: for
/// a stage of its own after [`decode`](super::decode).
pub fn resize(image: &Image, width: u32, height: u32) -> Result<Image, String> {
    if width == 0 || height == 0 {
        return Err(format!("output size {width}x{height} is empty"));
    }
    resize_region(
        image,
        &CropBox::full(image.width, image.height),
        width,
        height,
    )
}

/// Resizes `region` of `source` to `width` × `height` (bilinear, antialiased).
fn resize_region(
    source: &Image,
    region: &CropBox,
    width: u32,
    height: u32,
) -> Result<Image, String> {
    if region.width <= 0.0 || region.height <= 0.0 {
        return Err(format!("empty crop {region:?}"));
    }
    let src = ImageRef::new(source.width, source.height, &source.pixels, PixelType::U8x3)
        .map_err(|e| format!("bad decoded image: {e}"))?;
    let mut dst = ResizeImage::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(region.left, region.top, region.width, region.height);
    RESIZER
        .with_borrow_mut(|resizer| resizer.resize(&src, &mut dst, &options))
        .map_err(|e| format!("resize failed: {e}"))?;
    Ok(Image {
        width,
        height,
        pixels: dst.into_vec(),
    })
}

fn flip_horizontally(image: &mut Image) {
    let row = image.width as usize * 3;
    for line in image.pixels.chunks_exact_mut(row) {
        let (mut a, mut b) = (0, image.width as usize - 1);
        while a < b {
            for c in 0..3 {
                line.swap(a * 3 + c, b * 3 + c);
            }
            a += 1;
            b -= 1;
        }
    }
}
