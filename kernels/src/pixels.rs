//! Image preprocessing loops: Pillow's bicubic resampling of 8-bit RGB rows (bit for bit, in
//! fixed point) and the normalisation into a model's float input. They run per pixel, so they
//! live here, optimised in every profile; `edgecascade::preprocess` wraps them around decoded
//! images.

/// Pillow's fixed-point precision for 8-bit resampling.
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = -0.5), support 2.
pub fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel used and the fixed-point weights of the pixels
/// from there on, as Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` make them.
pub struct Coeffs {
    pub bounds: Vec<(usize, usize)>,
    pub weights: Vec<Vec<i32>>,
}

pub fn coeffs(in_size: u32, out_size: u32) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut weights = Vec::with_capacity(out_size as usize);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates towards zero; clamped below at 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|w| *w /= ww);
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        let fixed = k.iter().map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 }).collect();
        bounds.push((xmin, n));
        weights.push(fixed);
    }
    Coeffs { bounds, weights }
}

pub fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's two-pass (horizontal, then vertical) bicubic resampling of the `(left, top, width,
/// height)` region of an RGB image (`src`, rows of `stride` bytes), read in place, to `out_w` x
/// `out_h`, rounding to 8 bits between the passes as Pillow does; a pass whose size does not
/// change is skipped. Returns the output's width, height and pixels. Works
/// on rows of bytes: each output value is the same sum of the same products, taken in the same
/// order, as pixel by pixel (integer sums, no overflow: the partial sums stay under
/// 255 * 1.2 * 2^22), so the pixels are Pillow's still; the vertical pass adds whole rows at a
/// time, which the compiler vectorises.
pub fn resize_region(
    src: &[u8],
    stride: usize,
    (left, top, in_w, in_h): (u32, u32, u32, u32),
    out_w: u32,
    out_h: u32,
) -> (u32, u32, Vec<u8>) {
    let (left, top, in_w, in_h) = (left as usize, top as usize, in_w as usize, in_h as usize);
    let row = |y: usize| &src[(top + y) * stride + left * 3..][..in_w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass: in_h rows of `width` pixels.
    let (width, rows) = if out_w as usize != in_w {
        let c = coeffs(in_w as u32, out_w);
        let row_len = out_w as usize * 3;
        let mut out = vec![0u8; row_len * in_h];
        for (y, orow) in out.chunks_exact_mut(row_len).enumerate() {
            let irow = row(y);
            for (o, (&(xmin, n), k)) in orow.chunks_exact_mut(3).zip(c.bounds.iter().zip(&c.weights)) {
                let mut ss = [half; 3];
                for (p, &w) in irow[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(k) {
                    ss[0] += p[0] as i32 * w;
                    ss[1] += p[1] as i32 * w;
                    ss[2] += p[2] as i32 * w;
                }
                o.copy_from_slice(&[clip8(ss[0]), clip8(ss[1]), clip8(ss[2])]);
            }
        }
        (out_w as usize, out)
    } else {
        (in_w, (0..in_h).flat_map(row).copied().collect())
    };
    let row_len = width * 3;
    // Vertical pass: each output row is a weighted sum of whole input rows.
    let (height, pixels) = if out_h as usize != in_h {
        let c = coeffs(in_h as u32, out_h);
        let mut out = vec![0u8; row_len * out_h as usize];
        let mut acc = vec![0i32; row_len];
        for (orow, (&(ymin, n), k)) in out.chunks_exact_mut(row_len).zip(c.bounds.iter().zip(&c.weights)) {
            acc.fill(half);
            for (irow, &w) in rows[ymin * row_len..(ymin + n) * row_len].chunks_exact(row_len).zip(k) {
                for (a, &p) in acc.iter_mut().zip(irow) {
                    *a += p as i32 * w;
                }
            }
            for (o, &a) in orow.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        (out_h, out)
    } else {
        (in_h as u32, rows)
    };
    (width as u32, height, pixels)
}

/// `(pixel - mean) / std` per channel of RGB pixels, planar (NCHW) or interleaved (NHWC).
pub fn normalise(pixels: &[u8], mean: [f32; 3], std: [f32; 3], planar: bool) -> Vec<f32> {
    let plane = pixels.len() / 3;
    let mut out = vec![0.0f32; plane * 3];
    for (i, p) in pixels.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            let v = (p[ch] as f32 - mean[ch]) / std[ch];
            if planar {
                out[ch * plane + i] = v;
            } else {
                out[i * 3 + ch] = v;
            }
        }
    }
    out
}
