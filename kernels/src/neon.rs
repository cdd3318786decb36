//! NEON kernels (aarch64): the matrix product and the depthwise convolution, each for CPUs
//! without the dot product (Cortex-A72, a Pi 4) and with it (A76, A78: a Pi 5, a Jetson Orin).
//!
//! Without it, `smull`/`smlal` multiply int8 bytes straight into i16 lanes (8 products per
//! instruction, twice the 4 of `smlal` on i16 operands) and each lane sums two products before
//! `sadalp`/`saddw` widen into i32: exact unless both weights of a pair are -128, so such pairs
//! are split off at packing (the product) or the channel takes an i16 path (the convolution).
//! With it, `sdot` (inline assembly: its intrinsic is unstable) adds four int8 products per
//! i32 lane. Products pack weights in panels of 4-byte quads along k and activations per call
//! in 8-column tiles; depthwise convolutions read zero-point-padded int8 planes (the dot
//! variant gathers each kernel row's taps into 4-byte groups with `tbl`). The requantization
//! runs in registers exactly as [`Requant::row`] computes it.

use crate::Requant;
use std::ops::Range;

#[cfg(target_arch = "aarch64")]
use crate::{depthwise::Layer, Geometry};
#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "aarch64")]
use std::arch::asm;

/// Whether the `smlal` kernels run here: NEON is part of every aarch64 CPU.
pub fn available() -> bool {
    cfg!(target_arch = "aarch64")
}

/// Whether the `sdot` kernels run here.
pub fn available_dot() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Columns per matrix tile.
#[cfg(target_arch = "aarch64")]
const NR: usize = 8;
/// Rows per weight panel: `sdot` (8 x 8 tiles), `smlal` (4 x 8 tiles).
const MR_DOT: usize = 8;
const MR_MUL: usize = 4;

/// Weights `[m, k]` packed for the matrix kernels.
#[derive(Debug, Clone)]
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub struct PackedWeights {
    m: usize,
    k: usize,
    dot: bool,
    /// Quads of k (zero-padded; even for `smlal`, which takes two per step).
    kq: usize,
    /// Per panel of `mr` rows, per quad `q`, per row `r`: the bytes `w[r][4q..4q + 4]` (stored as
    /// i32, so that each row's quad is aligned for `ld1r`).
    data: Vec<i32>,
    /// `smlal` only: the weights taken out of `data` (value -128), as `(row, k)`; panel `p`'s
    /// are `fixes[fix_at[p]..fix_at[p + 1]]`.
    fix_at: Vec<usize>,
    fixes: Vec<(usize, usize)>,
}

impl PackedWeights {
    pub fn new(weights: &[i8], m: usize, k: usize, dot: bool) -> PackedWeights {
        assert_eq!(weights.len(), m * k);
        let mr = if dot { MR_DOT } else { MR_MUL };
        let kq = if dot { k.div_ceil(4).max(1) } else { k.div_ceil(8).max(1) * 2 };
        let panels = m.div_ceil(mr);
        let at = |r: usize, i: usize| if r < m && i < k { weights[r * k + i] } else { 0 };
        let mut data = Vec::with_capacity(panels * kq * mr);
        let (mut fix_at, mut fixes) = (vec![0], Vec::new());
        for p in 0..panels {
            for q in 0..kq {
                for r in p * mr..(p + 1) * mr {
                    let mut b = [0u8; 4];
                    for (t, v) in b.iter_mut().enumerate() {
                        let (i, mut w) = (4 * q + t, at(r, 4 * q + t));
                        // `smlal` sums w[r][i] x[i] + w[r][i + 4] x[i + 4] (i in an even quad) in
                        // an i16 lane, which only (-128)(-128) + (-128)(-128) overflows: the
                        // second weight of such a pair is added after the loop instead.
                        if !dot && q % 2 == 1 && w == -128 && at(r, i - 4) == -128 {
                            w = 0;
                            fixes.push((r, i));
                        }
                        *v = w as u8;
                    }
                    data.push(i32::from_ne_bytes(b));
                }
            }
            fix_at.push(fixes.len());
        }
        PackedWeights { m, k, dot, kq, data, fix_at, fixes }
    }

