//! What the framed link sends for an input (the bytes as read, or the host model's centre crop
//! as JPEG or raw RGB) and what the host makes of it (`host_crop`). Both ends and the tuning
//! commands use these functions: `eval` and `calibrate` score and price the host stage on
//! the payload the link carries (`host_view`), so their figures are those a live run gets.

use crate::link::{Encoding, Welcome};
use crate::model::manifest::InputSpec;
use crate::model::preprocess;
use crate::model::Decoded;
use image::RgbImage;

/// The request's payload in `encoding`, for the host model `w` describes.
pub fn encode_payload(
    encoding: Encoding,
    bytes: &[u8],
    input: &Decoded,
    w: &Welcome,
    quality: u8,
) -> Result<Vec<u8>, String> {
    encode(encoding, bytes, input, w.input.size, w.input.crop_fraction, quality)
}

/// The payload in `encoding` for a host model taking `size` x `size` centre crops of
/// `crop_fraction` of the shorter side.
/// A text input travels as its text (`Encoding::Text`), the UTF-8 the device read, trimmed.
pub fn encode(
    encoding: Encoding,
    bytes: &[u8],
    input: &Decoded,
    size: u32,
    crop_fraction: f64,
    quality: u8,
) -> Result<Vec<u8>, String> {
    match input {
        Decoded::Text(t) if encoding == Encoding::Text => Ok(t.as_bytes().to_vec()),
        Decoded::Text(_) => Err(format!("a text input travels as text, not {encoding}")),
        Decoded::Image(img) => encode_image(encoding, bytes, img, size, crop_fraction, quality),
    }
}

fn encode_image(
    encoding: Encoding,
    bytes: &[u8],
    img: &RgbImage,
    size: u32,
    crop_fraction: f64,
    quality: u8,
) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Original => Ok(bytes.to_vec()),
        Encoding::CropJpeg => crop_jpeg(img, size, crop_fraction, quality),
        Encoding::CropRaw => Ok(preprocess::crop_resize(img, size, crop_fraction).into_raw()),
        Encoding::Text => Err("an image cannot travel as text".into()),
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

/// What the host makes of a payload: the crop its model takes (then normalised). An error
/// says what is wrong with the payload.
pub fn host_crop(encoding: Encoding, payload: &[u8], spec: &InputSpec) -> Result<RgbImage, String> {
    match encoding {
        Encoding::Text => Err("the host model takes images; this payload is text".into()),
        Encoding::Original => {
            let img = preprocess::decode(payload).map_err(|e| e.to_string())?;
            Ok(preprocess::crop_resize(&img, spec.size, spec.crop_fraction))
        }
        Encoding::CropJpeg => {
            let img = preprocess::decode(payload).map_err(|e| e.to_string())?;
            if img.dimensions() != (spec.size, spec.size) {
                let (w, h) = img.dimensions();
                return Err(format!("crop is {w}x{h}, the host model takes {0}x{0}", spec.size));
            }
            Ok(img)
        }
        Encoding::CropRaw => {
            let want = (spec.size * spec.size * 3) as usize;
            if payload.len() != want {
                return Err(format!(
                    "raw crop has {} bytes, the host model takes {want} ({1}x{1}x3)",
                    payload.len(),
                    spec.size
                ));
            }
            RgbImage::from_raw(spec.size, spec.size, payload.to_vec())
                .ok_or_else(|| "raw crop does not fit its size".into())
        }
    }
}

/// How the device sends a forwarded input: the payload's encoding and, for `crop-jpeg`, its
/// quality. `eval` and `calibrate` take it so that they measure the cascade a live run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadSpec {
    pub encoding: Encoding,
    pub jpeg_quality: u8,
}

impl Default for PayloadSpec {
    fn default() -> Self {
        PayloadSpec { encoding: Encoding::CropJpeg, jpeg_quality: 90 }
    }
}

impl PayloadSpec {
    /// The payload for a cascade whose models take `kind`: a text input always travels as
    /// text, whatever image encoding was asked for.
    pub fn for_kind(self, kind: crate::model::manifest::Kind) -> PayloadSpec {
        match kind {
            crate::model::manifest::Kind::Text => PayloadSpec { encoding: Encoding::Text, ..self },
            crate::model::manifest::Kind::Image => self,
        }
    }
}

impl std::fmt::Display for PayloadSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.encoding {
            Encoding::CropJpeg => write!(f, "crop-jpeg q{}", self.jpeg_quality),
            e => write!(f, "{}", e.name()),
        }
    }
}

/// The crop the host model sees for an input the device forwards as `p`: encoded as the
/// device would (`bytes` as read, `img` decoded from them), then decoded as the host does.
pub fn host_view(p: PayloadSpec, bytes: &[u8], img: &RgbImage, spec: &InputSpec) -> Result<RgbImage, String> {
    if p.encoding == Encoding::Original {
        // The host decodes the same bytes the device did.
        return Ok(preprocess::crop_resize(img, spec.size, spec.crop_fraction));
    }
    host_crop(p.encoding, &encode_image(p.encoding, bytes, img, spec.size, spec.crop_fraction, p.jpeg_quality)?, spec)
}
