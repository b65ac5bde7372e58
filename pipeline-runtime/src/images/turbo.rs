//! libjpeg-turbo's TurboJPEG API (the 2.x functions, in 2.0 and later), linked from the
//! system library (`libturbojpeg0-dev` on Debian): decompress to RGB at a DCT scaling
//! factor. Errors come back as return codes (no `longjmp` across Rust frames).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use super::header::Header;
use super::Image;

const TJPF_RGB: c_int = 0;

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

/// A decompressor: cheap to keep, not safe to share, so one per thread.
struct Handle(*mut c_void);

impl Handle {
    fn new() -> Result<Self, String> {
        // SAFETY: no arguments; a null return is checked below.
        let raw = unsafe { tjInitDecompress() };
        if raw.is_null() {
            return Err("cannot create a decompressor".into());
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

/// Decodes `jpeg`, whose header (our parser's) passed the limits, at `1 / denominator` of
/// its size (1, 2, 4 or 8; sides rounded up, as libjpeg-turbo's `TJSCALED`).
pub(super) fn decode(jpeg: &[u8], header: &Header, denominator: u32) -> Result<Image, String> {
    let size = c_ulong::try_from(jpeg.len()).map_err(|_| "file too large")?;
    let denominator = match denominator {
        1 | 2 | 4 | 8 => denominator as c_int,
        other => return Err(format!("no DCT scale 1/{other}")),
    };
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
        // The limits were checked on our parser's reading; libjpeg-turbo must agree with it,
        // or what it allocates was never checked.
        if (width, height) != (header.width as c_int, header.height as c_int) {
            return Err(format!(
                "corrupt JPEG: frame header says {width}x{height}, first frame header said \
                 {}x{}",
                header.width, header.height
            ));
        }
        let scaled = |side: c_int| (side + denominator - 1) / denominator;
        let (w, h) = (scaled(width), scaled(height));
        let mut pixels = vec![0u8; w as usize * h as usize * 3];
        // SAFETY: `pixels` holds `h` rows of `3 * w` bytes, the pitch we pass; for `w` × `h`
        // equal to the size at a supported scaling factor, the library writes exactly that.
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
        // Any non-zero code fails the image, warnings included: "premature end of data" is
        // a warning to libjpeg-turbo, but a truncated file here.
        if rc != 0 {
            return Err(format!("corrupt JPEG: {}", handle.last_error()));
        }
        Ok(Image {
            width: w as u32,
            height: h as u32,
            pixels,
        })
    })
}
