//! The int8 kernels of edgecascade's int8 rewrite (`src/runner/int8.rs` wires them into tract's
//! graph): the requantization stage, a direct depthwise convolution, an int8 im2col, and an
//! AVX2 `vpmaddwd` matrix product. A crate of their own so that they are compiled optimised in
//! every profile (Cargo.toml: `[profile.dev.package.edgecascade-kernels]`), like tract's kernels,
//! while edgecascade's own code stays at opt-level 1 in dev builds. Plain Rust, no tract.

pub mod avx2;

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

    /// The stage of channels `range` only (channel `range.start` becomes 0).
    pub fn channels(&self, range: std::ops::Range<usize>) -> Requant {
        Requant {
            scale: self.scale[range.clone()].to_vec(),
            offset: self.offset[range].to_vec(),
            y0: self.y0,
            lo: self.lo,
            hi: self.hi,
        }
    }

    /// Requantizes one channel's accumulators.
    #[inline(always)]
    pub fn row(&self, c: usize, acc: &[i32], out: &mut [i8]) {
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

/// Depthwise convolution, channel by channel: the plane padded with x0 into i16, split into
/// `sw` column phases so that every tap reads a contiguous run, i16 products summed into a row
/// of i32 accumulators, then requantized.
///
/// `weights` `[channels, kh * kw]`, `bias` per channel (with `-x0 * sum(weights)` folded in).
pub fn depthwise(g: &Geometry, weights: &[i8], bias: &[i32], x0: i8, requant: &Requant, x: &[i8], out: &mut [i8]) {
    // x86_64's baseline (SSE2) has no 32-bit vector multiply: compile the loops a second time
    // for AVX2 and take that copy where the CPU has it (aarch64's baseline NEON has them).
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { depthwise_avx2(g, weights, bias, x0, requant, x, out) };
        return;
    }
    depthwise_lanes(g, weights, bias, x0, requant, x, out)
}

/// Rows wider than 8 outputs take 16 accumulators at a time (two AVX2 registers), narrower
/// ones 8 (the 7 x 7 planes of the last blocks would waste most of 16).
#[inline(always)]
fn depthwise_lanes(g: &Geometry, weights: &[i8], bias: &[i32], x0: i8, requant: &Requant, x: &[i8], out: &mut [i8]) {
    if g.ow > 8 {
        depthwise_body::<16>(g, weights, bias, x0, requant, x, out, block_plain::<16>)
    } else {
        depthwise_body::<8>(g, weights, bias, x0, requant, x, out, block_plain::<8>)
    }
}

/// One block of `LANES` outputs: `bias + sum over taps of w * phases[base + offset ..]`.
/// The last tap of the last row's last block ends at most at `phases`' end (its width covers
/// the rounded-up row and the widest tap), so the slice checks never fail.
#[inline(always)]
fn block_plain<const LANES: usize>(
    phases: &[i16],
    base: usize,
    offsets: &[usize],
    wts: &[i16],
    b: i32,
) -> [i32; LANES] {
    let mut acc = [b; LANES];
    for (&off, &w) in offsets.iter().zip(wts) {
        let s = &phases[base + off..base + off + LANES];
        for l in 0..LANES {
            // |w| <= 128 and |s| <= 128: the product fits an i16.
            acc[l] = acc[l].wrapping_add(w.wrapping_mul(s[l]) as i32);
        }
    }
    acc
}

