//! Image input: decode JPEG or PNG, take the centre crop, resize it with the same bicubic
//! filter as Pillow (bit for bit, so the Python reference's accuracy carries over), and
//! normalise into the tensor a model's manifest asks for. No file I/O: callers pass bytes.

use crate::model::manifest::{InputSpec, Layout};
use edgecascade_kernels::pixels;
use image::RgbImage;

/// Why an image could not become a tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image is empty ({0}x{1} pixels)")]
    Empty(u32, u32),
    #[error("image is {width}x{height} pixels, more than the {MAX_PIXELS}-pixel limit")]
    TooLarge { width: usize, height: usize },
    /// The decoder got through, but the data was cut short or corrupt (libjpeg's warnings):
    /// the pixels are partly made up.
    #[error("damaged image: {0}")]
    Damaged(String),
}

/// The largest image decoded, in pixels (a header can claim 65535 x 65535).
pub const MAX_PIXELS: usize = 100_000_000;

/// Decodes JPEG or PNG bytes (the format is guessed from the bytes) into 8-bit RGB, as
/// Pillow's `Image.open(..).convert("RGB")` does: JPEG through libjpeg-turbo's algorithms
/// (mozjpeg), so the pixels are Pillow's; grey images replicated over the channels, alpha
/// dropped. A JPEG that libjpeg cannot convert to RGB (CMYK) falls back to the image crate.
///
/// An image the decoder reports damaged (a JPEG cut short, or with corrupt data: libjpeg's
/// warnings) is an error, [`PreprocessError::Damaged`]: its missing part would be made up and
/// answered with confidence. [`decode_damaged`] decodes it anyway.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    match decode_damaged(bytes)? {
        (img, None) => Ok(img),
        (_, Some(why)) => Err(PreprocessError::Damaged(why)),
    }
}

/// [`decode`], but a damaged image is decoded as far as it goes (as Pillow does), with what
/// was wrong with it.
pub fn decode_damaged(bytes: &[u8]) -> Result<(RgbImage, Option<String>), PreprocessError> {
    let (rgb, damage) = if bytes.starts_with(&[0xFF, 0xD8]) {
        match decode_jpeg(bytes) {
            Ok(decoded) => decoded,
            Err(e @ PreprocessError::TooLarge { .. }) => return Err(e),
            Err(e) => (decode_other(bytes).map_err(|_| e)?, None),
        }
    } else {
        (decode_other(bytes)?, None)
    };
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(PreprocessError::Empty(rgb.width(), rgb.height()));
    }
    Ok((rgb, damage))
}

fn decode_other(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    let img = image::load_from_memory(bytes).map_err(|e| PreprocessError::Decode(e.to_string()))?;
    Ok(img.to_rgb8())
}

fn decode_jpeg(bytes: &[u8]) -> Result<(RgbImage, Option<String>), PreprocessError> {
    // libjpeg reports fatal errors by unwinding out of its callbacks; catch them here. Its
    // warnings (data cut short, corrupt entropy data) go to `jpeg_warnings`.
    JPEG_WARNINGS.with(|w| w.borrow_mut().clear());
    let result = std::panic::catch_unwind(|| -> Result<RgbImage, PreprocessError> {
        let io = |e: std::io::Error| PreprocessError::Decode(e.to_string());
        let d = mozjpeg::Decompress::with_err(jpeg_error_mgr()).from_mem(bytes).map_err(io)?;
        let (w, h) = d.size();
        if w.saturating_mul(h) > MAX_PIXELS {
            return Err(PreprocessError::TooLarge { width: w, height: h });
        }
        let mut started = d.rgb().map_err(io)?;
        let pixels = started.read_scanlines::<u8>().map_err(io)?;
        // Trailing bytes after the image are no reason to drop it (Pillow keeps it too).
        let _ = started.finish();
        RgbImage::from_raw(w as u32, h as u32, pixels)
            .ok_or_else(|| PreprocessError::Decode("the JPEG decoder returned fewer pixels than its size".into()))
    });
    let warnings = JPEG_WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()));
    match result {
        Ok(r) => r.map(|img| (img, (!warnings.is_empty()).then(|| warnings.join("; ")))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the JPEG decoder failed".into());
            Err(PreprocessError::Decode(msg.trim_start_matches("libjpeg fatal error: ").to_owned()))
        }
    }
}

