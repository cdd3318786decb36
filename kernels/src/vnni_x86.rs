//! The x86_64 half of [`super`]: the AVX-512 VNNI and AVX-VNNI instruction sets behind one
//! `Isa` trait, the tile driver, its epilogue (the requantization in registers), the
//! matrix-vector product.

use super::{PackedWeights, P};
use crate::Requant;
use std::arch::x86_64::*;
use std::ops::Range;

/// One call's operands (`out` points to `rows.len() * n` bytes).
pub struct Job<'a> {
    pub w: &'a PackedWeights,
    pub rows: Range<usize>,
    pub x: &'a [i8],
    pub n: usize,
    pub bias: &'a [i32],
    pub rq: &'a Requant,
    pub out: *mut i8,
}

/// Where a row of 4 activation rows is read: a pointer and how many bytes may be read from
/// it (the rest of `x`: columns past the block belong to other columns or rows, whose lanes
/// are never stored).
type Src = (*const i8, usize);

/// Read for the groups' rows past k (whose weights are zero).
static ZEROS: [i8; 64] = [0; 64];

/// The requantization's constants, in the registers of one instruction set.
struct Ep<V, F> {
    /// `lo - y0` and `hi - y0` as floats.
    lo_f: F,
    hi_f: F,
    /// `y0` as i32 lanes, `y0` as i16 lanes, `lo` and `hi` as i8 lanes.
    y0_32: V,
    y0_16: V,
    lo_8: V,
    hi_8: V,
}

/// The operations a kernel needs from an instruction set. Everything is `inline(always)`,
/// compiled into the `target_feature` entry points ([`run512`], [`run256`]), the only
/// callers: the CPU has the instruction set, and the pointers are valid for what each
/// operation reads or writes (a register's worth, or `cols` bytes).
trait Isa {
    type V: Copy;
    type F: Copy;
    /// i32 lanes per register.
    const L: usize;
    /// Registers per block of columns; `NB = NV * L` columns.
    const NV: usize;
    const NB: usize;
    /// Rows per tile at most.
    const MR: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: i32) -> Self::V;
    unsafe fn splat_f(v: f32) -> Self::F;
    unsafe fn load(p: *const u32) -> Self::V;
    unsafe fn load_f(p: *const f32) -> Self::F;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `acc + sum of the 4 products u8(x) * i8(w)` per lane.
    unsafe fn dot(acc: Self::V, x: Self::V, w: Self::V) -> Self::V;
    unsafe fn ep(rq: &Requant) -> Ep<Self::V, Self::F>;
    /// One group of 4 rows of a full block of `NB` columns, flipped to u8, to `NV`
    /// registers in the order [`Isa::store_block`] undoes.
    unsafe fn pack_block(src: &[Src; 4], dst: *mut u32);
    /// One group of 4 rows of a partial block: `nv` registers of `L` columns in order.
    unsafe fn pack_part(src: &[Src; 4], nv: usize, dst: *mut u32);
    /// The requantization of a row of a full block (packed by [`Isa::pack_block`]) to `NB`
    /// bytes, for bounds within int8 and a small zero point.
    unsafe fn store_block<const MODE: u8>(acc: &[Self::V], ep: &Ep<Self::V, Self::F>, s: f32, off: f32, dst: *mut i8);
    /// The requantization of one register of `L` columns (or rows) in order, exactly as
    /// `Requant::row` computes it for any bounds, `cols` of them stored.
    unsafe fn store_reg(acc: Self::V, ep: &Ep<Self::V, Self::F>, s: Self::F, off: Self::F, dst: *mut i8, cols: usize);
    /// The row sums of `L / 4` panels' matrix-vector accumulators (lane `4 * g + r` of each
    /// holding partial sums of row r of the panel): lane `4 * p + r` = row r of panel p.
    unsafe fn reduce(acc: &[Self::V]) -> Self::V;
}

/// AVX-512 VNNI.
struct Z;

impl Isa for Z {
    type V = __m512i;
    type F = __m512;
    const L: usize = 16;
    const NV: usize = 4;
    const NB: usize = 64;
    const MR: usize = 6;

