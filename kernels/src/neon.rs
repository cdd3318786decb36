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

// ---------------------------------------------------------------------------------------------
// Depthwise convolution.

/// One channel's plane padded with the zero point, as `phases` planes of column phases (phase
/// `f` holds padded columns `f, f + phases, ...`): `[phases, hp, pw]` bytes.
#[cfg(target_arch = "aarch64")]
struct Padded {
    data: Vec<i8>,
    hp: usize,
    pw: usize,
    psz: usize,
    phases: usize,
    /// One padded input row (2 phases only).
    row: Vec<i8>,
}

#[cfg(target_arch = "aarch64")]
impl Padded {
    /// Rows of at least `min_pw` bytes (rounded up to 16).
    fn new(g: &Geometry, phases: usize, min_pw: usize) -> Padded {
        let hp = (g.oh - 1) * g.sh + g.kh;
        let wp = (g.ow - 1) * g.sw + g.kw;
        let pw = wp.div_ceil(phases).max(min_pw).div_ceil(16) * 16;
        let psz = hp * pw;
        let row = vec![0; if phases == 2 { 2 * pw } else { 0 }];
        Padded { data: vec![0; phases * psz], hp, pw, psz, phases, row }
    }

    fn fill(&mut self, g: &Geometry, x0: i8, plane: &[i8]) {
        let (pw, psz) = (self.pw, self.psz);
        self.data.fill(x0);
        for iy in 0..g.h {
            let py = iy + g.pt;
            if py >= self.hp {
                break;
            }
            let src = &plane[iy * g.w..][..g.w];
            let len = g.w.min((self.phases * pw).saturating_sub(g.pl));
            if len == 0 {
                continue;
            }
            if self.phases == 1 {
                self.data[py * pw + g.pl..][..len].copy_from_slice(&src[..len]);
                continue;
            }
            self.row.fill(x0);
            self.row[g.pl..][..len].copy_from_slice(&src[..len]);
            let (even, odd) = self.data.split_at_mut(psz);
            let (even, odd) = (&mut even[py * pw..][..pw], &mut odd[py * pw..][..pw]);
            for (i, pair) in self.row.chunks_exact(32).enumerate() {
                // SAFETY: 32 bytes read, 16 written to each phase row (pw is a multiple of 16).
                unsafe {
                    let v = vld2q_s8(pair.as_ptr());
                    vst1q_s8(even[16 * i..][..16].as_mut_ptr(), v.0);
                    vst1q_s8(odd[16 * i..][..16].as_mut_ptr(), v.1);
                }
            }
        }
    }
}

/// Shapes other than 3 x 3 and 5 x 5 at stride 1 or 2, and channels [`dw_mul`] cannot sum
/// exactly: the shared driver with i16 `smlal` blocks.
#[cfg(target_arch = "aarch64")]
fn dw_i16(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    use crate::depthwise::body;
    // SAFETY (both): NEON is part of every aarch64 CPU.
    if l.g.ow > 8 {
        body::<16>(l, chans, x, out, |p, b, o, w, c| unsafe { block_i16::<16>(p, b, o, w, c) })
    } else {
        body::<8>(l, chans, x, out, |p, b, o, w, c| unsafe { block_i16::<8>(p, b, o, w, c) })
    }
}

#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
fn block_i16<const LANES: usize>(ph: &[i16], base: usize, offsets: &[usize], wts: &[i16], b: i32) -> [i32; LANES] {
    let mut a = [vdupq_n_s32(b); 4];
    for (&off, &w) in offsets.iter().zip(wts) {
        let s = &ph[base + off..base + off + LANES];
        for h in 0..LANES / 8 {
            // SAFETY: `s` holds LANES values.
            let v = unsafe { vld1q_s16(s.as_ptr().add(8 * h)) };
            a[2 * h] = vmlal_n_s16(a[2 * h], vget_low_s16(v), w);
            a[2 * h + 1] = vmlal_high_n_s16(a[2 * h + 1], v, w);
        }
    }
    let mut r = [0i32; LANES];
    for (h, a) in a.iter().enumerate().take(LANES / 4) {
        // SAFETY: `r` holds LANES values.
        unsafe { vst1q_s32(r.as_mut_ptr().add(4 * h), *a) };
    }
    r
}