thread_local! {
    /// libjpeg's warnings about the image being decoded on this thread.
    static JPEG_WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// libjpeg's error manager as mozjpeg sets it up (fatal errors unwind), except that warnings
/// (message level -1: "Premature end of JPEG file", "Corrupt JPEG data: ...") are kept.
fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager; the callbacks replaced
    // below have the signatures libjpeg calls them with.
    unsafe {
        let mut err: mozjpeg_sys::jpeg_error_mgr = std::mem::zeroed();
        mozjpeg_sys::jpeg_std_error(&mut err);
        err.error_exit = Some(jpeg_fatal);
        err.emit_message = Some(jpeg_message);
        err
    }
}

/// libjpeg's message for its current code.
fn jpeg_message_text(cinfo: &mut mozjpeg_sys::jpeg_common_struct) -> String {
    // SAFETY: `cinfo.err` is the manager made by `jpeg_error_mgr`; format_message writes its
    // NUL-terminated message into the 80-byte buffer (the binding declares it read-only; the
    // function is called as the mutable one it is, as mozjpeg itself does).
    unsafe {
        let err = &*cinfo.err;
        let mut buf = [0u8; 80];
        match err.format_message {
            Some(f) => {
                type Format = unsafe extern "C-unwind" fn(&mut mozjpeg_sys::jpeg_common_struct, &mut [u8; 80]);
                let f: Format = std::mem::transmute(f);
                f(cinfo, &mut buf);
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..end]).into_owned()
            }
            None => format!("libjpeg message {}", err.msg_code),
        }
    }
}

extern "C-unwind" fn jpeg_message(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: std::os::raw::c_int) {
    if level < 0 {
        let msg = jpeg_message_text(cinfo);
        JPEG_WARNINGS.with(|w| w.borrow_mut().push(msg));
    }
}

extern "C-unwind" fn jpeg_fatal(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let msg = jpeg_message_text(cinfo);
    std::panic::resume_unwind(Box::new(format!("libjpeg fatal error: {msg}")));
}

/// The centred square of side `round(shorter side * crop_fraction)`, resized to
/// `size` x `size` with Pillow's bicubic filter.
pub fn crop_resize(img: &RgbImage, size: u32, crop_fraction: f64) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = ((w.min(h) as f64 * crop_fraction + 0.5).floor() as u32).clamp(1, w.min(h));
    let (left, top) = ((w - side) / 2, (h - side) / 2);
    resize_region(img, (left, top, side, side), size, size)
}

/// Resizes with Pillow's two-pass (horizontal, then vertical) bicubic resampling, rounding
/// to 8 bits between the passes as Pillow does. A pass whose size does not change is skipped.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_region(img, (0, 0, img.width(), img.height()), out_w, out_h)
}

/// `resize_bicubic` of the `(left, top, width, height)` region of `img`, read in place (the
/// loops: `edgecascade_kernels::pixels`).
fn resize_region(img: &RgbImage, region: (u32, u32, u32, u32), out_w: u32, out_h: u32) -> RgbImage {
    let (w, h, pixels) = pixels::resize_region(img.as_raw(), img.width() as usize * 3, region, out_w, out_h);
    RgbImage::from_raw(w, h, pixels).expect("rows of whole pixels")
}

/// `(pixel - mean) / std` per channel, in the layout the model takes, batch 1.
pub fn normalise(img: &RgbImage, mean: [f32; 3], std: [f32; 3], layout: Layout) -> Vec<f32> {
    pixels::normalise(img.as_raw(), mean, std, layout == Layout::Nchw)
}