    pub fn row_block(&self) -> usize {
        if self.dot {
            MR_DOT
        } else {
            MR_MUL
        }
    }

    /// `out[(r - rows.start) * n + j] = requant(r, bias[r] + sum_i w[r][i] x[i * n + j])`.
    pub fn run(&self, rows: Range<usize>, x: &[i8], n: usize, bias: &[i32], rq: &Requant, out: &mut [i8]) {
        #[cfg(target_arch = "aarch64")]
        {
            assert!(rows.end <= self.m && x.len() == self.k * n && out.len() == rows.len() * n);
            assert!(rows.start.is_multiple_of(self.row_block()) && bias.len() >= self.m);
            assert!(!self.dot || available_dot(), "the CPU has no dot product");
            if rows.is_empty() || n == 0 {
                return;
            }
            // SAFETY: NEON is part of every aarch64 CPU, and `dot` was checked above.
            unsafe {
                if n > 1 {
                    gemm(self, rows, x, n, bias, rq, out)
                } else if self.dot {
                    matvec_dot(self, rows, x, bias, rq, out)
                } else {
                    matvec_mul(self, rows, x, bias, rq, out)
                }
            }
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (rows, x, n, bias, rq, out);
            unreachable!("NEON kernels run on aarch64 only")
        }
    }
}

/// The depthwise convolution of `l` for channels `chans` (`out` holds just their planes), with
/// `sdot` if `dot`.
pub fn depthwise(l: &crate::depthwise::Layer, chans: Range<usize>, x: &[i8], out: &mut [i8], dot: bool) {
    #[cfg(target_arch = "aarch64")]
    {
        let g = l.g;
        assert!(chans.end <= g.cin && x.len() == g.cin * g.h * g.w && out.len() == chans.len() * g.oh * g.ow);
        let square = g.kh == g.kw && g.sh == g.sw && matches!(g.kw, 3 | 5) && matches!(g.sw, 1 | 2);
        if out.is_empty() {
            return;
        }
        if !square {
            dw_i16(l, chans, x, out)
        } else if dot {
            assert!(available_dot(), "the CPU has no dot product");
            // SAFETY: the CPU has the dot product (asserted above).
            unsafe { dw_dot(l, chans, x, out) }
        } else {
            // SAFETY: NEON is part of every aarch64 CPU.
            unsafe { dw_mul(l, chans, x, out) }
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = (l, chans, x, out, dot);
        unreachable!("NEON kernels run on aarch64 only")
    }
}

/// `acc += a . b` per i32 lane (four int8 products each); with a lane, `b`'s 4-byte group
/// `lane` for every lane of `acc`. Only inside `dotprod` functions.
#[cfg(target_arch = "aarch64")]
macro_rules! sdot {
    ($acc:expr, $a:expr, $b:expr) => {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) $acc, in(vreg) $a, in(vreg) $b,
            options(pure, nomem, nostack))
    };
    ($acc:expr, $a:expr, $b:expr, $lane:literal) => {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[{3}]", inout(vreg) $acc, in(vreg) $a, in(vreg) $b,
            const $lane, options(pure, nomem, nostack))
    };
}

/// One channel's requantization in registers, as [`Requant::row_inline`]: multiply, then add
/// (never fused), clamp (`fmaxnm`/`fminnm` pick the bound over a NaN, as its compare-and-select
/// does), round half to even, add the zero point. After the clamp the values fit an i8 once
/// `y0` is added, so narrowing keeps the low bytes and adds `y0` as bytes.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
struct RqVec {
    scale: float32x4_t,
    off: float32x4_t,
    /// Adding a zero offset changes nothing once rounded (not even a -0.0).
    has_off: bool,
    lo: float32x4_t,
    hi: float32x4_t,
    y0: int8x16_t,
}

