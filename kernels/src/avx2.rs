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

/// The tiled depthwise convolution (see the module documentation).
#[cfg(target_arch = "x86_64")]
mod dw {
    use crate::depthwise::{body, Layer};
    use crate::Geometry;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Lane layouts. `S2`: stride 2, a register holds 8 consecutive outputs of a row. `EO`:
    /// stride 1, a pair of registers holds 16 outputs of a row, the even ones then the odd
    /// ones. `NARROW`: stride 1 and rows at most 8 wide, a register holds a row, its even
    /// outputs in the low half and its odd ones in the high half.
    const S2: u8 = 0;
    const EO: u8 = 1;
    const NARROW: u8 = 2;

    const fn stride(mode: u8) -> usize {
        if mode == S2 {
            2
        } else {
            1
        }
    }

    /// Tiles are at most this many output rows tall (for the plane's room below).
    const RMAX: usize = 4;

    /// 32 bytes, aligned for a register.
    #[derive(Clone, Copy)]
    #[repr(C, align(32))]
    struct Y([i16; 16]);

    /// How one layer's geometry maps onto the registers.
    struct Plan {
        g: Geometry,
        /// Registers across an output row.
        regs: usize,
        /// Pitch of the padded plane (i16), its length with the room the tiles read past it,
        /// the input rows it holds.
        wp: usize,
        len: usize,
        rows_in: usize,
        /// For planes narrower than 16 (filled 16 columns at a time): the lanes inside a row.
        tail: Y,
    }

    impl Plan {
        fn new(g: &Geometry, mode: u8) -> Plan {
            let (k, s) = (g.kh, stride(mode));
            let regs = match mode {
                S2 => g.ow.div_ceil(8),
                EO => 2 * g.ow.div_ceil(16),
                _ => 1,
            };
            let wp = (g.pl + g.w).max((g.ow - 1) * s + k);
            let hp = (g.oh - 1) * s + k;
            let rows_in = g.h.min(hp.saturating_sub(g.pt));
            // Rows read by the tiles (the last ones run past the plane's last output row), and
            // past the last row's end: a register's reach (at most 16 columns past its first
            // output's, plus the kernel) and the fill's 16 columns.
            let rows = ((g.oh.div_ceil(RMAX) * RMAX - 1) * s + k).max(g.pt + rows_in);
            let len = (rows * wp + 16 * regs + 2 * k + 64).next_multiple_of(16);
            let mut tail = Y([0; 16]);
            for (i, t) in tail.0.iter_mut().enumerate() {
                *t = if i < g.w { -1 } else { 0 };
            }
            Plan { g: *g, regs, wp, len, rows_in, tail }
        }
    }

    /// The layer's output bounds and zero point, broadcast.
    struct Bounds {
        flo: __m256,
        fhi: __m256,
        y0: __m256i,
        lo: __m256i,
        hi: __m256i,
    }

    /// One channel: its weights as i16 pairs of horizontally adjacent taps (`(w[ky][2p],
    /// w[ky][2p + 1])`, the second 0 past the kernel's width), broadcast, at `ky * NP + p`;
    /// its bias and scale.
    struct Chan {
        w: [__m256i; 15],
        bias: __m256i,
        scale: __m256,
        offset: __m256,
        /// Whether the offset or the float bounds are needed: the offset is not zero, or the
        /// accumulators can scale beyond +-2^30. Otherwise the bounds are applied to the
        /// bytes only.
        general: bool,
    }

