//! AVX2 kernels (x86_64).
//!
//! The matrix product, for CPUs with AVX2 but no VNNI, where tract-linalg's int8 kernel
//! (`avx2_mmm_i32_8x8`: bytes widened to i16, `vpmullw`, widened again to i32, added) does
//! about half the multiply-accumulates per instruction of its float kernels: `vpmaddwd`,
//! operands widened to i16 once, then one instruction multiplies 16 pairs and adds each pair
//! into an i32 lane, exactly (|i8 x i8| sums of two fit an i32 with room to spare). Weights
//! `[m, k]` are packed once as 4-row panels of i16 pairs along k; activations `[k, n]` are
//! packed per call as 16-column panels of i16 pairs. The 4 x 16 tile's accumulators (8 ymm
//! registers) get the bias and the requantization in the kernel's epilogue, and only int8
//! values are written. One column (a classifier) runs a matrix-vector product on the same
//! packed weights.
//!
//! The depthwise convolution, for the same CPUs: `vpmaddwd` on pairs of horizontally adjacent
//! taps (`kx = 2p, 2p + 1`; the second weight 0 past an odd kernel's width), 16 multiplies per
//! instruction and no widening of the products, where `vpmullw` and two widening adds made 16
//! in three. Per channel the plane is written out padded, as i16 (its borders, the input's zero
//! point, once per call; the next channel's while this one's is read): the pair under a lane's
//! taps is then one 32-bit word of it, and 8 of them one load. At stride 2 a register holds 8
//! consecutive outputs of a row (their words are consecutive); at stride 1 a pair of registers
//! holds 16, the even ones then the odd ones (each register's words consecutive again), and a
//! row of at most 8 fits one register, even outputs in its low half and odd ones in its high
//! half (two 16-byte loads). A tile of 2 or 4 output rows by up to 4 registers keeps its
//! accumulators in registers; each input word vector is loaded once and multiplied into every
//! accumulator whose kernel rows cover it. Then 4 registers at a time are requantized in
//! registers, exactly as [`crate::Requant::row`], packed to 32 bytes, put in output order and
//! stored straight into the NCHW output: a row's last block stores its lanes past the row's end
//! too, where outputs stored later go (blocks run right to left), so that rows of 7 or 14 waste
//! no stores. Other geometries (kernels other than 3 x 3 and 5 x 5, strides other than 1 and
//! 2) run the shared driver of [`crate::depthwise`] with `vpmullw` blocks.

use crate::Requant;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 4;
pub const NR: usize = 16;

/// Weights packed for [`gemm`]: per panel of `MR` rows, per pair of k, the `MR` rows' pairs
/// `(w[r][2p], w[r][2p + 1])` as two i16 in one u32.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub m: usize,
    pub k: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    data: Vec<u32>,
}

fn pair(a: i8, b: i8) -> u32 {
    (a as i16 as u16 as u32) | ((b as i16 as u16 as u32) << 16)
}

impl PackedWeights {
    pub fn new(weights: &[i8], m: usize, k: usize) -> PackedWeights {
        let kp = k.div_ceil(2);
        let panels = m.div_ceil(MR);
        let mut data = vec![0u32; panels * kp * MR];
        let at = |r: usize, c: usize| if r < m && c < k { weights[r * k + c] } else { 0 };
        for p in 0..panels {
            for q in 0..kp {
                for r in 0..MR {
                    data[(p * kp + q) * MR + r] = pair(at(p * MR + r, 2 * q), at(p * MR + r, 2 * q + 1));
                }
            }
        }
        PackedWeights { m, k, data }
    }
}

/// Whether [`gemm`] can run here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How many `MR`-row panels `m` rows make.
pub fn panels(m: usize) -> usize {
    m.div_ceil(MR)
}