#[cfg(target_arch = "aarch64")]
impl RqVec {
    /// The layer's bounds and zero point (a scale of 1, no offset).
    #[inline]
    #[target_feature(enable = "neon")]
    fn layer(rq: &Requant) -> RqVec {
        RqVec {
            scale: vdupq_n_f32(1.0),
            off: vdupq_n_f32(0.0),
            has_off: false,
            lo: vdupq_n_f32((rq.lo - rq.y0) as f32),
            hi: vdupq_n_f32((rq.hi - rq.y0) as f32),
            y0: vdupq_n_s8(rq.y0 as i8),
        }
    }

    /// Channel `c`'s.
    #[inline]
    #[target_feature(enable = "neon")]
    fn channel(self, rq: &Requant, c: usize) -> RqVec {
        let (s, off) = (rq.scale[c], rq.offset[c]);
        RqVec { scale: vdupq_n_f32(s), off: vdupq_n_f32(off), has_off: off != 0.0, ..self }
    }

    /// Rounded and clamped, without the zero point.
    #[inline]
    #[target_feature(enable = "neon")]
    fn q4(&self, a: int32x4_t) -> int16x8_t {
        let mut v = vmulq_f32(vcvtq_f32_s32(a), self.scale);
        if self.has_off {
            v = vaddq_f32(v, self.off);
        }
        vreinterpretq_s16_s32(vcvtnq_s32_f32(vminnmq_f32(vmaxnmq_f32(v, self.lo), self.hi)))
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn q8(&self, a: [int32x4_t; 2]) -> int8x8_t {
        let h = vuzp1q_s16(self.q4(a[0]), self.q4(a[1]));
        vadd_s8(vmovn_s16(h), vget_low_s8(self.y0))
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn q16(&self, a: [int32x4_t; 4]) -> int8x16_t {
        let h0 = vreinterpretq_s8_s16(vuzp1q_s16(self.q4(a[0]), self.q4(a[1])));
        let h1 = vreinterpretq_s8_s16(vuzp1q_s16(self.q4(a[2]), self.q4(a[3])));
        vaddq_s8(vuzp1q_s8(h0, h1), self.y0)
    }
}

/// Writes the first `len` (< 16) bytes of `v` to `dst`.
///
/// Safety: `dst` is valid for `len` bytes.
#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store_part(dst: *mut i8, v: int8x16_t, len: usize) {
    // 8, 4, 2, 1 bytes as `len`'s bits say, from the low end of `v` (no `memcpy` call, which
    // would make the callers save their vector registers).
    let (mut d, mut v) = (dst, vreinterpretq_u64_s8(v));
    if len & 8 != 0 {
        std::ptr::write_unaligned(d as *mut u64, vgetq_lane_u64::<0>(v));
        (d, v) = (d.add(8), vextq_u64::<1>(v, v));
    }
    let mut rest = vgetq_lane_u64::<0>(v);
    if len & 4 != 0 {
        std::ptr::write_unaligned(d as *mut u32, rest as u32);
        (d, rest) = (d.add(4), rest >> 32);
    }
    if len & 2 != 0 {
        std::ptr::write_unaligned(d as *mut u16, rest as u16);
        (d, rest) = (d.add(2), rest >> 16);
    }
    if len & 1 != 0 {
        *d = rest as i8;
    }
}

/// `smull2` and `smlal2` (products of the high halves) in assembly: with a repeated operand
/// the compiler turns the intrinsics into an `ext` of the other one and a `smull`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn smull2(a: int8x16_t, b: int8x16_t) -> int16x8_t {
    let r;
    asm!("smull2 {0:v}.8h, {1:v}.16b, {2:v}.16b", out(vreg) r, in(vreg) a, in(vreg) b, options(pure, nomem, nostack));
    r
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn smlal2(mut acc: int16x8_t, a: int8x16_t, b: int8x16_t) -> int16x8_t {
    asm!("smlal2 {0:v}.8h, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack));
    acc
}

// ---------------------------------------------------------------------------------------------
// Matrix product.

/// One tile's inputs and where its outputs go.
#[cfg(target_arch = "aarch64")]
struct Tile<'a> {
    /// The panel's packed weights and the tile's packed columns.
    w: *const i8,
    x: *const i8,
    kq: usize,
    /// First (absolute) row, rows and columns to write.
    row0: usize,
    rows: usize,
    cols: usize,
    /// Output of `(row0, first column)`; rows `n` apart.
    out: *mut i8,
    n: usize,
    bias: &'a [i32],
    rq: &'a Requant,
    rqv: RqVec,
    /// The panel's weights taken out of the packing, and the activations to apply them to.
    fixes: &'a [(usize, usize)],
    xs: &'a [i8],
    c0: usize,
}

/// Per block of columns (packed once, about 96 KB, while every panel of `rows` passes over it),
/// per panel, per tile of 8 columns: the tile kernel with its requantization.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn gemm(w: &PackedWeights, rows: Range<usize>, x: &[i8], n: usize, bias: &[i32], rq: &Requant, out: &mut [i8]) {
    let (mr, kq) = (w.row_block(), w.kq);
    let nc = ((96 << 10) / (4 * kq)).max(16) / 16 * 16;
    let nc = nc.min(n.div_ceil(16) * 16);
    let mut xp = vec![0i8; nc * kq * 4];
    let rqv = RqVec::layer(rq);
    for c0 in (0..n).step_by(nc) {
        let cols = nc.min(n - c0);
        pack_x(x, w.k, n, c0, cols, kq, &mut xp);
        for p in rows.start / mr..rows.end.div_ceil(mr) {
            let row0 = p * mr;
            let wp = w.data[p * kq * mr..].as_ptr() as *const i8;
            for t in 0..cols.div_ceil(NR) {
                let cc = c0 + t * NR;
                let tile = Tile {
                    w: wp,
                    x: xp[t * kq * NR * 4..].as_ptr(),
                    kq,
                    row0,
                    rows: (rows.end - row0).min(mr),
                    cols: (n - cc).min(NR),
                    out: out[(row0 - rows.start) * n + cc..].as_mut_ptr(),
                    n,
                    bias,
                    rq,
                    rqv,
                    fixes: &w.fixes[w.fix_at[p]..w.fix_at[p + 1]],
                    xs: x,
                    c0: cc,
                };
                if w.dot {
                    // SAFETY: `run` checked the dot product; the tile's packed weights and columns
                    // hold `kq` quads, and its `rows` x `cols` outputs lie inside `out`.
                    unsafe { tile_dot(&tile) }
                } else {
                    // SAFETY: as above.
                    unsafe { tile_mul(&tile) }
                }
            }
        }
    }
}