    #[inline(always)]
    unsafe fn zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const u32) -> __m512i {
        _mm512_loadu_si512(p as *const _)
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, x, w)
    }
    #[inline(always)]
    unsafe fn ep(rq: &Requant) -> Ep<__m512i, __m512> {
        Ep {
            lo_f: _mm512_set1_ps((rq.lo - rq.y0) as f32),
            hi_f: _mm512_set1_ps((rq.hi - rq.y0) as f32),
            y0_32: _mm512_set1_epi32(rq.y0),
            y0_16: _mm512_set1_epi16(rq.y0 as i16),
            lo_8: _mm512_set1_epi8(rq.lo as i8),
            hi_8: _mm512_set1_epi8(rq.hi as i8),
        }
    }

    /// Register t holds, in 128-bit lane l, columns `16 l + 4 t .. + 4` (the order of the
    /// byte and word interleaves, which the packs of `store_block` undo).
    #[inline(always)]
    unsafe fn pack_block(src: &[Src; 4], dst: *mut u32) {
        let ld = |i: usize| _mm512_loadu_si512(src[i].0 as *const _);
        let (a, b, c, d) = (ld(0), ld(1), ld(2), ld(3));
        let [r0, r1, r2, r3] = interleave512(a, b, c, d);
        let flip = _mm512_set1_epi8(-128);
        let dst = dst as *mut __m512i;
        _mm512_storeu_si512(dst, _mm512_xor_si512(r0, flip));
        _mm512_storeu_si512(dst.add(1), _mm512_xor_si512(r1, flip));
        _mm512_storeu_si512(dst.add(2), _mm512_xor_si512(r2, flip));
        _mm512_storeu_si512(dst.add(3), _mm512_xor_si512(r3, flip));
    }

    #[inline(always)]
    unsafe fn pack_part(src: &[Src; 4], nv: usize, dst: *mut u32) {
        // Masked loads: bytes past the end of x are neither read nor faulted on.
        let ld = |i: usize| {
            let (p, avail) = src[i];
            let mask = if avail >= 64 { !0u64 } else { (1u64 << avail) - 1 };
            _mm512_maskz_loadu_epi8(mask, p)
        };
        let (a, b, c, d) = (ld(0), ld(1), ld(2), ld(3));
        let [r0, r1, r2, r3] = interleave512(a, b, c, d);
        // Transposed as 4 x 4 blocks of 128 bits: register l = columns 16 l .. 16 l + 16.
        let s0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(r0, r1);
        let s1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(r0, r1);
        let s2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(r2, r3);
        let s3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(r2, r3);
        let o = [
            _mm512_shuffle_i32x4::<0b10_00_10_00>(s0, s2),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(s0, s2),
            _mm512_shuffle_i32x4::<0b10_00_10_00>(s1, s3),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(s1, s3),
        ];
        let flip = _mm512_set1_epi8(-128);
        for (t, &v) in o.iter().enumerate().take(nv) {
            _mm512_storeu_si512((dst as *mut __m512i).add(t), _mm512_xor_si512(v, flip));
        }
    }

    #[inline(always)]
    unsafe fn store_block<const MODE: u8>(acc: &[__m512i], ep: &Ep<__m512i, __m512>, s: f32, off: f32, dst: *mut i8) {
        // Scale and offset (a multiply then an add, no fused rounding; see [`Mode`] for when
        // the add and the float bound are left out), rounding to nearest even (the default
        // MXCSR mode of `vcvtps2dq`; NaN and out-of-range values give i32::MIN). The bounds
        // are applied after the zero point, on bytes: packs and adds saturate, so whatever
        // lies below (above) them stays below (above).
        let (sv, ov) = (_mm512_set1_ps(s), _mm512_set1_ps(off));
        let q = |a: __m512i| {
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), sv);
            let v = if MODE == PLAIN { v } else { _mm512_add_ps(v, ov) };
            // min(hi, v): NaN stays NaN (the second operand), so it ends at the lower bound.
            let v = if MODE == GENERAL { _mm512_min_ps(ep.hi_f, v) } else { v };
            _mm512_cvtps_epi32(v)
        };
        let p01 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[0]), q(acc[1])), ep.y0_16);
        let p23 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[2]), q(acc[3])), ep.y0_16);
        let b = _mm512_packs_epi16(p01, p23);
        let b = _mm512_min_epi8(_mm512_max_epi8(b, ep.lo_8), ep.hi_8);
        _mm512_storeu_si512(dst as *mut _, b);
    }

    #[inline(always)]
    unsafe fn store_reg(acc: __m512i, ep: &Ep<__m512i, __m512>, s: __m512, off: __m512, dst: *mut i8, cols: usize) {
        let v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), s), off);
        let v = _mm512_min_ps(_mm512_max_ps(v, ep.lo_f), ep.hi_f);
        let r = _mm512_add_epi32(_mm512_cvtps_epi32(v), ep.y0_32);
        let mask = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
        // Truncated to bytes, as `as i8` does.
        _mm512_mask_cvtepi32_storeu_epi8(dst as *mut _, mask, r);
    }

    #[inline(always)]
    unsafe fn reduce(acc: &[__m512i]) -> __m512i {
        let (a, b, c, d) = (acc[0], acc[1], acc[2], acc[3]);
        let ab =
            _mm512_add_epi32(_mm512_shuffle_i32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b));
        let cd =
            _mm512_add_epi32(_mm512_shuffle_i32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_i32x4::<0b11_10_11_10>(c, d));
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_i32x4::<0b11_01_11_01>(ab, cd))
    }
}