/// Picks [`dw_mul_k`]'s instance: 8 outputs per block for planes up to 8 wide, else 16.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn dw_mul(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    let g = l.g;
    match (g.kw, g.sw, g.ow <= 8) {
        (3, 1, true) => dw_mul_k::<3, 1, 8>(l, chans, x, out),
        (3, 1, false) => dw_mul_k::<3, 1, 16>(l, chans, x, out),
        (3, 2, true) => dw_mul_k::<3, 2, 8>(l, chans, x, out),
        (3, 2, false) => dw_mul_k::<3, 2, 16>(l, chans, x, out),
        (5, 1, true) => dw_mul_k::<5, 1, 8>(l, chans, x, out),
        (5, 1, false) => dw_mul_k::<5, 1, 16>(l, chans, x, out),
        (5, 2, true) => dw_mul_k::<5, 2, 8>(l, chans, x, out),
        _ => dw_mul_k::<5, 2, 16>(l, chans, x, out),
    }
}

/// K x K taps at stride S without the dot product, `L` (8 or 16) outputs per block: the plane
/// padded into S column phases (every tap a contiguous run), the taps in pairs in row-major
/// order: `smull` + `smlal` sum a pair's two products in i16 lanes, `saddw` widens them into
/// i32. A channel with a pair of -128 weights goes to [`dw_i16`].
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn dw_mul_k<const K: usize, const S: usize, const L: usize>(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    let g = *l.g;
    let owr = g.ow.div_ceil(L) * L;
    let mut pad = Padded::new(&g, S, owr + (K - 1) / S);
    let (pw, psz) = (pad.pw, pad.psz);
    let (plane, rqv) = (g.oh * g.ow, RqVec::layer(l.requant));
    for c in chans.clone() {
        let wts = &l.weights[c * K * K..][..K * K];
        let o = &mut out[(c - chans.start) * plane..][..plane];
        if wts.chunks_exact(2).any(|p| p[0] == -128 && p[1] == -128) {
            dw_i16(l, c..c + 1, x, o);
            continue;
        }
        pad.fill(&g, l.x0, &x[c * g.h * g.w..][..g.h * g.w]);
        let mut wv = [vdupq_n_s8(0); 25];
        for (v, &w) in wv.iter_mut().zip(wts) {
            *v = vdupq_n_s8(w);
        }
        let rq = rqv.channel(l.requant, c);
        // SAFETY: `pad` holds `oh` output rows' taps for `owr` columns (rows `(K - 1) / S`
        // longer than `owr`); `o` holds `oh * ow` outputs.
        unsafe { dw_mul_plane::<K, S, L>(pad.data.as_ptr(), pw, psz, wv, l.bias[c], rq, o.as_mut_ptr(), g.oh, g.ow) }
    }
}

