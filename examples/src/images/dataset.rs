//! A small deterministic JPEG dataset, so that the image example runs without downloads.

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

/// A number in `0..n`, as an index.
fn below(rng: &mut XorShift, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}