/// Columns `c0..c0 + cols` of `x` (`[k, n]`) as tiles of 8 columns: per tile, per quad `q`, per
/// column `j`, the bytes `x[4q..4q + 4][j]` (zero past `k` and `n`). Two tiles at a time:
/// 16-byte rows zipped by bytes, then by byte pairs.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn pack_x(x: &[i8], k: usize, n: usize, c0: usize, cols: usize, kq: usize, xp: &mut [i8]) {
    assert!(c0 + cols <= n && x.len() == k * n && xp.len() >= cols.div_ceil(16) * 2 * kq * 32 && 4 * kq >= k);
    for tp in 0..cols.div_ceil(16) {
        let cc = c0 + 16 * tp;
        let width = (n - cc).min(16);
        // Row i's 16 columns, through a zeroed copy past `k` or `n`.
        let row = |i: usize| -> int8x16_t {
            let mut b = [0i8; 16];
            if i < k {
                b[..width].copy_from_slice(&x[i * n + cc..][..width]);
            }
            // SAFETY: `b` holds 16 bytes.
            unsafe { vld1q_s8(b.as_ptr()) }
        };
        // Quads read in place: 16 columns, 4 rows within x.
        let direct = if width == 16 { k / 4 } else { 0 };
        for q in 0..kq {
            let [a, b, c, d] = if q < direct {
                // SAFETY: rows 4q..4q + 4 are below k, columns cc..cc + 16 within n.
                unsafe {
                    let p = x.as_ptr().add(4 * q * n + cc);
                    [vld1q_s8(p), vld1q_s8(p.add(n)), vld1q_s8(p.add(2 * n)), vld1q_s8(p.add(3 * n))]
                }
            } else {
                [row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3)]
            };
            let (ab0, ab1) = (vreinterpretq_s16_s8(vzip1q_s8(a, b)), vreinterpretq_s16_s8(vzip2q_s8(a, b)));
            let (cd0, cd1) = (vreinterpretq_s16_s8(vzip1q_s8(c, d)), vreinterpretq_s16_s8(vzip2q_s8(c, d)));
            // SAFETY: tiles 2 tp and 2 tp + 1 lie within `xp` (asserted above).
            unsafe {
                let t0 = xp.as_mut_ptr().add((2 * tp * kq + q) * 32);
                let t1 = t0.add(kq * 32);
                vst1q_s8(t0, vreinterpretq_s8_s16(vzip1q_s16(ab0, cd0)));
                vst1q_s8(t0.add(16), vreinterpretq_s8_s16(vzip2q_s16(ab0, cd0)));
                vst1q_s8(t1, vreinterpretq_s8_s16(vzip1q_s16(ab1, cd1)));
                vst1q_s8(t1.add(16), vreinterpretq_s8_s16(vzip2q_s16(ab1, cd1)));
            }
        }
    }
}