/// Four rows of 64 bytes to 4 registers of words `(a, b, c, d)` per column: register t
/// holds, in lane l, columns `16 l + 4 t .. + 4`.
#[inline(always)]
unsafe fn interleave512(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> [__m512i; 4] {
    let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
    let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(c, d), _mm512_unpackhi_epi8(c, d));
    [
        _mm512_unpacklo_epi16(ab_lo, cd_lo),
        _mm512_unpackhi_epi16(ab_lo, cd_lo),
        _mm512_unpacklo_epi16(ab_hi, cd_hi),
        _mm512_unpackhi_epi16(ab_hi, cd_hi),
    ]
}

/// AVX-VNNI.
struct Y;

impl Isa for Y {
    type V = __m256i;
    type F = __m256;
    const L: usize = 8;
    const NV: usize = 2;
    const NB: usize = 16;
    const MR: usize = 6;

    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const u32) -> __m256i {
        _mm256_loadu_si256(p as *const _)
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, x, w)
    }
    #[inline(always)]
    unsafe fn ep(rq: &Requant) -> Ep<__m256i, __m256> {
        Ep {
            lo_f: _mm256_set1_ps((rq.lo - rq.y0) as f32),
            hi_f: _mm256_set1_ps((rq.hi - rq.y0) as f32),
            y0_32: _mm256_set1_epi32(rq.y0),
            y0_16: _mm256_set1_epi16(rq.y0 as i16),
            lo_8: _mm256_set1_epi8(rq.lo as i8),
            hi_8: _mm256_set1_epi8(rq.hi as i8),
        }
    }

    /// Register 0 holds columns 0-3 and 8-11, register 1 columns 4-7 and 12-15 (so that
    /// `vpackssdw` of the two gives 16 words in order).
    #[inline(always)]
    unsafe fn pack_block(src: &[Src; 4], dst: *mut u32) {
        let ld = |i: usize| _mm_loadu_si128(src[i].0 as *const __m128i);
        let [r0, r1] = interleave256(ld(0), ld(1), ld(2), ld(3));
        let flip = _mm256_set1_epi8(-128);
        let dst = dst as *mut __m256i;
        _mm256_storeu_si256(dst, _mm256_xor_si256(r0, flip));
        _mm256_storeu_si256(dst.add(1), _mm256_xor_si256(r1, flip));
    }

    #[inline(always)]
    unsafe fn pack_part(src: &[Src; 4], nv: usize, dst: *mut u32) {
        // Rows with fewer than 16 bytes left in x go through a copy.
        let ld = |i: usize| {
            let (p, avail) = src[i];
            if avail >= 16 {
                _mm_loadu_si128(p as *const __m128i)
            } else {
                let mut t = [0i8; 16];
                t[..avail].copy_from_slice(std::slice::from_raw_parts(p, avail));
                _mm_loadu_si128(t.as_ptr() as *const __m128i)
            }
        };
        let [r0, r1] = interleave256(ld(0), ld(1), ld(2), ld(3));
        // Lanes regrouped: register 0 = columns 0-7, register 1 = columns 8-15.
        let o = [_mm256_permute2x128_si256::<0x20>(r0, r1), _mm256_permute2x128_si256::<0x31>(r0, r1)];
        let flip = _mm256_set1_epi8(-128);
        for (t, &v) in o.iter().enumerate().take(nv) {
            _mm256_storeu_si256((dst as *mut __m256i).add(t), _mm256_xor_si256(v, flip));
        }
    }

    #[inline(always)]
    unsafe fn store_block<const MODE: u8>(acc: &[__m256i], ep: &Ep<__m256i, __m256>, s: f32, off: f32, dst: *mut i8) {
        // As in `Z::store_block`.
        let (sv, ov) = (_mm256_set1_ps(s), _mm256_set1_ps(off));
        let q = |a: __m256i| {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), sv);
            let v = if MODE == PLAIN { v } else { _mm256_add_ps(v, ov) };
            let v = if MODE == GENERAL { _mm256_min_ps(ep.hi_f, v) } else { v };
            _mm256_cvtps_epi32(v)
        };
        let p = _mm256_adds_epi16(_mm256_packs_epi32(q(acc[0]), q(acc[1])), ep.y0_16);
        let b = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        let b = _mm_min_epi8(_mm_max_epi8(b, _mm256_castsi256_si128(ep.lo_8)), _mm256_castsi256_si128(ep.hi_8));
        _mm_storeu_si128(dst as *mut __m128i, b);
    }

    #[inline(always)]
    unsafe fn store_reg(acc: __m256i, ep: &Ep<__m256i, __m256>, s: __m256, off: __m256, dst: *mut i8, cols: usize) {
        let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), s), off);
        let v = _mm256_min_ps(_mm256_max_ps(v, ep.lo_f), ep.hi_f);
        let r = _mm256_add_epi32(_mm256_cvtps_epi32(v), ep.y0_32);
        // The low byte of each lane (truncation, as `as i8` does), 8 bytes in order.
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let t = _mm256_shuffle_epi8(r, pick);
        let b = _mm_unpacklo_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
        if cols >= 8 {
            _mm_storel_epi64(dst as *mut __m128i, b);
        } else {
            let mut t = [0i8; 16];
            _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, b);
            std::ptr::copy_nonoverlapping(t.as_ptr(), dst, cols);
        }
    }

    #[inline(always)]
    unsafe fn reduce(acc: &[__m256i]) -> __m256i {
        let (a, b) = (acc[0], acc[1]);
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b))
    }
}

