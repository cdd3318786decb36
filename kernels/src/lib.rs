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
pub fn im2col(g: &Geometry, x0: i8, x: &[i8]) -> Vec<i8> {
    let n = g.oh * g.ow;
    let k = g.cin * g.kh * g.kw;
    let mut cols = vec![x0; k * n];
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut cols[((c * g.kh + ky) * g.kw + kx) * n..][..n];
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ky) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    for ox in 0..g.ow {
                        let ix = (ox * g.sw + kx) as isize - g.pl as isize;
                        if ix >= 0 && ix < g.w as isize {
                            row[oy * g.ow + ox] = src[ix as usize];
                        }
                    }
                }
            }
        }
    }
    cols
}