/// 8 rows x 8 columns: per quad, 16 `sdot`s, each row's 4 weights (a lane of the packed
/// weights) against 4 columns' 4 activations.
///
/// Safety: the CPU has the dot product; `t` is as [`gemm`] makes it.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
unsafe fn tile_dot(t: &Tile) {
    let mut a = [[vdupq_n_s32(0); 2]; 8];
    let (mut w, mut x) = (t.w, t.x);
    for _ in 0..t.kq {
        let (w0, w1) = (vld1q_s8(w), vld1q_s8(w.add(16)));
        let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
        sdot!(a[0][0], x0, w0, 0);
        sdot!(a[0][1], x1, w0, 0);
        sdot!(a[1][0], x0, w0, 1);
        sdot!(a[1][1], x1, w0, 1);
        sdot!(a[2][0], x0, w0, 2);
        sdot!(a[2][1], x1, w0, 2);
        sdot!(a[3][0], x0, w0, 3);
        sdot!(a[3][1], x1, w0, 3);
        sdot!(a[4][0], x0, w1, 0);
        sdot!(a[4][1], x1, w1, 0);
        sdot!(a[5][0], x0, w1, 1);
        sdot!(a[5][1], x1, w1, 1);
        sdot!(a[6][0], x0, w1, 2);
        sdot!(a[6][1], x1, w1, 2);
        sdot!(a[7][0], x0, w1, 3);
        sdot!(a[7][1], x1, w1, 3);
        w = w.add(32);
        x = x.add(32);
    }
    store_rows(&a, t)
}