/// Safety: as in [`dw_mul_k`].
#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_mul_plane<const K: usize, const S: usize, const L: usize>(
    p: *const i8,
    pw: usize,
    psz: usize,
    wv: [int8x16_t; 25],
    b: i32,
    rq: RqVec,
    out: *mut i8,
    oh: usize,
    ow: usize,
) {
    // Tap t's offset: its phase's plane, its row, its column within the phase.
    let tap = |t: usize| (t % K % S) * psz + (t / K) * pw + t % K / S;
    for oy in 0..oh {
        let row = p.add(oy * S * pw);
        let orow = out.add(oy * ow);
        for ox in (0..ow).step_by(L) {
            let base = row.add(ox);
            let mut acc = [vdupq_n_s32(b); 4];
            // The taps in pairs, unrolled (t past K * K does nothing).
            let mut pair = |t: usize| {
                if t >= K * K {
                    return;
                }
                let (pa, wa) = (base.add(tap(t)), wv[t]);
                let single = t + 1 == K * K;
                let (pb, wb) = if single { (pa, wa) } else { (base.add(tap(t + 1)), wv[t + 1]) };
                if L == 8 {
                    let mut s = vmull_s8(vld1_s8(pa), vget_low_s8(wa));
                    if !single {
                        s = vmlal_s8(s, vld1_s8(pb), vget_low_s8(wb));
                    }
                    acc[0] = vaddw_s16(acc[0], vget_low_s16(s));
                    acc[1] = vaddw_high_s16(acc[1], s);
                    return;
                }
                let xa = vld1q_s8(pa);
                let (mut lo, mut hi) = (vmull_s8(vget_low_s8(xa), vget_low_s8(wa)), smull2(xa, wa));
                if !single {
                    let xb = vld1q_s8(pb);
                    lo = vmlal_s8(lo, vget_low_s8(xb), vget_low_s8(wb));
                    hi = smlal2(hi, xb, wb);
                }
                acc[0] = vaddw_s16(acc[0], vget_low_s16(lo));
                acc[1] = vaddw_high_s16(acc[1], lo);
                acc[2] = vaddw_s16(acc[2], vget_low_s16(hi));
                acc[3] = vaddw_high_s16(acc[3], hi);
            };
            pair(0);
            pair(2);
            pair(4);
            pair(6);
            pair(8);
            pair(10);
            pair(12);
            pair(14);
            pair(16);
            pair(18);
            pair(20);
            pair(22);
            pair(24);
            if L == 8 {
                let v = rq.q8([acc[0], acc[1]]);
                if ox + 8 <= ow {
                    vst1_s8(orow.add(ox), v);
                } else {
                    store_part(orow.add(ox), vcombine_s8(v, v), ow - ox);
                }
                continue;
            }
            let v = rq.q16(acc);
            if ox + 16 <= ow {
                vst1q_s8(orow.add(ox), v);
            } else {
                store_part(orow.add(ox), v, ow - ox);
            }
        }
    }
}

/// Picks [`dw_dot_k`]'s instance: 8 outputs per block for planes up to 8 wide, else 16.
///
/// Safety: the CPU has the dot product; the layer is 3 x 3 or 5 x 5 at stride 1 or 2.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
unsafe fn dw_dot(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    let g = l.g;
    match (g.kw, g.sw, g.ow <= 8) {
        (3, 1, true) => dw_dot_k::<3, 1, 1, 2>(l, chans, x, out),
        (3, 1, false) => dw_dot_k::<3, 1, 1, 4>(l, chans, x, out),
        (3, 2, true) => dw_dot_k::<3, 2, 1, 2>(l, chans, x, out),
        (3, 2, false) => dw_dot_k::<3, 2, 1, 4>(l, chans, x, out),
        (5, 1, true) => dw_dot_k::<5, 1, 2, 2>(l, chans, x, out),
        (5, 1, false) => dw_dot_k::<5, 1, 2, 4>(l, chans, x, out),
        (5, 2, true) => dw_dot_k::<5, 2, 2, 2>(l, chans, x, out),
        _ => dw_dot_k::<5, 2, 2, 4>(l, chans, x, out),
    }
}

