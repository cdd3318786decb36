//! The tiled AVX2 depthwise convolution of [`super`] (the module documentation there says how
//! it works): padded i16 planes, `vpmaddwd` on pairs of taps, tiles of rows in registers.

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