/// The whole path from a decoded image to a model's input tensor.
pub fn to_tensor(img: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let resized = crop_resize(img, spec.size, spec.crop_fraction);
    normalise(&resized, spec.mean, spec.std, spec.layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecascade_kernels::pixels::{bicubic, clip8, coeffs, PRECISION_BITS};

    #[test]
    fn bicubic_kernel_values() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert!((bicubic(0.5) - 0.5625).abs() < 1e-12);
        assert!((bicubic(1.5) + 0.0625).abs() < 1e-12);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(256, 224), (227, 260), (100, 300), (7, 3)] {
            let c = coeffs(i, o);
            for k in &c.weights {
                let s: i64 = k.iter().map(|&w| w as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o}: {s}");
            }
        }
    }

    #[test]
    fn flat_image_stays_flat() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let out = crop_resize(&img, 16, 0.875);
        assert_eq!(out.dimensions(), (16, 16));
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }

    #[test]
    fn crop_is_centred_and_sized_from_the_shorter_side() {
        // 40x20: side = round(20 * 0.5) = 10, left 15, top 5. Mark that square.
        let mut img = RgbImage::from_pixel(40, 20, image::Rgb([0, 0, 0]));
        for y in 5..15 {
            for x in 15..25 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let out = crop_resize(&img, 10, 0.5);
        assert!(out.pixels().all(|p| p.0 == [255, 255, 255]));
    }

    #[test]
    fn normalise_layouts() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([127, 255, 0]));
        img.put_pixel(1, 0, image::Rgb([1, 2, 3]));
        let m = [127.0; 3];
        let s = [128.0; 3];
        let nchw = normalise(&img, m, s, Layout::Nchw);
        assert_eq!(nchw, vec![0.0, -126.0 / 128.0, 1.0, -125.0 / 128.0, -127.0 / 128.0, -124.0 / 128.0]);
        let nhwc = normalise(&img, m, s, Layout::Nhwc);
        assert_eq!(nhwc[0..3], [0.0, 1.0, -127.0 / 128.0]);
    }

    /// Pillow's two passes, pixel by pixel, as written first: the reference `resize_region`
    /// must equal value for value.
    fn reference_resize(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
        let (in_w, in_h) = img.dimensions();
        let half = 1i32 << (PRECISION_BITS - 1);
        let mut cur = img.clone();
        if out_w != in_w {
            let c = coeffs(in_w, out_w);
            let mut out = RgbImage::new(out_w, in_h);
            for y in 0..in_h {
                for (xx, ((xmin, _), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
                    let mut ss = [half; 3];
                    for (x, &w) in k.iter().enumerate() {
                        let p = cur.get_pixel((xmin + x) as u32, y);
                        for ch in 0..3 {
                            ss[ch] += p[ch] as i32 * w;
                        }
                    }
                    out.put_pixel(xx as u32, y, image::Rgb([clip8(ss[0]), clip8(ss[1]), clip8(ss[2])]));
                }
            }
            cur = out;
        }
        if out_h != in_h {
            let c = coeffs(in_h, out_h);
            let mut out = RgbImage::new(cur.width(), out_h);
            for (yy, ((ymin, _), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
                for x in 0..cur.width() {
                    let mut ss = [half; 3];
                    for (y, &w) in k.iter().enumerate() {
                        let p = cur.get_pixel(x, (ymin + y) as u32);
                        for ch in 0..3 {
                            ss[ch] += p[ch] as i32 * w;
                        }
                    }
                    out.put_pixel(x, yy as u32, image::Rgb([clip8(ss[0]), clip8(ss[1]), clip8(ss[2])]));
                }
            }
            cur = out;
        }
        cur
    }

    #[test]
    fn row_wise_resize_equals_the_pixel_by_pixel_reference() {
        // Noise with hard edges (the values that clip), in sizes that shrink, grow, keep one
        // side, and crops off centre.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (w, h) in [(37, 23), (300, 200), (64, 64), (1, 5), (227, 227)] {
            let img = RgbImage::from_fn(w, h, |_, _| {
                let v = next();
                let edge = if v & 1 == 0 { 0 } else { 255 };
                image::Rgb([edge, (v >> 8) as u8, (v >> 16) as u8])
            });
            for (ow, oh) in [(16, 16), (224, 224), (w, 11), (9, h), (w, h), (3, 1)] {
                assert_eq!(resize_bicubic(&img, ow, oh), reference_resize(&img, ow, oh), "{w}x{h} -> {ow}x{oh}");
            }
            for frac in [0.875, 224.0 / 256.0, 0.5, 1.0] {
                let side = ((w.min(h) as f64 * frac + 0.5).floor() as u32).clamp(1, w.min(h));
                let crop = image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
                assert_eq!(crop_resize(&img, 20, frac), reference_resize(&crop, 20, 20), "{w}x{h} crop {frac}");
            }
        }
    }

    #[test]
    fn undecodable_bytes_are_an_error() {
        assert!(matches!(decode(b"not an image"), Err(PreprocessError::Decode(_))));
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).is_err());
    }
}