/// K x K taps at stride S with `sdot`, `4 Q` outputs per block (Q quads of 4). Per kernel row,
/// its taps in G groups of 4 (zero weights past K): for outputs `ox..ox + 4`, group `gi`'s bytes
/// `x[(ox + l) S + 4 gi + t]` (l, t < 4) come from one 16-byte window at `ox S + 4 gi` through
/// `tbl` (indices `l S + t`), then one `sdot` with the group's weights repeated. At stride 1
/// neighbouring quads share windows.
///
/// Safety: as [`dw_dot`].
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
unsafe fn dw_dot_k<const K: usize, const S: usize, const G: usize, const Q: usize>(
    l: &Layer,
    chans: Range<usize>,
    x: &[i8],
    out: &mut [i8],
) {
    let g = *l.g;
    let owr = g.ow.div_ceil(4 * Q) * 4 * Q;
    // The last block's last window ends within the row.
    let mut pad = Padded::new(&g, 1, (owr - 4 * Q) * S + 4 * ((Q - 1) * S + G - 1) + 16);
    let pw = pad.pw;
    let idx: [u8; 16] = std::array::from_fn(|i| (i / 4 * S + i % 4) as u8);
    let idx = vld1q_u8(idx.as_ptr());
    let (plane, rqv) = (g.oh * g.ow, RqVec::layer(l.requant));
    for c in chans.clone() {
        pad.fill(&g, l.x0, &x[c * g.h * g.w..][..g.h * g.w]);
        let wts = &l.weights[c * K * K..][..K * K];
        let mut wv = [[vdupq_n_s8(0); 2]; 5];
        for (ky, wv) in wv.iter_mut().enumerate().take(K) {
            for (gi, v) in wv.iter_mut().enumerate().take(G) {
                let b: [i8; 16] = std::array::from_fn(|i| {
                    let kx = 4 * gi + i % 4;
                    if kx < K {
                        wts[ky * K + kx]
                    } else {
                        0
                    }
                });
                *v = vld1q_s8(b.as_ptr());
            }
        }
        let rq = rqv.channel(l.requant, c);
        let o = out[(c - chans.start) * plane..][..plane].as_mut_ptr();
        dw_dot_plane::<K, S, G, Q>(pad.data.as_ptr(), pw, idx, wv, l.bias[c], rq, o, g.oh, g.ow);
    }
}

