//! The image module's behaviours: formats and hostile files, limits, crop geometry,
//! determinism of the random crop and flip, batch layout.

use std::collections::HashSet;

use super::crop::{self, CropBox};
use super::*;
use crate::distributed::ItemKey;
use crate::PipelineBuilder;

/// A JPEG of `width` × `height` whose pixels are `pixel(x, y)`.
fn jpeg(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(&pixel(x, y));
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode(&rgb, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// A PNG of any colour type and depth from its raw samples.
fn png_raw(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

/// A smooth colourful picture, so that crops of different places differ.
/// A lossless WebP of `width` × `height` from its samples.
fn webp(width: u32, height: u32, color: image_webp::ColorType, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(data, width, height, color)
        .unwrap();
    out
}

fn picture(x: u32, y: u32) -> [u8; 3] {
    [
        (x * 255 / 639) as u8,
        (y * 255 / 479) as u8,
        ((x + y) % 256) as u8,
    ]
}

fn key(index: u64) -> ItemKey {
    ItemKey {
        seed: 7,
        epoch: 0,
        index,
    }
}

fn named(bytes: Vec<u8>) -> EncodedImage {
    EncodedImage::new("test/img.jpg", bytes)
}

/// A small JPEG whose frame header is rewritten to declare `width` × `height`.
pub(crate) fn bomb(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg(8, 8, |_, _| [90, 90, 90]);
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn a_jpeg_decodes_to_its_size_and_colours() {
    let bytes = jpeg(
        64,
        48,
        |x, _| if x < 32 { [250, 10, 10] } else { [10, 10, 250] },
    );
    let image = decode(&named(bytes), &Limits::default()).unwrap();
    assert_eq!((image.width, image.height), (64, 48));
    let at = |x: usize, y: usize| &image.pixels[(y * 64 + x) * 3..][..3];
    assert!(at(5, 20)[0] > 200 && at(5, 20)[2] < 50, "{:?}", at(5, 20));
    assert!(
        at(60, 20)[2] > 200 && at(60, 20)[0] < 50,
        "{:?}",
        at(60, 20)
    );
}

#[test]
fn pngs_of_every_colour_type_and_depth_decode_to_rgb() {
    use png::{BitDepth, ColorType};
    let cases: Vec<(ColorType, BitDepth, Vec<u8>, [u8; 3])> = vec![
        (
            ColorType::Rgb,
            BitDepth::Eight,
            [1, 2, 3].repeat(6),
            [1, 2, 3],
        ),
        (
            ColorType::Rgba,
            BitDepth::Eight,
            [1, 2, 3, 4].repeat(6),
            [1, 2, 3],
        ),
        (ColorType::Grayscale, BitDepth::Eight, vec![77; 6], [77; 3]),
        (
            ColorType::GrayscaleAlpha,
            BitDepth::Eight,
            [77, 0].repeat(6),
            [77; 3],
        ),
        // 16-bit samples keep their high byte.
        (
            ColorType::Rgb,
            BitDepth::Sixteen,
            [9, 0, 8, 0, 7, 0].repeat(6),
            [9, 8, 7],
        ),
    ];
    for (color, depth, data, want) in cases {
        let bytes = png_raw(3, 2, color, depth, &data);
        let image = decode(&named(bytes), &Limits::default()).unwrap();
        assert_eq!((image.width, image.height), (3, 2));
        assert_eq!(image.pixels, want.repeat(6), "{color:?} {depth:?}");
    }
}

#[test]
fn webps_decode_to_rgb_and_a_huge_one_is_refused() {
    use image_webp::ColorType;
    let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 5) as u8).collect();
    let image = decode(
        &named(webp(5, 3, ColorType::Rgb8, &rgb)),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!((image.width, image.height, &image.pixels), (5, 3, &rgb));
    let rgba = [10, 20, 30, 40].repeat(6);
    let image = decode(
        &named(webp(3, 2, ColorType::Rgba8, &rgba)),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(image.pixels, [10, 20, 30].repeat(6), "alpha dropped");
    // The lossless header rewritten to declare 16384 x 16384 (14 bits of width - 1 and
    // height - 1 after the signature byte).
    let mut bomb = webp(4, 4, ColorType::Rgb8, &[7; 48]);
    assert_eq!(&bomb[12..16], b"VP8L");
    bomb[21..25].copy_from_slice(&(0x3FFF_u32 | (0x3FFF << 14)).to_le_bytes());
    let image = named(bomb);
    let (result, allocated) = crate::fuzz::allocated_during(|| decode(&image, &Limits::default()));
    let err = result.unwrap_err();
    assert!(err.reason.contains("refused: 16384x16384"), "{err}");
    assert!(allocated < 64 << 10, "{allocated} bytes allocated");
}

#[test]
fn a_bad_file_fails_naming_the_file_and_the_reason() {
    let good = jpeg(32, 32, picture);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty file"),
        (b"GIF89a....".to_vec(), "not a JPEG, PNG or WebP"),
        (
            webp(4, 4, image_webp::ColorType::Rgb8, &[5; 48])[..24].to_vec(),
            "WebP",
        ),
        (good[..good.len() / 2].to_vec(), "JPEG"),
        (good[..20].to_vec(), "JPEG"),
        (
            png_raw(4, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[5; 48])[..40].to_vec(),
            "PNG",
        ),
    ];
    for (bytes, reason) in cases {
        let err = ImageTransform::center_crop(256, 224)
            .apply(&named(bytes))
            .expect_err("a bad file must fail");
        assert_eq!(err.name, "test/img.jpg");
        assert!(err.reason.contains(reason), "{err}");
        assert!(err.to_string().starts_with("test/img.jpg: "), "{err}");
    }
}

#[test]
fn a_header_declaring_16000_squared_is_refused_before_decoding() {
    let bytes = bomb(16_000, 16_000);
    assert!(bytes.len() < 1000, "{} bytes", bytes.len());
    let image = named(bytes.clone());
    let t = ImageTransform::center_crop(256, 224);
    let started = std::time::Instant::now();
    let (result, allocated) = crate::fuzz::allocated_during(|| t.apply(&image));
    assert!(started.elapsed() < std::time::Duration::from_millis(10));
    // Decoding it would take 768 MB; refusing it takes an error message.
    assert!(allocated < 64 << 10, "{allocated} bytes allocated");
    let err = result.unwrap_err();
    assert!(
        err.reason.contains("refused") && err.reason.contains("16000x16000"),
        "{err}"
    );
    assert!(err.reason.contains("max_pixels"), "{err}");
    let err = decode(&named(bytes), &Limits::default()).unwrap_err();
    assert!(err.reason.contains("refused"), "{err}");
}

#[test]
fn a_png_header_declaring_a_huge_image_is_refused() {
    let mut bytes = png_raw(4, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[5; 48]);
    // IHDR's width and height; the chunk's CRC is not checked before the limits.
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let err = decode(&named(bytes.clone()), &Limits::default()).unwrap_err();
    assert!(err.reason.contains("refused"), "{err}");
    // Sides so large that the bytes to decode pass u64 (found by the fuzzing below).
    bytes[16..24].copy_from_slice(&[0xFF; 8]);
    let err = decode(&named(bytes), &Limits::default()).unwrap_err();
    assert!(err.reason.contains("refused"), "{err}");
}

#[test]
fn limits_are_set_per_transform() {
    let bytes = jpeg(100, 100, picture);
    let small = Limits {
        max_pixels: 9_999,
        ..Limits::default()
    };
    let err = ImageTransform::resize(10, 10)
        .limits(small)
        .apply(&named(bytes.clone()))
        .unwrap_err();
    assert!(err.reason.contains("max_pixels"), "{err}");
    let few_bytes = Limits {
        max_bytes: 29_999,
        ..Limits::default()
    };
    let err = ImageTransform::resize(10, 10)
        .limits(few_bytes)
        .apply(&named(bytes.clone()))
        .unwrap_err();
    assert!(err.reason.contains("max_bytes"), "{err}");
    let exact = Limits {
        max_pixels: 10_000,
        max_bytes: 30_000,
    };
    ImageTransform::resize(10, 10)
        .limits(exact)
        .apply(&named(bytes))
        .unwrap();
}

#[test]
fn the_centre_crop_is_torchvisions_resize_then_centre_crop() {
    // 640x480, shorter side to 256: 341x256; its centre 224x224 is 420x420 of the source.
    let b = crop::center(640, 480, 256, 224, 224);
    assert_eq!(
        b,
        CropBox {
            left: 110.0,
            top: 30.0,
            width: 420.0,
            height: 420.0
        }
    );
    // Tall image: the same on the other axis.
    let b = crop::center(300, 600, 256, 224, 224);
    assert!(
        (b.width - 262.5).abs() < 1e-9 && (b.left - 18.75).abs() < 1e-9,
        "{b:?}"
    );
    assert!((b.top - (600.0 - 262.5) / 2.0).abs() < 1e-9, "{b:?}");
    // Smaller than the crop after resizing: the whole side.
    let b = crop::center(100, 100, 200, 224, 224);
    assert_eq!(b, CropBox::full(100, 100));
}

#[test]
fn random_resized_crops_stay_inside_with_area_and_ratio_in_range() {
    let t = ImageTransform::random_resized_crop(224);
    let (mut flips, mut lefts, n) = (0, HashSet::new(), 2000);
    for i in 0..n {
        let (b, flipped) = t.crop(640, 480, Some(&key(i))).unwrap();
        assert!(b.left >= 0.0 && b.top >= 0.0, "{b:?}");
        assert!(
            b.left + b.width <= 640.0 && b.top + b.height <= 480.0,
            "{b:?}"
        );
        assert_eq!(
            (b.left.fract(), b.width.fract()),
            (0.0, 0.0),
            "whole pixels"
        );
        let area = b.width * b.height / (640.0 * 480.0);
        let ratio = b.width / b.height;
        // Rounding to whole pixels moves area and ratio a little past the drawn values.
        assert!((0.07..=1.0).contains(&area), "area {area} {b:?}");
        assert!((0.74..=1.35).contains(&ratio), "ratio {ratio} {b:?}");
        flips += usize::from(flipped);
        lefts.insert(b.left as u64);
        // The same key, the same crop.
        assert_eq!(t.crop(640, 480, Some(&key(i))).unwrap(), (b, flipped));
    }
    assert!((800..1200).contains(&flips), "{flips} flips in {n}");
    assert!(lefts.len() > 100, "crops are placed all over");
}

#[test]
fn a_crop_that_never_fits_falls_back_to_the_centre_with_the_ratio_clamped() {
    let t = ImageTransform::random_resized_crop(224).scale(0.9, 1.0);
    // 1000x10: no 3/4..4/3 box of 90% of the area fits; the fallback is 13x10 in the middle.
    let (b, _) = t.crop(1000, 10, Some(&key(3))).unwrap();
    assert_eq!(
        b,
        CropBox {
            left: 493.0,
            top: 0.0,
            width: 13.0,
            height: 10.0
        }
    );
}

#[test]
fn a_random_transform_without_a_key_fails_the_item() {
    let err = ImageTransform::random_resized_crop(32)
        .apply(&named(jpeg(64, 64, picture)))
        .unwrap_err();
    assert!(err.reason.contains("key"), "{err}");
}

#[test]
fn the_crop_and_the_flip_move_the_pixels() {
    // Left half red, right half blue.
    let bytes = jpeg(
        64,
        32,
        |x, _| if x < 32 { [250, 0, 0] } else { [0, 0, 250] },
    );
    let t = ImageTransform::resize(8, 8).flip(true);
    let (mut seen_flipped, mut seen_straight) = (false, false);
    for i in 0..16 {
        let k = key(i);
        let (_, flipped) = t.crop(64, 32, Some(&k)).unwrap();
        let out = t.apply(&named(bytes.clone()).with_key(k)).unwrap();
        let (left, right) = (&out.pixels[..3], &out.pixels[7 * 3..8 * 3]);
        if flipped {
            assert!(
                left[2] > 200 && right[0] > 200,
                "flipped: {left:?} {right:?}"
            );
            seen_flipped = true;
        } else {
            assert!(
                left[0] > 200 && right[2] > 200,
                "straight: {left:?} {right:?}"
            );
            seen_straight = true;
        }
    }
    assert!(seen_flipped && seen_straight);
    // The centre crop of a 64x32 image resized to 32 is its middle 32x32: half red, half blue.
    let out = ImageTransform::center_crop(32, 32)
        .apply(&named(bytes))
        .unwrap();
    assert_eq!((out.width, out.height), (32, 32));
    assert!(out.pixels[0] > 200 && out.pixels[31 * 3 + 2] > 200);
}

#[test]
fn every_size_becomes_the_output_size() {
    for (w, h) in [
        (1, 1),
        (7, 300),
        (640, 480),
        (300, 640),
        (1024, 768),
        (160, 120),
    ] {
        let bytes = jpeg(w, h, |x, y| picture(x % 640, y % 480));
        for t in [
            ImageTransform::center_crop(256, 224),
            ImageTransform::random_resized_crop(224),
            ImageTransform::resize(100, 50),
        ] {
            let out = t.apply(&named(bytes.clone()).with_key(key(1))).unwrap();
            let (ow, oh) = t.output_size();
            assert_eq!(
                (out.width, out.height, out.pixels.len()),
                (ow, oh, (ow * oh * 3) as usize)
            );
        }
    }
}

#[test]
fn the_decode_scale_is_the_smallest_that_covers_the_output() {
    let t = ImageTransform::center_crop(256, 224);
    // 2048x1536: the crop is 1344 source pixels a side; at 1/4 it is 336 >= 224, at 1/8 168.
    let header = probe(&bomb(2048, 1536)).unwrap();
    let region = t.crop(2048, 1536, None).unwrap().0;
    assert_eq!(t.denominator(&header, &region), 4);
    // 640x480: 420 a side, so 1/1 (210 at 1/2 is too small).
    let header = probe(&bomb(640, 480)).unwrap();
    let region = t.crop(640, 480, None).unwrap().0;
    assert_eq!(t.denominator(&header, &region), 1);
}

#[test]
fn a_reduced_scale_decode_looks_like_the_full_one() {
    let bytes = jpeg(1600, 1200, |x, y| picture(x * 640 / 1600, y * 480 / 1200));
    let fast = ImageTransform::center_crop(256, 224);
    let full = fast.full_scale_decode();
    let (a, b) = (
        fast.apply(&named(bytes.clone())).unwrap(),
        full.apply(&named(bytes)).unwrap(),
    );
    let mean_diff = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.pixels.len() as f64;
    assert!(mean_diff < 2.0, "mean difference {mean_diff}");
}

#[test]
fn random_crops_are_the_same_bit_for_bit_at_any_concurrency() {
    let files: Vec<Vec<u8>> = [(640, 480), (300, 640), (1024, 768)]
        .into_iter()
        .map(|(w, h)| jpeg(w, h, |x, y| picture(x % 640, y % 480)))
        .collect();
    let run = |concurrency: usize| -> Vec<(u64, Image)> {
        let items: Vec<EncodedImage> = (0..48u64)
            .map(|i| named(files[i as usize % 3].clone()).with_key(key(i)))
            .collect();
        let t = ImageTransform::random_resized_crop(64);
        let pipeline = PipelineBuilder::new()
            .source(items)
            .try_pipe(move |e: EncodedImage| t.apply(&e).map(|img| (e.key.unwrap().index, img)))
            .concurrency(concurrency)
            .sink()
            .num_threads(concurrency)
            .build()
            .unwrap();
        let mut out: Vec<(u64, Image)> = pipeline.map(Result::unwrap).collect();
        out.sort_by_key(|(i, _)| *i);
        out
    };
    let one = run(1);
    assert_eq!(one.len(), 48);
    assert_eq!(one, run(6));
    // Another epoch draws other crops.
    let other = ImageTransform::random_resized_crop(64)
        .apply(&named(files[0].clone()).with_key(ItemKey { epoch: 1, ..key(0) }))
        .unwrap();
    assert_ne!(other, one[0].1);
}

fn image_of(width: u32, height: u32, first: u8) -> Image {
    let pixels = (0..width * height * 3)
        .map(|i| first.wrapping_add(i as u8))
        .collect();
    Image {
        width,
        height,
        pixels,
    }
}

#[test]
fn a_batch_puts_each_image_in_its_slot_in_the_layout_asked() {
    let images = [image_of(3, 2, 0), image_of(3, 2, 100)];
    let hwc = collate_u8(&images, Layout::Hwc).unwrap();
    assert_eq!((hwc.images, hwc.height, hwc.width), (2, 2, 3));
    assert_eq!(hwc.image(0), &images[0].pixels[..]);
    assert_eq!(hwc.image(1), &images[1].pixels[..]);
    let chw = collate_u8(&images, Layout::Chw).unwrap();
    assert_eq!(chw.data.len(), 2 * 3 * 2 * 3);
    for (n, image) in images.iter().enumerate() {
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..3 {
                    let want = image.pixels[(y * 3 + x) * 3 + c];
                    assert_eq!(chw.image(n)[c * 6 + y * 3 + x], want, "n{n} c{c} y{y} x{x}");
                }
            }
        }
    }
    let f = collate_f32(&images, Layout::Chw, &Normalize::IMAGENET).unwrap();
    let want = (f32::from(images[1].pixels[3 * 4 + 2]) / 255.0 - 0.406) / 0.225;
    assert!((f.image(1)[2 * 6 + 4] - want).abs() < 1e-5);
    let f = collate_f32(&images, Layout::Hwc, &Normalize::IMAGENET).unwrap();
    let want = (f32::from(images[0].pixels[5]) / 255.0 - 0.406) / 0.225;
    assert!((f.image(0)[5] - want).abs() < 1e-5);
}

#[test]
fn a_batch_of_mixed_sizes_fails() {
    let err = collate_u8(&[image_of(3, 2, 0), image_of(2, 3, 0)], Layout::Chw).unwrap_err();
    assert!(err.to_string().contains("batch image 1"), "{err}");
    assert_eq!(collate_u8(&[], Layout::Hwc).unwrap().data.len(), 0);
}

#[test]
fn mangled_files_fail_or_decode_but_never_panic() {
    use proptest::prelude::*;
    let seed = jpeg(40, 30, picture);
    let png = png_raw(5, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[9; 60]);
    let webp = webp(5, 4, image_webp::ColorType::Rgb8, &[9; 60]);
    proptest!(crate::fuzz::config(256), |(which in 0..3usize, cut in 0usize..2000, flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8))| {
        let mut bytes = [&seed, &png, &webp][which].clone();
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        let t = ImageTransform::random_resized_crop(16);
        if let Ok(out) = t.apply(&named(bytes).with_key(key(0))) {
            prop_assert_eq!(out.pixels.len(), 16 * 16 * 3);
        }
    });
}

#[cfg(feature = "turbojpeg")]
#[test]
fn libjpeg_turbo_decodes_at_the_scale_asked() {
    let bytes = jpeg(1601, 1200, |x, y| picture(x % 640, y % 480));
    let header = probe(&bytes).unwrap();
    let quarter = super::decode::decode_checked(&bytes, &header, 4).unwrap();
    // Sides rounded up, as TJSCALED.
    assert_eq!((quarter.width, quarter.height), (401, 300));
    // libjpeg-turbo has no 1/3 (the caller then falls back to a full-size zune-jpeg decode).
    let err = super::turbo::decode(&bytes, &header, 3).expect_err("no 1/3 scale");
    assert!(err.contains("1/3"), "{err}");
}

#[cfg(feature = "turbojpeg")]
#[test]
fn a_file_both_jpeg_decoders_reject_fails_with_both_reasons() {
    let good = jpeg(64, 64, picture);
    let err = ImageTransform::center_crop(64, 32)
        .apply(&named(good[..good.len() / 2].to_vec()))
        .unwrap_err();
    assert!(err.reason.contains("libjpeg-turbo: "), "{err}");
    assert!(err.reason.contains("zune-jpeg fallback: "), "{err}");
}