/// 4 rows x 8 columns, two quads (q, q + 1) per step, in one block of assembly (the compiler
/// hoisted the products apart and spilled). Per row, its two quads repeated (`ld4r`: 4 rows
/// per load); per 4 columns, `smull` + `smlal` (and `smull2` + `smlal2`) put `x[4q + t] w[4q +
/// t] + x[4q + 4 + t] w[4q + 4 + t]` in i16 lanes (column, t), `sadalp` adds lane pairs into
/// i32 (the two halves of each 4 x 4 block, summed pairwise at the end). Per step 48 multiply
/// or accumulate instructions for 256 products, 4 loads, 2 loop instructions.
///
/// Safety: `t` is as [`gemm`] makes it (`kq` even, at least 2).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn tile_mul(t: &Tile) {
    let z = vdupq_n_s32(0);
    // acc[r][2 g + h]: row r, columns 4 g..4 g + 4, half h (the i16 lanes from the low or the
    // high 8 bytes of the columns' quads).
    let mut a = [[z; 4]; MR_MUL];
    // Registers: v0, v1 quad q of columns 0-3, 4-7, v2, v3 quad q + 1; v4-v7 quad q of rows
    // 0-3 repeated, v8-v11 quad q + 1; v12-v15 products; v16-v31 the accumulators. `mac!`:
    // accumulators lo, hi += the products of columns xa, xb (quads q, q + 1) and rows wa, wb.
    #[rustfmt::skip]
    macro_rules! mac {
        ($lo:literal, $hi:literal, $xa:literal, $xb:literal, $wa:literal, $wb:literal, $t0:literal, $t1:literal) => {
            concat!(
                "smull v", $t0, ".8h, v", $xa, ".8b, v", $wa, ".8b\n",
                "smlal v", $t0, ".8h, v", $xb, ".8b, v", $wb, ".8b\n",
                "smull2 v", $t1, ".8h, v", $xa, ".16b, v", $wa, ".16b\n",
                "smlal2 v", $t1, ".8h, v", $xb, ".16b, v", $wb, ".16b\n",
                "sadalp v", $lo, ".4s, v", $t0, ".8h\n",
                "sadalp v", $hi, ".4s, v", $t1, ".8h",
            )
        };
    }
    asm!(
        "2:",
        "ldp q0, q1, [{x}], #32",
        "ldp q2, q3, [{x}], #32",
        "ld4r {{ v4.4s, v5.4s, v6.4s, v7.4s }}, [{w}], #16",
        "ld4r {{ v8.4s, v9.4s, v10.4s, v11.4s }}, [{w}], #16",
        mac!("16", "17", "0", "2", "4", "8", "12", "13"),
        mac!("18", "19", "1", "3", "4", "8", "14", "15"),
        mac!("20", "21", "0", "2", "5", "9", "12", "13"),
        mac!("22", "23", "1", "3", "5", "9", "14", "15"),
        mac!("24", "25", "0", "2", "6", "10", "12", "13"),
        mac!("26", "27", "1", "3", "6", "10", "14", "15"),
        mac!("28", "29", "0", "2", "7", "11", "12", "13"),
        mac!("30", "31", "1", "3", "7", "11", "14", "15"),
        "subs {n}, {n}, #1",
        "b.ne 2b",
        x = inout(reg) t.x => _,
        w = inout(reg) t.w => _,
        n = inout(reg) t.kq / 2 => _,
        out("v0") _, out("v1") _, out("v2") _, out("v3") _,
        out("v4") _, out("v5") _, out("v6") _, out("v7") _,
        out("v8") _, out("v9") _, out("v10") _, out("v11") _,
        out("v12") _, out("v13") _, out("v14") _, out("v15") _,
        inout("v16") a[0][0], inout("v17") a[0][1], inout("v18") a[0][2], inout("v19") a[0][3],
        inout("v20") a[1][0], inout("v21") a[1][1], inout("v22") a[1][2], inout("v23") a[1][3],
        inout("v24") a[2][0], inout("v25") a[2][1], inout("v26") a[2][2], inout("v27") a[2][3],
        inout("v28") a[3][0], inout("v29") a[3][1], inout("v30") a[3][2], inout("v31") a[3][3],
        options(nostack, readonly),
    );
    store_rows(&a.map(|r| [vpaddq_s32(r[0], r[1]), vpaddq_s32(r[2], r[3])]), t)
}