/// Safety: as [`dw_dot_k`]: `p` holds the padded plane, rows `pw` apart, wide enough for every
/// window; `out` holds `oh * ow` outputs.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_dot_plane<const K: usize, const S: usize, const G: usize, const Q: usize>(
    p: *const i8,
    pw: usize,
    idx: uint8x16_t,
    wv: [[int8x16_t; 2]; 5],
    b: i32,
    rq: RqVec,
    out: *mut i8,
    oh: usize,
    ow: usize,
) {
    // Windows per row and block: quad qq's group gi reads window qq S + gi.
    let windows = (Q - 1) * S + G;
    for oy in 0..oh {
        let orow = out.add(oy * ow);
        for ox in (0..ow).step_by(4 * Q) {
            let mut acc = [vdupq_n_s32(b); 4];
            for (ky, wv) in wv.iter().enumerate().take(K) {
                let rp = p.add((oy * S + ky) * pw + ox * S);
                let mut win = [vdupq_n_s8(0); 8];
                for (j, w) in win.iter_mut().enumerate().take(windows) {
                    *w = vqtbl1q_s8(vld1q_s8(rp.add(4 * j)), idx);
                }
                for (qq, acc) in acc.iter_mut().enumerate().take(Q) {
                    for (gi, wv) in wv.iter().enumerate().take(G) {
                        sdot!(*acc, win[qq * S + gi], *wv);
                    }
                }
            }
            if Q == 2 {
                let v = rq.q8([acc[0], acc[1]]);
                if ox + 8 <= ow {
                    vst1_s8(orow.add(ox), v);
                } else {
                    store_part(orow.add(ox), vcombine_s8(v, v), ow - ox);
                }
            } else {
                let v = rq.q16(acc);
                if ox + 16 <= ow {
                    vst1q_s8(orow.add(ox), v);
                } else {
                    store_part(orow.add(ox), v, ow - ox);
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    use super::*;
    use crate::depthwise::{reference as dw_reference, Depthwise, DwKernel};
    use crate::gemm::{reference, Gemm, GemmKernel};
    use crate::testing::{requant_for, xorshift};

    /// Weights full of -128 (pairs the `smlal` kernels must split), activations too; an empty
    /// depth.
    #[test]
    fn products_with_many_minus_128_are_exact() {
        let mut rnd = xorshift(99);
        for &(m, k, n) in
            &[(9usize, 21usize, 1usize), (13, 40, 23), (8, 64, 1), (21, 37, 17), (6, 9, 2), (5, 0, 3), (5, 0, 1)]
        {
            for density in [2u32, 4, 16] {
                let skew = |v: i8| if (v as u8 as u32).is_multiple_of(density) { -128 } else { v };
                let w: Vec<i8> = (0..m * k).map(|_| skew(rnd())).collect();
                let x: Vec<i8> = (0..k * n).map(|_| skew(rnd())).collect();
                let bias: Vec<i32> = (0..m).map(|i| i as i32 * 31 - 100).collect();
                let rq = requant_for(m, k);
                let want = reference(&w, m, k, &x, n, &bias, &rq);
                for kernel in [GemmKernel::Neon, GemmKernel::NeonDot].into_iter().filter(|k| k.available()) {
                    let g = Gemm::new(kernel, &w, m, k, bias.clone(), rq.clone()).unwrap();
                    let b = g.row_block();
                    for cut in (0..m).step_by(b) {
                        let mut got = vec![0i8; m * n];
                        let (lo, hi) = got.split_at_mut(cut * n);
                        g.run_rows(0..cut, &x, n, lo);
                        g.run_rows(cut..m, &x, n, hi);
                        assert!(got == want, "{} m={m} k={k} n={n} cut={cut}", kernel.name());
                    }
                }
            }
        }
    }

    /// Channels whose taps pair -128 with -128 (the `smlal` kernel's i16 path), and shapes
    /// outside the fast paths (rectangular kernels, 7 x 7, stride 3).
    #[test]
    fn depthwise_edge_cases_are_exact() {
        let mut rnd = xorshift(5);
        // (c, h, w, kh, kw, sh, sw, pt, pl, oh, ow)
        let shapes = [
            (6, 9, 10, 3, 3, 1, 1, 1, 1, 9, 10),
            (6, 12, 11, 5, 5, 2, 2, 2, 2, 6, 6),
            (5, 30, 37, 5, 5, 1, 1, 2, 2, 30, 37),
            (3, 10, 13, 3, 5, 1, 2, 1, 2, 10, 7),
            (3, 15, 15, 7, 7, 1, 1, 3, 3, 15, 15),
            (4, 16, 20, 3, 3, 3, 3, 1, 1, 6, 7),
            (2, 40, 40, 3, 3, 2, 2, 0, 0, 20, 20),
        ];
        for (c, h, w, kh, kw, sh, sw, pt, pl, oh, ow) in shapes {
            let g = Geometry { cin: c, h, w, kh, kw, sh, sw, pt, pl, oh, ow };
            let x: Vec<i8> = (0..c * h * w).map(|_| rnd()).collect();
            // Channel 0 all -128, channel 1 alternating, the others random.
            let wt: Vec<i8> = (0..c * kh * kw)
                .map(|i| match i / (kh * kw) {
                    0 => -128,
                    1 if i % 3 != 0 => -128,
                    _ => rnd(),
                })
                .collect();
            let bias: Vec<i32> = (0..c).map(|i| 1000 * i as i32 - 2000).collect();
            let rq = requant_for(c, kh * kw);
            for x0 in [-128i8, 3] {
                let l = Layer { g: &g, weights: &wt, bias: &bias, x0, requant: &rq };
                let want = dw_reference(&l, &x);
                for kernel in [DwKernel::Neon, DwKernel::NeonDot].into_iter().filter(|k| k.available()) {
                    let d = Depthwise::new(kernel, g, wt.clone(), bias.clone(), x0, rq.clone()).unwrap();
                    let mut got = vec![0i8; c * oh * ow];
                    let cut = c / 3;
                    let (lo, hi) = got.split_at_mut(cut * oh * ow);
                    d.run_channels(0..cut, &x, lo);
                    d.run_channels(cut..c, &x, hi);
                    assert!(got == want, "{} {g:?} x0={x0}", kernel.name());
                }
            }
        }
    }
}