/// [`gemm`] for the rows of weight panels `range` only (rows `range.start * MR` up to
/// `min(m, range.end * MR)`), written to `out`, which holds just those rows: for splitting a
/// product between threads.
///
/// # Panics
/// If AVX2 is not available or the sizes do not match.
#[allow(clippy::too_many_arguments)]
pub fn gemm_panels(
    w: &PackedWeights,
    range: std::ops::Range<usize>,
    x: &[i8],
    n: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    assert!(available(), "AVX2 is not available");
    let rows = (range.start * MR).min(w.m)..(range.end * MR).min(w.m);
    assert!(x.len() == w.k * n && out.len() == rows.len() * n && bias.len() == w.m && range.end <= panels(w.m));
    #[cfg(target_arch = "x86_64")]
    unsafe {
        gemm_avx2(w, range, x, n, bias, requant, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (requant, out);
}

/// The product with a single column (`n = 1`, a classifier's Gemm) for rows `rows`, on the
/// same packed weights as [`gemm_panels`] without its 16-column panels (15 of 16 columns would
/// be padding): `out[r - rows.start] = requant(r, bias[r] + dot(w[r], x))`.
///
/// # Panics
/// If AVX2 is not available or the sizes do not match.
pub fn matvec_rows(
    w: &PackedWeights,
    rows: std::ops::Range<usize>,
    x: &[i8],
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    assert!(available(), "AVX2 is not available");
    assert!(x.len() == w.k && rows.end <= w.m && out.len() == rows.len() && bias.len() == w.m);
    #[cfg(target_arch = "x86_64")]
    unsafe {
        matvec_avx2(w, rows, x, bias, requant, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (requant, out);
}

/// Per panel of 4 rows, two steps of k pairs at a time: the 8 packed pairs (4 rows x 2 steps)
/// against the input's two pairs, each repeated 4 times; the two halves summed at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn matvec_avx2(
    w: &PackedWeights,
    rows: std::ops::Range<usize>,
    x: &[i8],
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let kp = w.k.div_ceil(2);
    let xp: Vec<u32> = (0..kp).map(|q| pair(x[2 * q], x.get(2 * q + 1).copied().unwrap_or(0))).collect();
    let mut sums = [0i32; MR];
    for p in rows.start / MR..rows.end.div_ceil(MR) {
        let wp = w.data.as_ptr().add(p * kp * MR);
        let mut acc = _mm256_setzero_si256();
        let mut q = 0;
        while q + 2 <= kp {
            let xv = _mm256_set_m128i(_mm_set1_epi32(xp[q + 1] as i32), _mm_set1_epi32(xp[q] as i32));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256(wp.add(q * MR) as *const __m256i), xv));
            q += 2;
        }
        let mut acc4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
        if q < kp {
            let xv = _mm_set1_epi32(xp[q] as i32);
            acc4 = _mm_add_epi32(acc4, _mm_madd_epi16(_mm_loadu_si128(wp.add(q * MR) as *const __m128i), xv));
        }
        _mm_storeu_si128(sums.as_mut_ptr() as *mut __m128i, acc4);
        for (r, s) in sums.iter().enumerate() {
            let row = p * MR + r;
            if rows.contains(&row) {
                let i = row - rows.start;
                requant.row_inline(row, &[bias[row].wrapping_add(*s)], &mut out[i..i + 1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemm_avx2(
    w: &PackedWeights,
    range: std::ops::Range<usize>,
    x: &[i8],
    n: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let (m, k) = (w.m, w.k);
    let row0 = range.start * MR;
    let kp = k.div_ceil(2);
    // One 16-column panel of x, as i16 pairs: panel[q * 16 + j] = (x[2q][j], x[2q + 1][j]).
    let mut panel = vec![0u32; kp * NR];
    let mut tile = [0i32; MR * NR];
    let zero = [0i8; NR];
    for c0 in (0..n).step_by(NR) {
        let cols = NR.min(n - c0);
        for q in 0..kp {
            let row = |i: usize| -> [i8; NR] {
                if i >= k {
                    return zero;
                }
                let mut r = [0i8; NR];
                r[..cols].copy_from_slice(&x[i * n + c0..][..cols]);
                r
            };
            // A full panel with both rows inside x is loaded in place; others go through a copy.
            let (a, b) = if cols == NR && 2 * q + 1 < k {
                (
                    _mm_loadu_si128(x.as_ptr().add(2 * q * n + c0) as *const __m128i),
                    _mm_loadu_si128(x.as_ptr().add((2 * q + 1) * n + c0) as *const __m128i),
                )
            } else {
                let (r0, r1) = (row(2 * q), row(2 * q + 1));
                (_mm_loadu_si128(r0.as_ptr() as *const __m128i), _mm_loadu_si128(r1.as_ptr() as *const __m128i))
            };
            // Bytes interleaved (a0 b0 a1 b1 ...), then widened to i16: pairs per column.
            let lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
            let hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
            let dst = panel.as_mut_ptr().add(q * NR) as *mut __m256i;
            _mm256_storeu_si256(dst, lo);
            _mm256_storeu_si256(dst.add(1), hi);
        }
        for p in range.clone() {
            let wp = w.data.as_ptr().add(p * kp * MR);
            let mut acc = [_mm256_setzero_si256(); 2 * MR];
            for q in 0..kp {
                let b0 = _mm256_loadu_si256(panel.as_ptr().add(q * NR) as *const __m256i);
                let b1 = _mm256_loadu_si256(panel.as_ptr().add(q * NR + 8) as *const __m256i);
                let ws = wp.add(q * MR);
                for r in 0..MR {
                    let a = _mm256_set1_epi32(*ws.add(r) as i32);
                    acc[2 * r] = _mm256_add_epi32(acc[2 * r], _mm256_madd_epi16(a, b0));
                    acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], _mm256_madd_epi16(a, b1));
                }
            }
            for r in 0..MR {
                let row = p * MR + r;
                if row >= m {
                    break;
                }
                let bv = _mm256_set1_epi32(bias[row]);
                let (a0, a1) = (_mm256_add_epi32(acc[2 * r], bv), _mm256_add_epi32(acc[2 * r + 1], bv));
                let dst = &mut out[(row - row0) * n + c0..][..cols];
                if cols == NR {
                    // The requantization in registers, as `Requant::row` computes it: scale and
                    // offset (multiply, then add: no fused rounding), the bounds, rounding to
                    // nearest even (the default MXCSR mode of `vcvtps2dq`), the zero point,
                    // then 16 i32 packed to 16 i8 (in range already, so without saturation).
                    let s = _mm256_set1_ps(requant.scale[row]);
                    let off = _mm256_set1_ps(requant.offset[row]);
                    let lo = _mm256_set1_ps((requant.lo - requant.y0) as f32);
                    let hi = _mm256_set1_ps((requant.hi - requant.y0) as f32);
                    let y0 = _mm256_set1_epi32(requant.y0);
                    let q = |a: __m256i| {
                        let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), s), off);
                        let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                        _mm256_add_epi32(_mm256_cvtps_epi32(v), y0)
                    };
                    let w16 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q(a0), q(a1)));
                    let b8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256::<1>(w16));
                    _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, b8);
                } else {
                    let t = tile.as_mut_ptr().add(r * NR) as *mut __m256i;
                    _mm256_storeu_si256(t, a0);
                    _mm256_storeu_si256(t.add(1), a1);
                    requant.row_inline(row, &tile[r * NR..][..cols], dst);
                }
            }
        }
    }
}

/// The depthwise convolution of [`crate::depthwise`] for channels `chans`: `x` is the whole
/// input `[cin, h, w]`, `out` holds those channels' planes.
///
/// # Panics
/// If AVX2 is not available or the sizes do not match.
pub fn depthwise(l: &crate::depthwise::Layer, chans: std::ops::Range<usize>, x: &[i8], out: &mut [i8]) {
    assert!(available(), "AVX2 is not available");
    let g = l.g;
    assert!(chans.end <= g.cin && x.len() == g.cin * g.h * g.w && out.len() == chans.len() * g.oh * g.ow);
    let taps = g.kh * g.kw;
    assert!(l.weights.len() == g.cin * taps && l.bias.len() == g.cin && l.requant.scale.len() == g.cin);
    assert!(l.requant.offset.len() == g.cin);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2, checked just above, and the sizes match the geometry.
    unsafe {
        dw::depthwise(l, chans, x, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (chans, x, out);
}

#[cfg(target_arch = "x86_64")]
#[path = "avx2_dw.rs"]
mod dw;

#[cfg(test)]
#[path = "avx2_tests.rs"]
mod tests;