    impl Chan {
        #[inline(always)]
        unsafe fn new<const K: usize>(l: &Layer, c: usize) -> Chan {
            let np = K.div_ceil(2);
            let wt = &l.weights[c * K * K..][..K * K];
            let mut w = [_mm256_setzero_si256(); 15];
            for ky in 0..K {
                for p in 0..np {
                    let b = if 2 * p + 1 < K { wt[ky * K + 2 * p + 1] } else { 0 };
                    w[ky * np + p] = _mm256_set1_epi32(super::pair(wt[ky * K + 2 * p], b) as i32);
                }
            }
            let abs: u64 = wt.iter().map(|v| v.unsigned_abs() as u64).sum();
            let b = l.bias[c];
            let (s, off) = (l.requant.scale[c], l.requant.offset[c]);
            // The largest accumulator (wrapped or not, at most 2^31), scaled: whether it stays
            // within +-2^30, where `vcvtps2dq` rounds it without saturating.
            let amax = (b.unsigned_abs() as u64 + 128 * abs).min(1 << 31);
            let vmax = amax as f64 * (s as f64).abs() * (1.0 + 1e-6) + (off as f64).abs();
            Chan {
                w,
                bias: _mm256_set1_epi32(b),
                scale: _mm256_set1_ps(s),
                offset: _mm256_set1_ps(off),
                general: off != 0.0 || vmax >= (1u64 << 30) as f64,
            }
        }
    }

