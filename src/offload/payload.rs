//! What the framed link sends for an input: the bytes as read, or the host model's centre
//! crop as JPEG or raw RGB. `tune` prices the link (calibrate's cost model) with the same
//! encoding, so its byte counts are those a live run sends.

use crate::link::{Encoding, Welcome};
use crate::model::preprocess;
use image::RgbImage;

/// The request's payload in `encoding`, for the host model `w` describes.
pub fn encode_payload(
    encoding: Encoding,
    bytes: &[u8],
    img: &RgbImage,
    w: &Welcome,
    quality: u8,
) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Original => Ok(bytes.to_vec()),
        Encoding::CropJpeg => crop_jpeg(img, w.input.size, w.input.crop_fraction, quality),
        Encoding::CropRaw => Ok(preprocess::crop_resize(img, w.input.size, w.input.crop_fraction).into_raw()),
    }
}

/// The centre crop at `size`, encoded as JPEG at `quality`.
pub fn crop_jpeg(img: &RgbImage, size: u32, crop_fraction: f64, quality: u8) -> Result<Vec<u8>, String> {
    let crop = preprocess::crop_resize(img, size, crop_fraction);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(&crop)
        .map_err(|e| format!("cannot encode the crop as JPEG: {e}"))?;
    Ok(out)
}