/// Four rows of 16 bytes to 2 registers of words `(a, b, c, d)` per column: register 0
/// holds columns 0-3 and 8-11, register 1 columns 4-7 and 12-15.
#[inline(always)]
unsafe fn interleave256(a: __m128i, b: __m128i, c: __m128i, d: __m128i) -> [__m256i; 2] {
    let ab = _mm256_set_m128i(_mm_unpackhi_epi8(a, b), _mm_unpacklo_epi8(a, b));
    let cd = _mm256_set_m128i(_mm_unpackhi_epi8(c, d), _mm_unpacklo_epi8(c, d));
    [_mm256_unpacklo_epi16(ab, cd), _mm256_unpackhi_epi16(ab, cd)]
}

/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI, and `job` must be consistent (the sizes that
/// `PackedWeights::run` checks, `out` valid for `rows.len() * n` bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn run512(job: &Job) {
    run::<Z, 4>(job)
}

/// # Safety
/// The CPU must have AVX2 and AVX-VNNI; `job` as for [`run512`].
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn run256(job: &Job) {
    run::<Y, 2>(job)
}

/// One column: the matrix-vector product. Otherwise the matrix product, except for a last
/// column alone in its register (49 = 3 x 16 + 1 pixels: a quarter of the products would be
/// padding), which goes through the matrix-vector product too.
#[inline(always)]
unsafe fn run<I: Isa, const PP: usize>(job: &Job) {
    let n = job.n;
    if n == 1 {
        matvec::<I, PP>(job, job.x, 0)
    } else if n % I::L == 1 {
        gemm::<I>(job, n - 1);
        let col: Vec<i8> = job.x.iter().skip(n - 1).step_by(n).copied().collect();
        matvec::<I, PP>(job, &col, n - 1)
    } else {
        gemm::<I>(job, n)
    }
}

