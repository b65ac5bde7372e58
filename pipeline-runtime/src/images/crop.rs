//! Which part of the source becomes the output: the centre crop of evaluation and
//! torchvision's RandomResizedCrop, as boxes in source pixels. Pure geometry, no pixels.

use crate::distributed::Rng;

/// A region of the source image, in source pixels (fractional for the centre crop, whose
/// box is the output's footprint in the source after resizing the shorter side).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

impl CropBox {
    /// The whole of a `width` × `height` image.
    pub fn full(width: u32, height: u32) -> Self {
        Self {
            left: 0.0,
            top: 0.0,
            width: f64::from(width),
            height: f64::from(height),
        }
    }

    /// The same region in an image scaled by `sx` horizontally and `sy` vertically (a decode
    /// at reduced scale), kept inside a `width` × `height` image.
    pub(crate) fn scaled(&self, sx: f64, sy: f64, width: u32, height: u32) -> Self {
        let left = (self.left * sx).min(f64::from(width));
        let top = (self.top * sy).min(f64::from(height));
        Self {
            left,
            top,
            width: (self.width * sx).min(f64::from(width) - left),
            height: (self.height * sy).min(f64::from(height) - top),
        }
    }
}

/// torchvision's `Resize(resize)` then `CenterCrop((out_h, out_w))`, as the box of the source
/// that becomes the output: the shorter side scaled to `resize`, the crop centred. Where the
/// crop is larger than the resized image on a side, it takes that whole side (torchvision
/// would pad with zeros).
pub(crate) fn center(width: u32, height: u32, resize: u32, out_w: u32, out_h: u32) -> CropBox {
    let (w, h) = (f64::from(width), f64::from(height));
    let source_per_output = w.min(h) / f64::from(resize);
    let box_w = (f64::from(out_w) * source_per_output).min(w);
    let box_h = (f64::from(out_h) * source_per_output).min(h);
    CropBox {
        left: (w - box_w) / 2.0,
        top: (h - box_h) / 2.0,
        width: box_w,
        height: box_h,
    }
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten tries of an area fraction drawn
/// from `scale` and an aspect ratio drawn log-uniformly from `ratio`, placed uniformly;
/// if none fits, the centre crop of the whole image clamped to the ratio range. The box
/// has whole-pixel edges.
pub(crate) fn random_resized(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> CropBox {
    let (w, h) = (i64::from(width), i64::from(height));
    let area = (w * h) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    let uniform = |rng: &mut Rng, lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let cw = (target * aspect).sqrt().round() as i64;
        let ch = (target / aspect).sqrt().round() as i64;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.below((h - ch + 1) as u64) as i64;
            let left = rng.below((w - cw + 1) as u64) as i64;
            return whole(left, top, cw, ch);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as i64).clamp(1, h))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as i64).clamp(1, w), h)
    } else {
        (w, h)
    };
    whole((w - cw) / 2, (h - ch) / 2, cw, ch)
}

fn whole(left: i64, top: i64, width: i64, height: i64) -> CropBox {
    CropBox {
        left: left as f64,
        top: top as f64,
        width: width as f64,
        height: height as f64,
    }
}
