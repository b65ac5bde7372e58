//! Small deterministic JPEG datasets, so that the image examples run without downloads: one
//! that looks like photos (for loading speed), and one whose images carry a label (for
//! training).

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

use crate::scratch::XorShift;

/// Sizes cycled through by the generator: mostly larger than 224×224 (a downscale, as with
/// photos), one smaller (an upscale) and one tall.
const SIZES: [(u32, u32); 6] = [
    (640, 480),
    (800, 600),
    (500, 375),
    (1024, 768),
    (160, 120),
    (300, 640),
];

/// Writes `count` JPEG files (`img_00000.jpg`, …) of varied sizes into `dir` (created if
/// missing) and returns their paths, sorted. The content — smooth colour waves, a few flat
/// rectangles and noise, like a photo's mix of gradients, edges and texture — depends only
/// on the file's index, so the same call always writes the same images.
pub fn write_jpeg_dataset(dir: &Path, count: usize) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let (width, height) = SIZES[i % SIZES.len()];
        let pixels = synthesize(i as u64, width, height);
        let path = dir.join(format!("img_{i:05}.jpg"));
        let file = BufWriter::new(std::fs::File::create(&path)?);
        JpegEncoder::new_with_quality(file, 90)
            .encode(&pixels, width, height, ExtendedColorType::Rgb8)
            .map_err(std::io::Error::other)?;
        paths.push(path);
    }
    Ok(paths)
}

fn synthesize(seed: u64, width: u32, height: u32) -> Vec<u8> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED69));
    // Per channel: amplitude, x and y frequency, phase of two waves.
    let waves: Vec<[f32; 4]> = (0..6)
        .map(|_| {
            [
                10.0 + 35.0 * rng.unit(),
                0.5 + 5.5 * rng.unit(),
                0.5 + 5.5 * rng.unit(),
                std::f32::consts::TAU * rng.unit(),
            ]
        })
        .collect();
    let (w, h) = (width as usize, height as usize);
    // sin(u + v) = sin u cos v + cos u sin v: per-column and per-row tables make each wave
    // two multiplications per pixel instead of a `sin`.
    let tables: Vec<[Vec<f32>; 4]> = waves
        .iter()
        .map(|&[_, kx, ky, phase]| {
            let u = |x: usize| std::f32::consts::TAU * kx * x as f32 / w as f32;
            let v = |y: usize| std::f32::consts::TAU * ky * y as f32 / h as f32 + phase;
            [
                (0..w).map(|x| u(x).sin()).collect(),
                (0..w).map(|x| u(x).cos()).collect(),
                (0..h).map(|y| v(y).sin()).collect(),
                (0..h).map(|y| v(y).cos()).collect(),
            ]
        })
        .collect();
    let mut pixels = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut value = 128.0;
                for k in 2 * c..2 * c + 2 {
                    let [sin_u, cos_u, sin_v, cos_v] = &tables[k];
                    value += waves[k][0] * (sin_u[x] * cos_v[y] + cos_u[x] * sin_v[y]);
                }
                pixels[(y * w + x) * 3 + c] = value.clamp(0.0, 255.0) as u8;
            }
        }
    }
    for _ in 0..8 {
        let (x0, x1) = ordered(below(&mut rng, w), below(&mut rng, w));
        let (y0, y1) = ordered(below(&mut rng, h), below(&mut rng, h));
        let colour = [
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ];
        for y in y0..=y1 {
            for x in x0..=x1 {
                pixels[(y * w + x) * 3..][..3].copy_from_slice(&colour);
            }
        }
    }
    for p in &mut pixels {
        let noise = rng.below(17) as i32 - 8;
        *p = (i32::from(*p) + noise).clamp(0, 255) as u8;
    }
    pixels
}

/// The classes of [`write_stripes_dataset`]: the direction of an image's stripes.
pub const STRIPE_CLASSES: [&str; 4] = ["horizontal", "vertical", "diagonal \\", "diagonal /"];

/// Labelled files: each path with its class.
pub type Labelled = Vec<(PathBuf, u32)>;