/// One tile's operands: rows `r0..r0 + R` of the job against one packed block of columns.
struct Tile<'a, I: Isa> {
    job: &'a Job<'a>,
    ep: &'a Ep<I::V, I::F>,
    /// The packed block: per group, the tile's `V` registers.
    xp: *const u32,
    r0: usize,
    c0: usize,
    /// Columns of the block that are outputs.
    cols: usize,
    /// The rows' biases less `128 * sum(w[r])`, from `job.rows.start`.
    bias: *const i32,
}

/// What the epilogue of full blocks computes, chosen per call from the rows' scales and
/// offsets: `v = acc * s (+ off)`, then (`GENERAL` only) `min(hi - y0, v)` as floats. The
/// add is left out when every offset is zero (adding zero changes nothing but the sign of
/// a zero). The float bound keeps `vcvtps2dq` from turning a large positive value (or a
/// NaN: which must end at the lower bound, as `Requant::row` gives) into i32::MIN; it is
/// left out when every scale and offset is finite and small enough that `|v| < 2^31`.
type Mode = u8;
const PLAIN: Mode = 0;
const OFFSET: Mode = 1;
const GENERAL: Mode = 2;

/// The epilogue mode for rows `rows`.
fn mode(rq: &Requant, rows: Range<usize>) -> Mode {
    let (scale, offset) = (&rq.scale[rows.clone()], &rq.offset[rows]);
    // |acc| <= 2^31, so |acc * s| <= 2^30 and |v| <= 1.5 * 2^30 < 2^31.
    let small = scale.iter().all(|s| s.abs() <= 0.5) && offset.iter().all(|o| o.abs() <= (1u32 << 29) as f32);
    if !small {
        GENERAL
    } else if offset.iter().any(|&o| o != 0.0) {
        OFFSET
    } else {
        PLAIN
    }
}

/// The matrix product for columns `0..ncols`, block of columns by block of columns: each
/// block packed once, then every tile of rows run on it.
#[inline(always)]
unsafe fn gemm<I: Isa>(job: &Job, ncols: usize) {
    let (w, x, n) = (job.w, job.x, job.n);
    let (k, kq) = (w.k, w.kq);
    let rq = job.rq;
    // Full blocks need int8 bounds and a zero point that keeps them within i16; other
    // requantizations go through the exact epilogue of partial blocks.
    let small = |v: i32| (-128..=127).contains(&v);
    let fast = small(rq.lo) && small(rq.hi) && (-32_000..=32_000).contains(&rq.y0);
    let mode = mode(rq, job.rows.clone());
    let ep = I::ep(rq);
    let mut xp = vec![0u32; kq * I::NB];
    let bias: Vec<i32> = job.rows.clone().map(|r| w.bias(job.bias, r)).collect();
    // Row tiles of at most MR rows, as even as possible.
    let total = job.rows.len();
    let tiles = total.div_ceil(I::MR);
    let mut c0 = 0;
    while c0 < ncols {
        let cols = (ncols - c0).min(I::NB);
        let full = cols == I::NB && fast;
        let nv = if full { I::NV } else { cols.div_ceil(I::L) };
        for q in 0..kq {
            let src: [Src; 4] = std::array::from_fn(|i| {
                let row = 4 * q + i;
                if row < k {
                    let at = row * n + c0;
                    (x.as_ptr().add(at), x.len() - at)
                } else {
                    (ZEROS.as_ptr(), ZEROS.len())
                }
            });
            if full {
                I::pack_block(&src, xp.as_mut_ptr().add(q * I::NB));
            } else {
                I::pack_part(&src, nv, xp.as_mut_ptr().add(q * nv * I::L));
            }
        }
        let mut r0 = job.rows.start;
        for t in 0..tiles {
            let h = total / tiles + usize::from(t < total % tiles);
            let tile = Tile::<I> { job, ep: &ep, xp: xp.as_ptr(), r0, c0, cols, bias: bias.as_ptr() };
            match (full, mode) {
                (true, PLAIN) => dispatch::<I, PLAIN>(&tile, h, 0),
                (true, OFFSET) => dispatch::<I, OFFSET>(&tile, h, 0),
                (true, _) => dispatch::<I, GENERAL>(&tile, h, 0),
                (false, _) => dispatch::<I, GENERAL>(&tile, h, nv),
            }
            r0 += h;
        }
        c0 += cols;
    }
}