/// The tile's epilogue: bias, requantization, 8 bytes per row (through a buffer for a partial
/// tile or a panel with weights taken out of the packing).
///
/// Safety: `t` is as [`gemm`] makes it.
#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store_rows<const R: usize>(a: &[[int32x4_t; 2]; R], t: &Tile) {
    let rows = t.row0..t.row0 + t.rows;
    let (bias, scale, off) = (&t.bias[rows.clone()], &t.rq.scale[rows.clone()], &t.rq.offset[rows]);
    let rows = a.iter().zip(bias).zip(scale.iter().zip(off)).enumerate();
    if t.cols == NR && t.fixes.is_empty() {
        for (i, ((a, &b), (&s, &o))) in rows {
            // (Always adding the offset: cheaper than a branch per row.)
            let q = RqVec { scale: vdupq_n_f32(s), off: vdupq_n_f32(o), has_off: true, ..t.rqv };
            let b = vdupq_n_s32(b);
            vst1_s8(t.out.add(i * t.n), q.q8([vaddq_s32(a[0], b), vaddq_s32(a[1], b)]));
        }
        return;
    }
    for (i, ((a, &b), _)) in rows {
        let r = t.row0 + i;
        let b = vdupq_n_s32(b);
        let mut s = [0i32; NR];
        vst1q_s32(s.as_mut_ptr(), vaddq_s32(a[0], b));
        vst1q_s32(s.as_mut_ptr().add(4), vaddq_s32(a[1], b));
        for &(_, k) in t.fixes.iter().filter(|f| f.0 == r) {
            for (j, s) in s.iter_mut().enumerate().take(t.cols) {
                *s = s.wrapping_add(-128 * t.xs[k * t.n + t.c0 + j] as i32);
            }
        }
        t.rq.row_inline(r, &s[..t.cols], std::slice::from_raw_parts_mut(t.out.add(i * t.n), t.cols));
    }
}

/// `x` as zero-padded quads of bytes, one per i32 (for `ld1r`).
#[cfg(target_arch = "aarch64")]
fn quads(x: &[i8], kq: usize) -> Vec<i32> {
    (0..kq).map(|q| i32::from_ne_bytes(std::array::from_fn(|t| x.get(4 * q + t).copied().unwrap_or(0) as u8))).collect()
}

/// The matrix-vector epilogue of one panel: `sums[i]` is row `row0 + i`'s product.
#[cfg(target_arch = "aarch64")]
#[allow(clippy::too_many_arguments)]
fn finish_panel(
    w: &PackedWeights,
    row0: usize,
    sums: &[i32],
    rows: &Range<usize>,
    x: &[i8],
    bias: &[i32],
    rq: &Requant,
    out: &mut [i8],
) {
    let p = row0 / w.row_block();
    for (i, &s) in sums.iter().enumerate() {
        let r = row0 + i;
        if !rows.contains(&r) {
            continue;
        }
        let fixed = w.fixes[w.fix_at[p]..w.fix_at[p + 1]].iter().filter(|f| f.0 == r);
        let s = fixed.fold(bias[r].wrapping_add(s), |s, f| s.wrapping_add(-128 * x[f.1] as i32));
        let o = r - rows.start;
        rq.row_inline(r, &[s], &mut out[o..o + 1]);
    }
}