    /// What the tiles of one channel read and write.
    struct Tiles<'a> {
        p: &'a Plan,
        k: &'a Chan,
        b: &'a Bounds,
        /// The channel's padded plane, its output plane and the bytes of `out` from there on.
        pf: *const i16,
        dst: *mut i8,
        room: usize,
    }

    /// Runs `$body` with `$i` bound to each constant below `$n` (at most 16), unrolled, so
    /// that which accumulators and taps each input row feeds is known at compile time.
    macro_rules! unrolled {
        ($i:ident < $n:expr => $body:block) => {
            unrolled!(@each $i, $n, $body; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
        };
        (@each $i:ident, $n:expr, $body:block; $($k:literal)*) => {
            const { assert!($n <= 16) };
            $(
                if $k < $n {
                    let $i: usize = $k;
                    $body
                }
            )*
        };
    }

    /// Where the tiles run: kernels of 3 x 3 and 5 x 5 at strides 1 and 2, an output stage
    /// within int8 (the byte arithmetic of [`pack`] holds); others run the shared driver.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn depthwise(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        let (g, rq) = (l.g, l.requant);
        let int8 = |v: i32| (-128..=127).contains(&v);
        let tiled_here = g.kh == g.kw
            && matches!(g.kh, 3 | 5)
            && g.sh == g.sw
            && matches!(g.sh, 1 | 2)
            && g.oh > 0
            && g.ow > 0
            && int8(rq.lo)
            && int8(rq.hi)
            && rq.y0.unsigned_abs() <= 32000;
        if !tiled_here {
            return fallback(l, chans, x, out);
        }
        let mode = match (g.sh, g.ow) {
            (2, _) => S2,
            (_, 0..=8) => NARROW,
            _ => EO,
        };
        match (g.kh, mode) {
            (3, S2) => tiled::<3, S2>(l, chans, x, out),
            (3, EO) => tiled::<3, EO>(l, chans, x, out),
            (3, _) => tiled::<3, NARROW>(l, chans, x, out),
            (_, S2) => tiled::<5, S2>(l, chans, x, out),
            (_, EO) => tiled::<5, EO>(l, chans, x, out),
            _ => tiled::<5, NARROW>(l, chans, x, out),
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn tiled<const K: usize, const MODE: u8>(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        let p = Plan::new(l.g, MODE);
        let g = &p.g;
        let rq = l.requant;
        let bounds = Bounds {
            flo: _mm256_set1_ps((rq.lo - rq.y0) as f32),
            fhi: _mm256_set1_ps((rq.hi - rq.y0) as f32),
            y0: _mm256_set1_epi16(rq.y0 as i16),
            lo: _mm256_set1_epi8(rq.lo as i8),
            hi: _mm256_set1_epi8(rq.hi as i8),
        };
        let x0v = _mm256_set1_epi16(l.x0 as i16);
        // Two padded planes, their padding written once: the next channel's is filled while
        // this one's is read, so that its stores have long retired when the tiles load them.
        let mut planes = vec![l.x0 as i16; 2 * p.len];
        let pf = planes.as_mut_ptr();
        let (in_len, out_len) = (g.h * g.w, g.oh * g.ow);
        let fill_plane = |c: usize, dst: *mut i16| {
            // SAFETY: `c` is a channel of `x`; `dst` is one of the two planes (`len` long).
            unsafe { fill(&p, x.as_ptr().add(c * in_len), x.len() - c * in_len, dst, x0v) }
        };
        for (ci, c) in chans.clone().enumerate() {
            if ci == 0 {
                fill_plane(c, pf);
            }
            if c + 1 < chans.end {
                fill_plane(c + 1, pf.add((ci + 1) % 2 * p.len));
            }
            let k = Chan::new::<K>(l, c);
            let t = Tiles {
                p: &p,
                k: &k,
                b: &bounds,
                pf: pf.add(ci % 2 * p.len),
                dst: out.as_mut_ptr().add(ci * out_len),
                room: out.len() - ci * out_len,
            };
            channel::<K, MODE>(&t);
        }
    }

    /// The padded plane of input plane `src` (`avail` bytes readable from there) at `pf`, whose
    /// padding is already there: rows of 16 columns or more 16 at a time (the last 16 ending
    /// at the row's end), narrower ones as 16 columns, those past the row set to `x0`.
    #[inline(always)]
    unsafe fn fill(p: &Plan, src: *const i8, avail: usize, pf: *mut i16, x0v: __m256i) {
        let g = &p.g;
        let first = pf.add(g.pt * p.wp + g.pl);
        debug_assert!((g.pt + p.rows_in) * p.wp + 16 <= p.len);
        let widen = |s: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(s as *const __m128i));
        if g.w >= 16 {
            for iy in 0..p.rows_in {
                let (s, d) = (src.add(iy * g.w), first.add(iy * p.wp));
                let mut cx = 0;
                while cx + 16 < g.w {
                    _mm256_storeu_si256(d.add(cx) as *mut __m256i, widen(s.add(cx)));
                    cx += 16;
                }
                let cx = g.w - 16;
                _mm256_storeu_si256(d.add(cx) as *mut __m256i, widen(s.add(cx)));
            }
            return;
        }
        let inside = _mm256_load_si256(p.tail.0.as_ptr() as *const __m256i);
        for iy in 0..p.rows_in {
            let s = src.add(iy * g.w);
            let v = if iy * g.w + 16 <= avail {
                widen(s)
            } else {
                // The plane's last rows, at the end of `x`: through a copy.
                let mut b = [0i8; 16];
                std::ptr::copy_nonoverlapping(s, b.as_mut_ptr(), g.w);
                widen(b.as_ptr())
            };
            _mm256_storeu_si256(first.add(iy * p.wp) as *mut __m256i, _mm256_blendv_epi8(x0v, v, inside));
        }
    }

    /// Every tile of one channel: bands of `R` output rows, top down; in each, blocks of 4
    /// registers across from the right (the rightmost holding what is left), so that the lanes
    /// a band's last block stores past the row's end land on outputs stored later.
    #[inline(always)]
    unsafe fn channel<const K: usize, const MODE: u8>(t: &Tiles) {
        let nb = t.p.regs;
        if MODE == NARROW || nb <= 2 {
            for a0 in (0..t.p.g.oh).step_by(4) {
                match nb {
                    1 => tile::<K, MODE, 4, 1>(t, a0, 0),
                    _ => tile::<K, MODE, 4, 2>(t, a0, 0),
                }
            }
            return;
        }
        for a0 in (0..t.p.g.oh).step_by(2) {
            let mut b0 = nb - (nb - 1) % 4 - 1;
            match nb - b0 {
                1 => tile::<K, MODE, 2, 1>(t, a0, b0),
                2 => tile::<K, MODE, 2, 2>(t, a0, b0),
                3 => tile::<K, MODE, 2, 3>(t, a0, b0),
                _ => tile::<K, MODE, 2, 4>(t, a0, b0),
            }
            while b0 >= 4 {
                b0 -= 4;
                tile::<K, MODE, 2, 4>(t, a0, b0);
            }
        }
    }

    /// The pairs of inputs under taps `(2p, 2p + 1)` of the lanes of register `b`, in padded
    /// row `row`.
    #[inline(always)]
    unsafe fn input<const MODE: u8>(row: *const i16, b: usize, p: usize) -> __m256i {
        match MODE {
            S2 => _mm256_loadu_si256(row.add(16 * b + 2 * p) as *const __m256i),
            EO => _mm256_loadu_si256(row.add(16 * (b / 2) + (b & 1) + 2 * p) as *const __m256i),
            _ => {
                let lo = _mm_loadu_si128(row.add(2 * p) as *const __m128i);
                let hi = _mm_loadu_si128(row.add(2 * p + 1) as *const __m128i);
                _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
            }
        }
    }

    /// Output rows `a0 .. a0 + R` (those below the plane computed, not stored), registers
    /// `b0 .. b0 + C` across: per padded row, per pair of taps, per register, the inputs
    /// loaded once and multiplied into every accumulator whose kernel row covers them; then
    /// requantized and stored, 4 registers at a time (a row of 3 or 4, two of 2, four of 1).
    #[inline(always)]
    unsafe fn tile<const K: usize, const MODE: u8, const R: usize, const C: usize>(t: &Tiles, a0: usize, b0: usize) {
        let (p, k) = (t.p, t.k);
        let g = &p.g;
        let s = stride(MODE);
        let np = K.div_ceil(2);
        let mut acc = [[k.bias; C]; R];
        unrolled!(i < (R - 1) * stride(MODE) + K => {
            let row = t.pf.add((a0 * s + i) * p.wp);
            for pr in 0..np {
                for c in 0..C {
                    let v = input::<MODE>(row, b0 + c, pr);
                    for (a, acc) in acc.iter_mut().enumerate() {
                        let ky = i.wrapping_sub(a * s);
                        if ky < K {
                            acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(v, k.w[ky * np + pr]));
                        }
                    }
                }
            }
        });
        let per = if C >= 3 { 1 } else { 4 / C };
        let width = 8 * C;
        let col0 = 8 * b0;
        let valid = width.min(g.ow - col0);
        let zero = _mm256_setzero_si256();
        for q in 0..R.div_ceil(per) {
            let first = a0 + q * per;
            if first >= g.oh {
                break;
            }
            let mut regs = [zero; 4];
            for (j, r) in regs.iter_mut().enumerate() {
                let (a, c) = if C >= 3 { (q, j) } else { (q * per + j / C, j % C) };
                if a < R && c < C {
                    *r = acc[a][c];
                }
            }
            let v = pack::<MODE>(regs, k, t.b);
            for j in 0..per {
                let oy = first + j;
                if oy >= g.oh {
                    break;
                }
                let at = oy * g.ow + col0;
                put(v, j * width, width, t.dst.add(at), valid, t.room - at);
            }
        }
    }

    /// `vpermd` indices that undo the lane interleaving of `vpackssdw` then `vpacksswb`.
    const UNPACK: [i32; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
    /// `vpshufb` indices that interleave even and odd outputs: 8 then 8 (`EO`), 4 then 4
    /// (`NARROW`).
    const EVEN_ODD_8: [i8; 32] = {
        let mut v = [0; 32];
        let mut i = 0;
        while i < 32 {
            v[i] = ((i % 16) / 2 + (i % 2) * 8) as i8;
            i += 1;
        }
        v
    };
    const EVEN_ODD_4: [i8; 32] = {
        let mut v = [0; 32];
        let mut i = 0;
        while i < 32 {
            v[i] = ((i % 16) / 8 * 8 + (i % 8) / 2 + (i % 2) * 4) as i8;
            i += 1;
        }
        v
    };

    /// Four registers of accumulators requantized as [`crate::Requant::row`] does, as 32 bytes
    /// in output order. Scale (then offset: a multiply and an add, not fused) in floats,
    /// rounded to nearest even by `vcvtps2dq` (the default MXCSR mode). When the scaled
    /// accumulators stay within +-2^30, clamping the rounded integers equals rounding the
    /// clamped floats (the bounds are integers), and every saturation on the way down to bytes
    /// (i32 to i16, adding the zero point, i16 to i8) is monotonic and exact within the int8
    /// bounds, so the bounds are applied to the bytes once; otherwise to the floats too, as the
    /// definition does.
    #[inline(always)]
    unsafe fn pack<const MODE: u8>(acc: [__m256i; 4], k: &Chan, b: &Bounds) -> __m256i {
        let q = |a: __m256i| {
            let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), k.scale);
            if k.general {
                v = _mm256_add_ps(v, k.offset);
                // `v > lo ? v : lo`, then `v < hi ? v : hi`, as the definition's selects.
                v = _mm256_min_ps(_mm256_max_ps(v, b.flo), b.fhi);
            }
            _mm256_cvtps_epi32(v)
        };
        let w01 = _mm256_adds_epi16(_mm256_packs_epi32(q(acc[0]), q(acc[1])), b.y0);
        let w23 = _mm256_adds_epi16(_mm256_packs_epi32(q(acc[2]), q(acc[3])), b.y0);
        let v = _mm256_min_epi8(_mm256_max_epi8(_mm256_packs_epi16(w01, w23), b.lo), b.hi);
        let v = _mm256_permutevar8x32_epi32(v, _mm256_loadu_si256(UNPACK.as_ptr() as *const __m256i));
        match MODE {
            EO => _mm256_shuffle_epi8(v, _mm256_loadu_si256(EVEN_ODD_8.as_ptr() as *const __m256i)),
            NARROW => _mm256_shuffle_epi8(v, _mm256_loadu_si256(EVEN_ODD_4.as_ptr() as *const __m256i)),
            _ => v,
        }
    }

    /// Stores bytes `from .. from + width` of `v` (8, 16, 24 or 32 of them, not crossing the
    /// register's halves but for 24 from 0) at `dst`, or only the first `valid` of them where
    /// fewer than `width` bytes are left in `out` (`room`).
    #[inline(always)]
    unsafe fn put(v: __m256i, from: usize, width: usize, dst: *mut i8, valid: usize, room: usize) {
        debug_assert!(valid <= room && valid <= width);
        if width <= room {
            let half = |i: usize| if i < 16 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256::<1>(v) };
            match width {
                32 => _mm256_storeu_si256(dst as *mut __m256i, v),
                24 => {
                    _mm_storeu_si128(dst as *mut __m128i, half(0));
                    _mm_storel_epi64(dst.add(16) as *mut __m128i, half(16));
                }
                16 => _mm_storeu_si128(dst as *mut __m128i, half(from)),
                _ => {
                    let h = half(from);
                    let h = if from % 16 == 8 { _mm_unpackhi_epi64(h, h) } else { h };
                    _mm_storel_epi64(dst as *mut __m128i, h);
                }
            }
        } else {
            let mut b = Y([0; 16]);
            _mm256_store_si256(b.0.as_mut_ptr() as *mut __m256i, v);
            std::ptr::copy_nonoverlapping((b.0.as_ptr() as *const i8).add(from), dst, valid);
        }
    }

    /// Other geometries and output stages: the shared driver, 16 (or 8) outputs at a time as
    /// `vpmullw` products widened into i32 accumulators.
    #[target_feature(enable = "avx2")]
    unsafe fn fallback(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        // SAFETY (both blocks): this function runs only where the CPU has AVX2; the slices
        // are bounds-checked.
        if l.g.ow > 8 {
            body::<16>(l, chans, x, out, |p, b, o, w, c| unsafe { block16(p, b, o, w, c) })
        } else {
            body::<8>(l, chans, x, out, |p, b, o, w, c| unsafe { block8(p, b, o, w, c) })
        }
    }

    /// 16 outputs: 16 i16 products per `vpmullw`, widened into two registers of i32
    /// accumulators that stay in registers across every tap.
    #[inline(always)]
    unsafe fn block16(phases: &[i16], base: usize, offsets: &[usize], wts: &[i16], b: i32) -> [i32; 16] {
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

    #[inline(always)]
    unsafe fn block8(phases: &[i16], base: usize, offsets: &[usize], wts: &[i16], b: i32) -> [i32; 8] {
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
}

#[cfg(test)]
mod tests {
    use crate::depthwise::{reference, Layer};
    use crate::testing::{requant_for, xorshift};
    use crate::{Geometry, Requant};

    fn geometry(c: usize, (h, w): (usize, usize), (k, s): (usize, usize), [pt, pl, pb, pr]: [usize; 4]) -> Geometry {
        let oh = (h + pt + pb - k) / s + 1;
        let ow = (w + pl + pr - k) / s + 1;
        Geometry { cin: c, h, w, kh: k, kw: k, sh: s, sw: s, pt, pl, oh, ow }
    }

    /// The depthwise kernel against the reference on `g` (whole, then split in two channel
    /// ranges), with `x` and the weights from `data`, for the zero points at the ends of
    /// int8 and in between, and output stages that take every requantization path: offsets
    /// and clip bounds (`requant_for`), scales that take the accumulators past +-2^30 (the
    /// float bounds), biases near the ends of i32 (wrapping accumulators), crossed bounds, a
    /// zero point outside int8, bounds outside int8 and a zero point beyond i16 (the shared
    /// driver).
    fn check(g: Geometry, data: &mut impl FnMut() -> i8) {
        let c = g.cin;
        let taps = g.kh * g.kw;
        let x: Vec<i8> = (0..c * g.h * g.w).map(|_| data()).collect();
        let wt: Vec<i8> = (0..c * taps).map(|_| data()).collect();
        let bias: Vec<i32> = (0..c).map(|i| 41 * i as i32 - 250).collect();
        let wrapping: Vec<i32> =
            (0..c).map(|i| if i % 2 == 0 { i32::MAX - 7 * i as i32 } else { i32::MIN + 3 }).collect();
        let mut big = Requant::new(&vec![1e6; c], 1.0, 3, -1.0, 90.0);
        big.scale[0] = 1e-3;
        let mut crossed = requant_for(c, taps);
        (crossed.lo, crossed.hi) = (20, -20);
        let mut odd_zero = requant_for(c, taps);
        odd_zero.y0 = 300;
        let mut wide = requant_for(c, taps);
        (wide.lo, wide.y0) = (-200, 40000);
        let stages = [
            (requant_for(c, taps), &bias),
            (requant_for(c, taps + 2), &bias),
            (big, &bias),
            (requant_for(c, taps), &wrapping),
            (crossed, &bias),
            (odd_zero, &bias),
            (wide, &bias),
        ];
        for x0 in [-128i8, -5, 0, 127] {
            for (rq, bias) in &stages {
                let l = Layer { g: &g, weights: &wt, bias, x0, requant: rq };
                let want = reference(&l, &x);
                let mut got = vec![0i8; want.len()];
                super::depthwise(&l, 0..c, &x, &mut got);
                assert!(got == want, "{g:?} x0={x0}: differs");
                let cut = c / 2;
                let mut parts = vec![0i8; want.len()];
                let (a, b) = parts.split_at_mut(cut * g.oh * g.ow);
                super::depthwise(&l, 0..cut, &x, a);
                super::depthwise(&l, cut..c, &x, b);
                assert!(parts == want, "{g:?} x0={x0}: split at channel {cut} differs");
            }
        }
    }

    /// Every lane layout and tile on odd sizes: stride 2 with 1 to 4 registers across and 4
    /// plus 1 to 3; stride 1 with rows of 1 to 8 (one register a row), 9 to 16 (one pair), and
    /// wider ones (4 pairs plus 1); 1 x 1 planes, pads wider than the kernel needs, input rows
    /// past the last one read, planes narrower and wider than 16 (filled both ways), single
    /// channels; and the shared driver for other kernels and strides.
    #[test]
    fn depthwise_equals_the_reference_on_every_path() {
        if !super::available() {
            eprintln!("SKIPPED: AVX2 depthwise (this CPU lacks AVX2)");
            return;
        }
        let mut rnd = xorshift(99);
        let mut shapes = vec![];
        let planes = [(1, 1), (2, 3), (5, 7), (7, 7), (3, 8), (9, 4), (13, 14), (14, 14), (16, 17), (6, 15)];
        for (h, w) in planes.into_iter().chain([(23, 33), (9, 50), (5, 64), (4, 71), (3, 90), (5, 130)]) {
            for k in [3, 5] {
                for s in [1, 2] {
                    for pads in [[k / 2; 4], [0, 0, 1, 1], [1, 2, 2, 1], [k - 1, 0, 0, k - 1], [k + 1; 4]] {
                        if h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k {
                            shapes.push(geometry(3, (h, w), (k, s), pads));
                        }
                    }
                }
            }
        }
        for (h, w, kh, kw, sh, sw) in
            [(9, 11, 1, 1, 1, 1), (9, 11, 2, 4, 1, 2), (12, 10, 3, 3, 2, 1), (15, 19, 3, 3, 3, 3), (10, 30, 7, 7, 1, 1)]
        {
            let g = geometry(2, (h, w), (kh, sh), [kh / 2, kw / 2, kh / 2, kw / 2]);
            let ow = (w + 2 * (kw / 2) - kw) / sw + 1;
            shapes.push(Geometry { kw, sw, ow, ..g });
        }
        shapes.push(geometry(1, (7, 7), (5, 1), [2; 4]));
        shapes.push(geometry(1, (1, 1), (3, 1), [1; 4]));
        shapes.push(geometry(17, (14, 14), (3, 2), [0, 0, 1, 1]));
        // Only the top rows read: the rest of the input is left out of the padded plane.
        shapes.push(Geometry { oh: 2, ow: 5, ..geometry(2, (9, 9), (3, 1), [1; 4]) });
        shapes.push(Geometry { oh: 1, ..geometry(2, (40, 9), (3, 1), [1; 4]) });
        shapes.push(Geometry { oh: 1, ..geometry(2, (40, 50), (5, 1), [2; 4]) });
        for g in shapes {
            check(g, &mut rnd);
        }
    }

    /// Every input and weight at -128 or 127 (the largest products, the pairs' sums at their
    /// ends), on every lane layout.
    #[test]
    fn depthwise_extreme_values_are_exact() {
        if !super::available() {
            eprintln!("SKIPPED: AVX2 depthwise (this CPU lacks AVX2)");
            return;
        }
        for (xv, wv) in [(-128i8, -128i8), (-128, 127), (127, -128), (127, 127)] {
            for g in [
                geometry(3, (14, 14), (5, 1), [2; 4]),
                geometry(3, (7, 7), (3, 1), [1; 4]),
                geometry(3, (15, 15), (5, 2), [1, 1, 2, 2]),
                geometry(2, (9, 40), (3, 1), [1; 4]),
            ] {
                // Mostly the extreme value, a few others so that the planes are not uniform.
                let mut i = 0u32;
                let mut data = || {
                    i += 1;
                    if i.is_multiple_of(13) {
                        (i % 256) as u8 as i8
                    } else if i <= (g.cin * g.h * g.w) as u32 {
                        xv
                    } else {
                        wv
                    }
                };
                check(g, &mut data);
            }
        }
    }
}