/// Files of [`write_stripes_dataset`] split into (training, held out): every fifth is held
/// out. Labels go round the classes, so both parts are balanced.
pub fn hold_out_every_fifth(files: Labelled) -> (Labelled, Labelled) {
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for (i, file) in files.into_iter().enumerate() {
        if i % 5 == 4 {
            held_out.push(file);
        } else {
            train.push(file);
        }
    }
    (train, held_out)
}

/// Sizes cycled through by the stripes generator: small, square and not.
const STRIPE_SIZES: [(u32, u32); 3] = [(64, 64), (80, 60), (60, 80)];

/// Writes `count` labelled JPEG files (`stripes_00000.jpg`, …) into `dir` and returns each
/// path with its label, an index into [`STRIPE_CLASSES`]. The label is what the picture
/// shows: stripes running horizontally, vertically or along one of the two diagonals (in the
/// image's own coordinates, so they stay diagonal when resized to a square), in two random
/// colours, at a random frequency and phase, with noise and a flat rectangle on top. Colour
/// says nothing about the class; only the direction of the stripes does. Labels go round
/// the classes in turn (balanced), and the same call always writes the same images.
pub fn write_stripes_dataset(dir: &Path, count: usize) -> std::io::Result<Vec<(PathBuf, u32)>> {
    std::fs::create_dir_all(dir)?;
    let mut items = Vec::with_capacity(count);
    for i in 0..count {
        let label = (i % STRIPE_CLASSES.len()) as u32;
        let (width, height) = STRIPE_SIZES[(i / STRIPE_CLASSES.len()) % STRIPE_SIZES.len()];
        let pixels = stripes(i as u64, label, width, height);
        let path = dir.join(format!("stripes_{i:05}.jpg"));
        let file = BufWriter::new(std::fs::File::create(&path)?);
        JpegEncoder::new_with_quality(file, 90)
            .encode(&pixels, width, height, ExtendedColorType::Rgb8)
            .map_err(std::io::Error::other)?;
        items.push((path, label));
    }
    Ok(items)
}

fn stripes(seed: u64, label: u32, width: u32, height: u32) -> Vec<u8> {
    let mut rng = XorShift(0xA076_1D64_78BD_642F ^ seed.wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    let colour = |rng: &mut XorShift| [0, 1, 2].map(|_| 255.0 * rng.unit());
    let a = colour(&mut rng);
    // A second colour that differs from the first in brightness, so the stripes show.
    let mut b = colour(&mut rng);
    while (luma(a) - luma(b)).abs() < 60.0 {
        b = colour(&mut rng);
    }
    let cycles = 2.5 + 3.0 * rng.unit();
    let phase = std::f32::consts::TAU * rng.unit();
    let (w, h) = (width as usize, height as usize);
    let mut pixels = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let along = match label {
                0 => v,
                1 => u,
                2 => (u + v) / std::f32::consts::SQRT_2,
                _ => (u - v) / std::f32::consts::SQRT_2,
            };
            let mix = 0.5 + 0.5 * (std::f32::consts::TAU * cycles * along + phase).sin();
            for c in 0..3 {
                pixels[(y * w + x) * 3 + c] = (a[c] * mix + b[c] * (1.0 - mix)) as u8;
            }
        }
    }
    // A flat rectangle of a third colour, up to a quarter of each side.
    let (rw, rh) = (1 + below(&mut rng, w / 4), 1 + below(&mut rng, h / 4));
    let (x0, y0) = (below(&mut rng, w - rw), below(&mut rng, h - rh));
    let patch = colour(&mut rng).map(|v| v as u8);
    for y in y0..y0 + rh {
        for x in x0..x0 + rw {
            pixels[(y * w + x) * 3..][..3].copy_from_slice(&patch);
        }
    }
    for p in &mut pixels {
        let noise = rng.below(25) as i32 - 12;
        *p = (i32::from(*p) + noise).clamp(0, 255) as u8;
    }
    pixels
}

/// A number in `0..n`, as an index.
fn below(rng: &mut XorShift, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}