/// One column: per panel of 8 rows, per quad, the 8 rows' quads (two registers) `sdot` the
/// activations' quad repeated (`ld1r`); two sets of accumulators for alternate quads.
///
/// Safety: the CPU has the dot product; the sizes are as [`PackedWeights::run`] checked them.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
unsafe fn matvec_dot(w: &PackedWeights, rows: Range<usize>, x: &[i8], bias: &[i32], rq: &Requant, out: &mut [i8]) {
    let kq = w.kq;
    let xq = quads(x, kq);
    for p in rows.start / MR_DOT..rows.end.div_ceil(MR_DOT) {
        let mut wp = w.data.as_ptr().add(p * kq * MR_DOT) as *const i8;
        let mut xs = xq.as_ptr();
        let mut a = [vdupq_n_s32(0); 4];
        for _ in 0..kq / 2 {
            let (x0, x1) = (vreinterpretq_s8_s32(vld1q_dup_s32(xs)), vreinterpretq_s8_s32(vld1q_dup_s32(xs.add(1))));
            sdot!(a[0], vld1q_s8(wp), x0);
            sdot!(a[1], vld1q_s8(wp.add(16)), x0);
            sdot!(a[2], vld1q_s8(wp.add(32)), x1);
            sdot!(a[3], vld1q_s8(wp.add(48)), x1);
            wp = wp.add(64);
            xs = xs.add(2);
        }
        if kq % 2 == 1 {
            let x0 = vreinterpretq_s8_s32(vld1q_dup_s32(xs));
            sdot!(a[0], vld1q_s8(wp), x0);
            sdot!(a[1], vld1q_s8(wp.add(16)), x0);
        }
        let mut s = [0i32; MR_DOT];
        vst1q_s32(s.as_mut_ptr(), vaddq_s32(a[0], a[2]));
        vst1q_s32(s.as_mut_ptr().add(4), vaddq_s32(a[1], a[3]));
        finish_panel(w, p * MR_DOT, &s, &rows, x, bias, rq, out);
    }
}

/// One column without the dot product: per panel of 4 rows, two quads per step, the i16 pair
/// sums of [`tile_mul`] with rows in the lanes and the activations' quads repeated; two sets
/// of accumulators for alternate steps.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn matvec_mul(w: &PackedWeights, rows: Range<usize>, x: &[i8], bias: &[i32], rq: &Requant, out: &mut [i8]) {
    let kq = w.kq;
    let xq = quads(x, kq);
    // Quads q, q + 1 of the 4 rows (32 bytes at `wp`) and of x (2 at `xp`) into `a`.
    let step = |a: &mut [int32x4_t], wp: &[i32], xp: &[i32]| {
        // SAFETY: `wp` holds 8 values (32 bytes), `xp` 2.
        unsafe {
            let (wa, wb) = (vld1q_s8(wp.as_ptr() as *const i8), vld1q_s8(wp.as_ptr().add(4) as *const i8));
            let xa = vreinterpretq_s8_s32(vld1q_dup_s32(xp.as_ptr()));
            let xb = vreinterpretq_s8_s32(vld1q_dup_s32(xp.as_ptr().add(1)));
            let lo = vmlal_s8(vmull_s8(vget_low_s8(wa), vget_low_s8(xa)), vget_low_s8(wb), vget_low_s8(xb));
            a[0] = vpadalq_s16(a[0], lo);
            a[1] = vpadalq_s16(a[1], smlal2(smull2(wa, xa), wb, xb));
        }
    };
    for p in rows.start / MR_MUL..rows.end.div_ceil(MR_MUL) {
        let panel = &w.data[p * kq * MR_MUL..][..kq * MR_MUL];
        let mut a = [vdupq_n_s32(0); 4];
        let (w4, x4) = (panel.chunks_exact(4 * MR_MUL), xq.chunks_exact(4));
        let (wr, xr) = (w4.remainder(), x4.remainder());
        for (wq, xq) in w4.zip(x4) {
            step(&mut a[..2], &wq[..8], &xq[..2]);
            step(&mut a[2..], &wq[8..], &xq[2..]);
        }
        if !xr.is_empty() {
            step(&mut a[..2], wr, xr);
        }
        let mut s = [0i32; MR_MUL];
        // SAFETY: `s` holds 4 lanes.
        unsafe { vst1q_s32(s.as_mut_ptr(), vpaddq_s32(vaddq_s32(a[0], a[2]), vaddq_s32(a[1], a[3]))) };
        finish_panel(w, p * MR_MUL, &s, &rows, x, bias, rq, out);
    }
}

#[cfg(target_arch = "aarch64")]
#[path = "neon_dw.rs"]
mod dw;
#[cfg(target_arch = "aarch64")]
use dw::{dw_dot, dw_i16, dw_mul};

#[cfg(all(test, target_arch = "aarch64"))]
#[path = "neon_tests.rs"]
mod tests;