/// [`tile`] for `h` rows and a full block (`nv = 0`) or `nv` registers of a partial one.
#[inline(always)]
unsafe fn dispatch<I: Isa, const MODE: Mode>(t: &Tile<I>, h: usize, nv: usize) {
    macro_rules! rows {
        ($v:literal, $full:literal) => {
            match h {
                1 => tile::<I, 1, $v, $full, MODE>(t),
                2 => tile::<I, 2, $v, $full, MODE>(t),
                3 => tile::<I, 3, $v, $full, MODE>(t),
                4 => tile::<I, 4, $v, $full, MODE>(t),
                5 => tile::<I, 5, $v, $full, MODE>(t),
                _ => tile::<I, 6, $v, $full, MODE>(t),
            }
        };
    }
    debug_assert!((1..=6).contains(&h) && I::MR == 6 && nv <= I::NV);
    match nv {
        0 if I::NV == 4 => rows!(4, true),
        0 => rows!(2, true),
        1 => rows!(1, false),
        2 => rows!(2, false),
        3 if I::NV == 4 => rows!(3, false),
        4 if I::NV == 4 => rows!(4, false),
        _ => unreachable!(),
    }
}

/// `R` rows by `V` registers of columns: accumulators in registers from the bias, per group
/// of k the block's `V` registers and, per row, its weight word broadcast; then the
/// requantization of each row.
#[inline(always)]
unsafe fn tile<I: Isa, const R: usize, const V: usize, const FULL: bool, const MODE: Mode>(t: &Tile<I>) {
    let job = t.job;
    let w = job.w;
    let (scale, offset) = (&job.rq.scale[t.r0..][..R], &job.rq.offset[t.r0..][..R]);
    let pstride = w.kq_pad * P;
    let mut wp = [std::ptr::null::<u32>(); R];
    let mut acc = [[I::zero(); V]; R];
    for i in 0..R {
        let r = t.r0 + i;
        wp[i] = w.data.as_ptr().add((r / P) * pstride + r % P);
        acc[i] = [I::splat(*t.bias.add(r - job.rows.start)); V];
    }
    for q in 0..w.kq {
        let xq = t.xp.add(q * V * I::L);
        let mut xv = [I::zero(); V];
        for (j, v) in xv.iter_mut().enumerate() {
            *v = I::load(xq.add(j * I::L));
        }
        for i in 0..R {
            let wb = I::splat(*wp[i].add(q * P) as i32);
            for j in 0..V {
                acc[i][j] = I::dot(acc[i][j], xv[j], wb);
            }
        }
    }
    let dst = job.out.add((t.r0 - job.rows.start) * job.n + t.c0);
    for i in 0..R {
        let dst = dst.add(i * job.n);
        if FULL {
            I::store_block::<MODE>(&acc[i], t.ep, scale[i], offset[i], dst);
        } else {
            let (sv, ov) = (I::splat_f(scale[i]), I::splat_f(offset[i]));
            for (j, &v) in acc[i].iter().enumerate() {
                I::store_reg(v, t.ep, sv, ov, dst.add(j * I::L), (t.cols - j * I::L).min(I::L));
            }
        }
    }
}