/// `block_plain` in AVX2: 16 i16 products per `vpmullw`, widened into two registers of i32
/// accumulators that stay in registers across every tap.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block16_avx2(phases: &[i16], base: usize, offsets: &[usize], wts: &[i16], b: i32) -> [i32; 16] {
    use std::arch::x86_64::*;
    let mut lo = _mm256_set1_epi32(b);
    let mut hi = lo;
    for (&off, &w) in offsets.iter().zip(wts) {
        let s = &phases[base + off..base + off + 16];
        let p = _mm256_mullo_epi16(_mm256_loadu_si256(s.as_ptr() as *const __m256i), _mm256_set1_epi16(w));
        lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
        hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(p)));
    }
    let mut acc = [0i32; 16];
    _mm256_storeu_si256(acc.as_mut_ptr() as *mut __m256i, lo);
    _mm256_storeu_si256(acc.as_mut_ptr().add(8) as *mut __m256i, hi);
    acc
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block8_avx2(phases: &[i16], base: usize, offsets: &[usize], wts: &[i16], b: i32) -> [i32; 8] {
    use std::arch::x86_64::*;
    let mut acc8 = _mm256_set1_epi32(b);
    for (&off, &w) in offsets.iter().zip(wts) {
        let s = &phases[base + off..base + off + 8];
        let p = _mm_mullo_epi16(_mm_loadu_si128(s.as_ptr() as *const __m128i), _mm_set1_epi16(w));
        acc8 = _mm256_add_epi32(acc8, _mm256_cvtepi16_epi32(p));
    }
    let mut acc = [0i32; 8];
    _mm256_storeu_si256(acc.as_mut_ptr() as *mut __m256i, acc8);
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_avx2(
    g: &Geometry,
    weights: &[i8],
    bias: &[i32],
    x0: i8,
    requant: &Requant,
    x: &[i8],
    out: &mut [i8],
) {
    // SAFETY (both blocks): this function runs only where the CPU has AVX2.
    if g.ow > 8 {
        depthwise_body::<16>(g, weights, bias, x0, requant, x, out, |p, b, o, w, c| unsafe {
            block16_avx2(p, b, o, w, c)
        })
    } else {
        depthwise_body::<8>(g, weights, bias, x0, requant, x, out, |p, b, o, w, c| unsafe {
            block8_avx2(p, b, o, w, c)
        })
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_body<const LANES: usize>(
    g: &Geometry,
    weights: &[i8],
    bias: &[i32],
    x0: i8,
    requant: &Requant,
    x: &[i8],
    out: &mut [i8],
    block: impl Fn(&[i16], usize, &[usize], &[i16], i32) -> [i32; LANES],
) {
    let g = *g;
    let taps = g.kh * g.kw;
    let (hp, wp) = ((g.oh - 1) * g.sh + g.kh, (g.ow - 1) * g.sw + g.kw);
    // Output rows are computed LANES at a time (accumulators in registers across every tap);
    // the phases are wide enough for the last block's reads past the row's end.
    let ow_blocks = g.ow.div_ceil(LANES) * LANES;
    // Phase `f` holds padded columns f, f + sw, f + 2 sw, ...: `pw` of them.
    let pw = wp.div_ceil(g.sw).max(ow_blocks + (g.kw - 1) / g.sw);
    let mut phases = vec![x0 as i16; g.sw * hp * pw];
    // Each tap's offset in `phases` for output row 0, column 0.
    let offsets: Vec<usize> = (0..taps).map(|t| ((t % g.kw % g.sw) * hp + t / g.kw) * pw + (t % g.kw) / g.sw).collect();
    let mut wts = vec![0i16; taps];
    let mut row_acc = vec![0i32; ow_blocks];
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        phases.fill(x0 as i16);
        for iy in 0..g.h {
            let py = iy + g.pt;
            if py >= hp {
                break;
            }
            let src = &plane[iy * g.w..][..g.w];
            if g.sw == 1 {
                // One phase: the row as it is, after the left pad.
                let dst = &mut phases[py * pw + g.pl..][..g.w.min(pw - g.pl.min(pw))];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v as i16;
                }
                continue;
            }
            for f in 0..g.sw {
                // The first input column landing in phase f, then every sw-th.
                let ix0 = (f + g.sw - g.pl % g.sw) % g.sw;
                if ix0 >= g.w {
                    continue;
                }
                // Bounded by the phase row: columns past it are never read.
                let start = (ix0 + g.pl) / g.sw;
                let dst = &mut phases[(f * hp + py) * pw + start..][..pw.saturating_sub(start)];
                if g.sw == 2 {
                    // Every other input column: pairs, without the strided iterator's
                    // per-element bookkeeping.
                    let pairs = src[ix0..].chunks_exact(2);
                    let last = pairs.remainder().first().copied();
                    let n = pairs.len();
                    for (d, p) in dst.iter_mut().zip(pairs) {
                        *d = p[0] as i16;
                    }
                    if let (Some(v), Some(d)) = (last, dst.get_mut(n)) {
                        *d = v as i16;
                    }
                    continue;
                }
                for (d, &v) in dst.iter_mut().zip(src[ix0..].iter().step_by(g.sw)) {
                    *d = v as i16;
                }
            }
        }
        for (t, w) in wts.iter_mut().enumerate() {
            *w = weights[c * taps + t] as i16;
        }
        let b = bias[c];
        for oy in 0..g.oh {
            let row = oy * g.sh * pw;
            let out_row = &mut out[(c * g.oh + oy) * g.ow..][..g.ow];
            for ox in (0..g.ow).step_by(LANES) {
                row_acc[ox..ox + LANES].copy_from_slice(&block(&phases, row + ox, &offsets, &wts, b));
            }
            // One requantization pass over the whole row (long, vectorised) rather than one
            // call per block.
            requant.row(c, &row_acc[..g.ow], out_row);
        }
    }
}
