//! The int8 kernels of edgecascade's int8 rewrite (`src/runner/int8.rs` wires them into tract's
//! graph): the requantization stage, matrix products ([`gemm`]), direct depthwise convolutions
//! ([`depthwise`]), an int8 im2col and the int8 addition, each with a portable version and
//! versions for the instruction sets of the CPUs edgecascade runs on (AVX2, AVX-512 and
//! AVX-VNNI on x86_64; NEON with and without the dot product on aarch64), picked at run time.
//! Every version gives the same int8 outputs bit for bit (the tests in each module check them
//! against a plain definition on every shape of EfficientNet-Lite0); which is fastest depends
//! on the CPU and the shape, so the caller times them. A crate of its own so that it is
//! compiled optimised in every profile (Cargo.toml: `[profile.dev.package.edgecascade-kernels]`),
//! like tract's kernels, while edgecascade's own code stays at opt-level 1 in dev builds. Plain
//! Rust (and a few lines of inline assembly where an instruction has no stable intrinsic), no
//! tract.

pub mod avx2;
pub mod avx512;
pub mod depthwise;
pub mod gemm;
pub mod neon;
pub mod pixels;
pub mod vnni;

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift;

    /// The im2col of a convolution, element by element (the definition).
    fn im2col_reference(g: &Geometry, x0: i8, x: &[i8]) -> Vec<i8> {
        let n = g.oh * g.ow;
        let mut cols = vec![0; g.cin * g.kh * g.kw * n];
        for c in 0..g.cin {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = (oy * g.sh + ky) as isize - g.pt as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pl as isize;
                            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                            cols[((c * g.kh + ky) * g.kw + kx) * n + oy * g.ow + ox] =
                                if inside { x[(c * g.h + iy as usize) * g.w + ix as usize] } else { x0 };
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn im2col_equals_its_definition() {
        let mut rnd = xorshift(5);
        // (c, h, w, k, s, pt, pl, pb, pr): Lite0's stem (TensorFlow "same" at stride 2), odd
        // sizes, pads wider than the kernel's reach, stride 3.
        for (c, h, w, k, s, pt, pl, pb, pr) in [
            (3usize, 224usize, 224usize, 3usize, 2usize, 0usize, 0usize, 1usize, 1usize),
            (2, 7, 9, 3, 1, 1, 1, 1, 1),
            (1, 5, 6, 5, 2, 2, 2, 2, 2),
            (2, 4, 4, 3, 3, 3, 3, 3, 3),
            (1, 1, 1, 3, 1, 1, 1, 1, 1),
            (3, 10, 11, 1, 2, 0, 0, 0, 0),
        ] {
            let oh = (h + pt + pb - k) / s + 1;
            let ow = (w + pl + pr - k) / s + 1;
            let g = Geometry { cin: c, h, w, kh: k, kw: k, sh: s, sw: s, pt, pl, oh, ow };
            let x: Vec<i8> = (0..c * h * w).map(|_| rnd()).collect();
            assert_eq!(im2col(&g, -9, &x), im2col_reference(&g, -9, &x), "{g:?}");
        }
    }

    #[test]
    fn quantize_and_dequantize_are_onnx_definitions() {
        let xs: Vec<f32> =
            (-3000..3000).map(|i| i as f32 * 0.0173).chain([0.5, -0.5, 1.5, 2.5, 1e9, -1e9, f32::MAX]).collect();
        for (inv, y0) in [(1.0f32, 0i32), (7.3, -5), (0.37, 12)] {
            let mut got = vec![0i8; xs.len()];
            quantize(&xs, inv, y0, &mut got);
            for (x, g) in xs.iter().zip(&got) {
                // ONNX: saturate(round_half_even(x / scale) + zero_point), here with 1 / scale.
                let want = ((x * inv).round_ties_even() as i64).saturating_add(y0 as i64).clamp(-128, 127) as i8;
                assert_eq!(*g, want, "x={x} inv={inv} y0={y0}");
            }
            let q: Vec<i8> = (-128..=127).collect();
            let mut back = vec![0f32; q.len()];
            dequantize(&q, 0.02, y0, &mut back);
            assert!(q.iter().zip(&back).all(|(&v, &f)| f == (v as i32 - y0) as f32 * 0.02));
        }
    }
}

pub use depthwise::{Depthwise, DwKernel};
pub use gemm::{Gemm, GemmKernel, Unavailable};

/// `out = clamp(round_half_even(a * ka + b * kb + c) + y0, lo, hi)`, element-wise: the int8
/// addition of a residual connection with its requantization.
#[allow(clippy::too_many_arguments)]
pub fn add(a: &[i8], b: &[i8], ka: f32, kb: f32, c: f32, y0: i32, lo: i32, hi: i32, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { add_avx2(a, b, ka, kb, c, y0, lo, hi, out) };
        return;
    }
    add_body(a, b, ka, kb, c, y0, lo, hi, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn add_avx2(a: &[i8], b: &[i8], ka: f32, kb: f32, c: f32, y0: i32, lo: i32, hi: i32, out: &mut [i8]) {
    add_body(a, b, ka, kb, c, y0, lo, hi, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_body(a: &[i8], b: &[i8], ka: f32, kb: f32, c: f32, y0: i32, lo: i32, hi: i32, out: &mut [i8]) {
    let (lo, hi) = ((lo - y0) as f32, (hi - y0) as f32);
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = requantize(x as f32 * ka + y as f32 * kb + c, lo, hi, y0);
    }
}

/// `clamp(round_half_even(v), lo, hi) + y0` as int8, where `lo` and `hi` are the int8 bounds
/// minus `y0` (so the result fits an i8): the last step of every requantization, written to
/// vectorise inside the callers' loops.
#[inline(always)]
fn requantize(v: f32, lo: f32, hi: f32, y0: i32) -> i8 {
    // Adding and subtracting 1.5 * 2^23 rounds a float below 2^22 to the nearest integer,
    // ties to even (the default rounding mode), in two vectorisable additions.
    const MAGIC: f32 = 12_582_912.0;
    // Compare-and-select rather than clamp or max/min: no NaN or ordering checks (a NaN
    // becomes lo), so the loop vectorises to plain vmaxps/vminps.
    let v = if v > lo { v } else { lo };
    let v = if v < hi { v } else { hi };
    // SAFETY: v lies within [lo, hi], small integers once rounded: no overflow, no NaN
    // (a plain `as` would add the saturation checks that keep the loop scalar).
    let r: i32 = unsafe { ((v + MAGIC) - MAGIC).to_int_unchecked() };
    (r + y0) as i8
}

/// The output stage: `clamp(round_half_even(acc * scale[c]) + y0, lo, hi)` per channel.
#[derive(Debug, Clone)]
pub struct Requant {
    pub scale: Vec<f32>,
    /// Added after scaling (0 except for channels whose bias does not fit the accumulators).
    pub offset: Vec<f32>,
    pub y0: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Requant {
    pub fn new(acc_scale: &[f32], inv_y_scale: f32, y0: i32, lo: f32, hi: f32) -> Requant {
        let (lo, hi) = Requant::bounds(inv_y_scale, y0, lo, hi);
        let scale: Vec<f32> = acc_scale.iter().map(|s| s * inv_y_scale).collect();
        Requant { offset: vec![0.0; scale.len()], scale, y0, lo, hi }
    }

    /// Float clip bounds (infinite: none) quantized as QuantizeLinear would quantize them (it
    /// is monotonic, so clipping before it equals clamping after it), within int8.
    pub fn bounds(inv_y_scale: f32, y0: i32, lo: f32, hi: f32) -> (i32, i32) {
        let q = |v: f32| ((v * inv_y_scale).round_ties_even() as i64 + y0 as i64).clamp(-128, 127) as i32;
        (if lo.is_finite() { q(lo) } else { -128 }, if hi.is_finite() { q(hi) } else { 127 })
    }

    /// Requantizes `[rows, n]` accumulators of consecutive channels from `first`.
    pub fn rows(&self, first: usize, acc: &[i32], n: usize, out: &mut [i8]) {
        for (c, (a, o)) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
            self.row(first + c, a, o);
        }
    }

    /// Requantizes one channel's accumulators. (Not inlined into other crates: it runs
    /// compiled here, optimised, in every profile.)
    pub fn row(&self, c: usize, acc: &[i32], out: &mut [i8]) {
        self.row_inline(c, acc, out)
    }

    /// [`Requant::row`], inlined into the kernels of this crate (and so compiled with their
    /// instruction set).
    #[inline(always)]
    pub(crate) fn row_inline(&self, c: usize, acc: &[i32], out: &mut [i8]) {
        let (s, off) = (self.scale[c], self.offset[c]);
        let lo = (self.lo - self.y0) as f32;
        let hi = (self.hi - self.y0) as f32;
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = requantize(a as f32 * s + off, lo, hi, self.y0);
        }
    }
}

/// Where a convolution reads: input channels and plane, kernel, strides, leading pads, output
/// plane.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

/// `[cin * kh * kw, oh * ow]` int8 columns of a convolution's input (padding filled with x0).
/// Per output row, the columns whose tap falls inside the input are found once, then copied
/// as a run (stride 1) or gathered every `sw` bytes.
pub fn im2col(g: &Geometry, x0: i8, x: &[i8]) -> Vec<i8> {
    let n = g.oh * g.ow;
    let k = g.cin * g.kh * g.kw;
    let mut cols = vec![x0; k * n];
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut cols[((c * g.kh + ky) * g.kw + kx) * n..][..n];
                // Output columns ox with 0 <= ox * sw + kx - pl < w.
                let first = g.pl.saturating_sub(kx).div_ceil(g.sw);
                let end = (g.w + g.pl).saturating_sub(kx).div_ceil(g.sw).min(g.ow);
                if first >= end {
                    continue;
                }
                for oy in 0..g.oh {
                    let Some(iy) = (oy * g.sh + ky).checked_sub(g.pt).filter(|&iy| iy < g.h) else { continue };
                    let src = &plane[iy * g.w + first * g.sw + kx - g.pl..][..(end - first - 1) * g.sw + 1];
                    let dst = &mut row[oy * g.ow + first..oy * g.ow + end];
                    if g.sw == 1 {
                        dst.copy_from_slice(src);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src.iter().step_by(g.sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
    cols
}

/// QuantizeLinear to int8 with one scale: `clamp(round_half_even(x * inv_scale) + y0)` (a NaN
/// becomes -128), vectorised.
pub fn quantize(x: &[f32], inv_scale: f32, y0: i32, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { quantize_avx2(x, inv_scale, y0, out) };
        return;
    }
    quantize_body(x, inv_scale, y0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], inv_scale: f32, y0: i32, out: &mut [i8]) {
    quantize_body(x, inv_scale, y0, out)
}

#[inline(always)]
fn quantize_body(x: &[f32], inv_scale: f32, y0: i32, out: &mut [i8]) {
    let (lo, hi) = ((-128 - y0) as f32, (127 - y0) as f32);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = requantize(v * inv_scale, lo, hi, y0);
    }
}

/// DequantizeLinear from int8 with one scale: `(x - x0) * scale`, vectorised.
pub fn dequantize(x: &[i8], scale: f32, x0: i32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { dequantize_avx2(x, scale, x0, out) };
        return;
    }
    dequantize_body(x, scale, x0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_avx2(x: &[i8], scale: f32, x0: i32, out: &mut [f32]) {
    dequantize_body(x, scale, x0, out)
}

#[inline(always)]
fn dequantize_body(x: &[i8], scale: f32, x0: i32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v as i32 - x0) as f32 * scale;
    }
}