/// The product with one column `x` (`k` values), written to column `col` of the output:
/// lanes over rows. A register of a panel holds `L / 4` groups of its 4 rows, multiplied by
/// the activations' words each repeated 4 times; `PP = L / 4` panels reduce to one register
/// of `L` rows. Two such units of rows and two registers of k at a time: `4 * PP` independent
/// accumulators.
#[inline(always)]
unsafe fn matvec<I: Isa, const PP: usize>(job: &Job, x: &[i8], col: usize) {
    let w = job.w;
    let (k, kq_pad) = (w.k, w.kq_pad);
    let words = kq_pad * P;
    // Word q of x (flipped to u8), repeated for the 4 rows of a panel.
    let mut xr = vec![0u32; words];
    for (q, c) in x.chunks(4).enumerate() {
        let word = c.iter().enumerate().fold(0u32, |v, (i, &b)| v | ((b as u8 ^ 0x80) as u32) << (8 * i));
        xr[q * P..][..P].fill(word);
    }
    debug_assert!(k.div_ceil(4) <= kq_pad && words.is_multiple_of(2 * I::L));
    let ep = I::ep(job.rq);
    let panels = w.m.div_ceil(P);
    let rows = job.rows.clone();
    // The rows' corrected biases, and a register's worth of zeros after them.
    let mut bias: Vec<i32> = rows.clone().map(|r| w.bias(job.bias, r)).collect();
    bias.resize(rows.len() + 16, 0);
    let mut r = rows.start;
    while r < rows.end {
        let mut base = [[std::ptr::null::<u32>(); PP]; 2];
        for (u, b) in base.iter_mut().enumerate() {
            for (j, p) in b.iter_mut().enumerate() {
                // Panels past the last are computed on the last one, and not stored.
                let panel = (r / P + u * PP + j).min(panels - 1);
                *p = w.data.as_ptr().add(panel * words);
            }
        }
        let mut acc = [[I::zero(); PP]; 4];
        let mut c = 0;
        while c < words {
            let (x0, x1) = (I::load(xr.as_ptr().add(c)), I::load(xr.as_ptr().add(c + I::L)));
            for u in 0..2 {
                for j in 0..PP {
                    let p = base[u][j];
                    acc[2 * u][j] = I::dot(acc[2 * u][j], x0, I::load(p.add(c)));
                    acc[2 * u + 1][j] = I::dot(acc[2 * u + 1][j], x1, I::load(p.add(c + I::L)));
                }
            }
            c += 2 * I::L;
        }
        for u in 0..2 {
            let first = r + u * I::L;
            if first >= rows.end {
                break;
            }
            let mut sum = [I::zero(); PP];
            for (j, s) in sum.iter_mut().enumerate() {
                *s = I::add(acc[2 * u][j], acc[2 * u + 1][j]);
            }
            let count = (rows.end - first).min(I::L);
            let at = first - rows.start;
            let (sv, ov) = if count == I::L {
                (I::load_f(job.rq.scale.as_ptr().add(first)), I::load_f(job.rq.offset.as_ptr().add(first)))
            } else {
                let (mut s, mut o) = ([0f32; 16], [0f32; 16]);
                s[..count].copy_from_slice(&job.rq.scale[first..][..count]);
                o[..count].copy_from_slice(&job.rq.offset[first..][..count]);
                (I::load_f(s.as_ptr()), I::load_f(o.as_ptr()))
            };
            let acc = I::add(I::reduce(&sum), I::load(bias.as_ptr().add(at) as *const u32));
            let dst = job.out.add(at * job.n + col);
            if job.n == 1 {
                I::store_reg(acc, &ep, sv, ov, dst, count);
            } else {
                // A column of a wider output: one byte per row.
                let mut t = [0i8; 16];
                I::store_reg(acc, &ep, sv, ov, t.as_mut_ptr(), count);
                for (i, &v) in t[..count].iter().enumerate() {
                    *dst.add(i * job.n) = v;
                }
            }
        }
        r += 2 * I::L;
    }
}
