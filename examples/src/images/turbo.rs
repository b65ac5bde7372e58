//! libjpeg-turbo's TurboJPEG API (the 2.x functions, present in 2.0 and later), linked from
//! the system library (`libturbojpeg0-dev` on Debian).
//!
//! Only what decoding needs: read the header, pick the DCT scaling factor, decompress to RGB.
//! TurboJPEG reports errors through return codes (no `longjmp` across Rust frames).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use super::RgbImage;

const TJPF_RGB: c_int = 0;
const MAX_SIDE: c_int = 16_384;

#[link(name = "turbojpeg")]
extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsampling: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        jpeg_size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

/// One decompressor per thread: a handle is cheap to keep and not safe to share.
struct Handle(*mut c_void);

impl Handle {
    fn new() -> Result<Self, String> {
        // SAFETY: no arguments; a null return is checked below.
        let raw = unsafe { tjInitDecompress() };
        if raw.is_null() {
            return Err("libjpeg-turbo: cannot create a decompressor".into());
        }
        Ok(Self(raw))
    }

    fn last_error(&self) -> String {
        // SAFETY: `self.0` is a live handle; the library returns a NUL-terminated string
        // that stays valid until the next call on this handle, and we copy it at once.
        let message = unsafe { CStr::from_ptr(tjGetErrorStr2(self.0)) };
        message.to_string_lossy().into_owned()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `tjInitDecompress` and is destroyed exactly once.
        unsafe { tjDestroy(self.0) };
    }
}

thread_local! {
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Decodes `jpeg` at the smallest DCT scale (1, 1/2, 1/4 or 1/8) whose image is still at
/// least `min_width` × `min_height` (or at full size, when the source is smaller).
pub(super) fn decode_at_least(
    jpeg: &[u8],
    min_width: u32,
    min_height: u32,
) -> Result<RgbImage, String> {
    super::check_signature(jpeg)?;
    let size = c_ulong::try_from(jpeg.len()).map_err(|_| "file too large")?;
    HANDLE.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(Handle::new()?);
        }
        let handle = slot.as_ref().expect("set above");
        let (mut width, mut height, mut subsampling, mut colorspace) = (0, 0, 0, 0);
        // SAFETY: the handle is live, `jpeg` is valid for `size` bytes, and the four
        // out-pointers point at locals.
        let rc = unsafe {
            tjDecompressHeader3(
                handle.0,
                jpeg.as_ptr(),
                size,
                &mut width,
                &mut height,
                &mut subsampling,
                &mut colorspace,
            )
        };
        if rc != 0 {
            return Err(format!("corrupt JPEG header: {}", handle.last_error()));
        }
        if width <= 0 || height <= 0 {
            return Err(format!("corrupt JPEG header: size {width}x{height}"));
        }
        // The same cap as zune-jpeg's default (16384 a side): a corrupt or hostile header
        // must not make us allocate gigabytes.
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(format!(
                "image too large: {width}x{height} (limit {MAX_SIDE} a side)"
            ));
        }
        let denom = [8, 4, 2]
            .into_iter()
            .find(|&d| {
                scaled(width, d) >= min_width as c_int && scaled(height, d) >= min_height as c_int
            })
            .unwrap_or(1);
        let (w, h) = (scaled(width, denom), scaled(height, denom));
        let mut pixels = vec![0u8; w as usize * h as usize * 3];
        // SAFETY: `pixels` holds `h` rows of `3 * w` bytes, the pitch we pass; given
        // `w` × `h` equal to the size of a supported scaling factor, the library writes
        // exactly that image.
        let rc = unsafe {
            tjDecompress2(
                handle.0,
                jpeg.as_ptr(),
                size,
                pixels.as_mut_ptr(),
                w,
                3 * w,
                h,
                TJPF_RGB,
                0,
            )
        };
        // Any non-zero code fails the image, warnings included ("premature end of data"
        // is a warning to libjpeg-turbo, but it means a truncated file here).
        if rc != 0 {
            return Err(format!("corrupt JPEG: {}", handle.last_error()));
        }
        Ok(RgbImage {
            width: w as u32,
            height: h as u32,
            pixels,
        })
    })
}

/// `dimension / denom`, rounded up, as libjpeg-turbo's `TJSCALED` computes it.
fn scaled(dimension: c_int, denom: c_int) -> c_int {
    (dimension + denom - 1) / denom
}
