//! The AVX-512 depthwise convolution (x86_64 with AVX-512 F, BW, VNNI, VBMI and VBMI2: Ice
//! Lake and later). `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and adds the four
//! products into an i32 lane: 64 multiply-accumulates per instruction, where the AVX2 kernel's
//! `vpmullw` and two widening adds make 16 in three. The activations are made unsigned by
//! adding 128 (`x ^ 0x80`), undone exactly by folding `-128 * sum(w)` into each channel's bias.
//!
//! A register holds 16 outputs of one row (of two rows, 8 each, for planes at most 8 wide),
//! each lane fed by "tap quads": from a 64-byte window of the padded input, one `vpermb`
//! gathers into every lane the 4 bytes under its taps `kx = 0..3` (the stride is in the
//! gather's indices, so stride 2 needs no phase split) and, for 5 x 5 kernels, a second one its
//! tap 4 (of 1, 2 or 4 consecutive rows, as many as one window holds): an output costs 3
//! (3 x 3) or 7 to 10 (5 x 5) `vpdpbusd`. Tiles of 4 or 8 registers down by up to 4 across
//! accumulate in registers, each window's quads added into every register that uses them as
//! soon as they are gathered. At stride 2 (but for planes at most 8 wide) the windows are
//! loaded from the input rows, masked, the padding set around them; otherwise from the
//! channel's padded plane, written out (its borders once per call) while the previous channel
//! runs. Then 4 registers at a time are requantized in registers, exactly as
//! [`crate::Requant::row`], packed to 64 bytes and stored straight into the NCHW output
//! (compressed by `vpcompressb` past the ends of short rows). Other geometries (kernels other
//! than 3 x 3 and 5 x 5, strides other than 1 and 2 or unequal) run the shared driver of
//! [`crate::depthwise`] with 16 i32 lanes.

use std::ops::Range;

/// Whether [`depthwise`] can run here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The depthwise convolution of [`crate::depthwise`] for channels `chans`: `x` is the whole
/// input `[cin, h, w]`, `out` holds those channels' planes.
///
/// # Panics
/// If the CPU lacks the features [`available`] checks, or the sizes do not match.
pub fn depthwise(l: &crate::depthwise::Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    assert!(available(), "AVX-512 (F, BW, VNNI, VBMI, VBMI2) is not available");
    let g = l.g;
    assert!(chans.end <= g.cin && x.len() == g.cin * g.h * g.w && out.len() == chans.len() * g.oh * g.ow);
    let taps = g.kh * g.kw;
    assert!(l.weights.len() == g.cin * taps && l.bias.len() == g.cin && l.requant.scale.len() == g.cin);
    assert!(l.requant.offset.len() == g.cin);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has every feature `imp` is compiled for, checked just above, and the
    // sizes match the geometry.
    unsafe {
        imp::depthwise(l, chans, x, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (chans, x, out);
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use crate::depthwise::{body, Layer};
    use crate::{Geometry, Requant};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// One register's worth of bytes, aligned for it.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Z([u8; 64]);

    /// The windows of one block of 16 outputs, within a padded row that holds an input row:
    /// which of their 64 bytes are inside the input row (the others are padding), the input
    /// column of their first byte (negative in the left padding), and what turns the window
    /// loaded with zeros outside into the padded unsigned one (`0x80` inside, `x0 ^ 0x80`
    /// outside).
    #[derive(Clone, Copy)]
    struct Win {
        inside: u64,
        from: isize,
        fix: Z,
    }

    /// How one layer's geometry maps onto the registers.
    struct Plan {
        g: Geometry,
        /// Output rows per register: 1, or 2 for planes at most 8 wide (lanes 0..8 and 8..16).
        rpa: usize,
        /// Registers across a row (blocks of 16 outputs), and down the plane.
        nb: usize,
        na: usize,
        /// Rows whose taps `kx = 4` share a quad (5 x 5 kernels), as many as a window holds.
        m: usize,
        /// Per block, its windows, when they come from the input rows ([`direct`]).
        cols: Vec<Win>,
        /// Otherwise the padded plane, written out: its pitch and length, the input rows it
        /// holds, for planes narrower than 32 which of each 64 bytes from its first inside byte
        /// are inside, and its windows' step from one block to the next.
        wp: usize,
        pf_len: usize,
        rows_in: usize,
        chunks: Vec<u64>,
        step: usize,
        /// `vpermb` indices of the two quads within a window.
        idx0: Z,
        idx4: Z,
        /// `vpermb` indices (and which bytes are taps rather than zeros) that gather the
        /// weights `[kh, kw]` into the dwords of each quad: taps `kx = 0..3` of each row, and
        /// tap 4 of `m` rows at a time.
        wsel0: (Z, u64),
        wsel4: (Z, u64),
    }

    impl Plan {
        /// `None` for the geometries the tiles do not take: kernels other than 3 x 3 and
        /// 5 x 5, strides other than 1 and 2 or unequal, empty outputs.
        fn new(g: &Geometry, x0: i8) -> Option<Plan> {
            let (k, s) = (g.kh, g.sh);
            if g.kw != k || g.sw != s || !matches!(k, 3 | 5) || !matches!(s, 1 | 2) || g.oh == 0 || g.ow == 0 {
                return None;
            }
            // Pitch of the padded plane: every column read and every input column.
            let wp = ((g.ow - 1) * s + k).max(g.pl + g.w);
            // The furthest byte a lane reads in its window, for `rpa` rows per register and
            // `m` rows per quad of taps 4.
            let reach = |rpa: usize, m: usize| {
                let lane = (rpa - 1) * s * wp + s * (16 / rpa - 1);
                if k == 5 {
                    lane + 4 + (m - 1) * wp
                } else {
                    lane + 3
                }
            };
            let rpa = if g.ow <= 8 && reach(2, 1) < 64 { 2 } else { 1 };
            // Quads of tap 4 of 4 rows at stride 1, 2 rows (or 1) at stride 2; of 1 row when
            // the windows hold one row.
            let m = match (k, rpa, s) {
                (5, 2, 1) => 4,
                (5, _, _) if reach(rpa, 2) < 64 => 2,
                _ => 1,
            };
            if reach(rpa, m) >= 64 {
                return None;
            }
            let lw = 16 / rpa;
            let nb = g.ow.div_ceil(lw);
            let na = g.oh.div_ceil(rpa);
            let step = lw * s;
            let x0u = x0 as u8 ^ 0x80;
            let (mut cols, mut chunks, mut pf_len, mut rows_in) = (vec![], vec![], 0, 0);
            if direct(s, rpa, m) {
                cols = (0..nb)
                    .map(|b| {
                        let start = b * step;
                        let (lo, hi) = (g.pl.max(start), (g.pl + g.w).min(start + 64));
                        let inside = if lo < hi { low(hi - lo) << (lo - start) } else { 0 };
                        let mut fix = Z([x0u; 64]);
                        for (i, f) in fix.0.iter_mut().enumerate() {
                            if inside >> i & 1 == 1 {
                                *f = 0x80;
                            }
                        }
                        Win { inside, from: start as isize - g.pl as isize, fix }
                    })
                    .collect();
            } else {
                // Rows `[pt, pt + h)` of the padded plane hold the input rows (those past the
                // last row read are left out), at columns `[pl, pl + w)`. The tiles (of at most
                // `RB2` registers down, `RB` dividing it) read rows down to the end of their
                // last one.
                let hp = (g.oh - 1) * s + k;
                rows_in = g.h.min(hp.saturating_sub(g.pt));
                let rows = (na.div_ceil(RB2) * RB2 - 1) * rpa * s + k;
                pf_len = (hp.max(rows) * wp + 64).next_multiple_of(64);
                if g.w < 32 {
                    let span = if rows_in > 0 { (rows_in - 1) * wp + g.w } else { 0 };
                    chunks = vec![0u64; span.div_ceil(64)];
                    for iy in 0..rows_in {
                        for i in iy * wp..iy * wp + g.w {
                            chunks[i / 64] |= 1 << (i % 64);
                        }
                    }
                }
            }
            let (mut idx0, mut idx4) = (Z([0; 64]), Z([0; 64]));
            for lane in 0..16 {
                let base = lane / lw * s * wp + s * (lane % lw);
                for t in 0..4 {
                    idx0.0[4 * lane + t] = (base + t) as u8;
                    idx4.0[4 * lane + t] = (base + 4 + if t < m { t * wp } else { 0 }) as u8;
                }
            }
            let (mut wsel0, mut wsel4) = ((Z([0; 64]), 0u64), (Z([0; 64]), 0u64));
            for ky in 0..k {
                for t in 0..4 {
                    wsel0.0 .0[4 * ky + t] = (ky * k + t) as u8;
                    wsel0.1 |= ((t < k) as u64) << (4 * ky + t);
                }
            }
            if k == 5 {
                for q in 0..k.div_ceil(m) {
                    for t in 0..m.min(k - q * m) {
                        wsel4.0 .0[4 * q + t] = ((q * m + t) * k + 4) as u8;
                        wsel4.1 |= 1 << (4 * q + t);
                    }
                }
            }
            Some(Plan { g: *g, rpa, nb, na, m, cols, wp, pf_len, rows_in, chunks, step, idx0, idx4, wsel0, wsel4 })
        }
    }

    /// Whether the windows come straight from the input rows (at stride 2, one row per
    /// register and per quad), rather than from the padded plane written out per channel (at
    /// stride 1 the windows overlap so much that loading them from the padded plane, without
    /// masks, costs less than writing it; at stride 2, not).
    #[inline(always)]
    const fn direct(s: usize, rpa: usize, m: usize) -> bool {
        s == 2 && rpa == 1 && m == 1
    }

    /// `n` low bits set, `n <= 64`.
    #[inline(always)]
    fn low(n: usize) -> u64 {
        if n >= 64 {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    }

    /// The layer's output bounds and zero point, broadcast.
    struct Bounds {
        flo: __m512,
        fhi: __m512,
        y0: __m512i,
        lo: __m512i,
        hi: __m512i,
    }

    /// One channel's weights (dwords of 4 taps, broadcast), bias (with the `+128` of the
    /// activations undone) and scale.
    struct Chan {
        w0: [__m512i; 5],
        w4: [__m512i; 5],
        bias: __m512i,
        scale: __m512,
        offset: __m512,
        /// Whether the offset or the float bounds are needed: the offset is not zero, or the
        /// accumulators can scale beyond what `vcvtps2dq` converts. Otherwise the bounds are
        /// applied to the bytes only.
        general: bool,
    }

    impl Chan {
        #[inline(always)]
        unsafe fn new<const K: usize, const M: usize>(l: &Layer, p: &Plan, c: usize) -> Chan {
            let k = K;
            let taps = k * k;
            // The taps (zero past the last), gathered into the dwords of each quad.
            let wt = _mm512_maskz_loadu_epi8(low(taps), l.weights[c * taps..][..taps].as_ptr());
            let gather = |sel: &(Z, u64)| {
                _mm512_maskz_permutexvar_epi8(sel.1, _mm512_load_si512(sel.0 .0.as_ptr() as *const _), wt)
            };
            let (q0, q4) = (gather(&p.wsel0), gather(&p.wsel4));
            let mut w0 = [_mm512_setzero_si512(); 5];
            let mut w4 = [_mm512_setzero_si512(); 5];
            for (i, w0) in w0.iter_mut().enumerate().take(k) {
                *w0 = _mm512_permutexvar_epi32(_mm512_set1_epi32(i as i32), q0);
            }
            for (i, w4) in w4.iter_mut().enumerate().take(if k == 5 { k.div_ceil(M) } else { 0 }) {
                *w4 = _mm512_permutexvar_epi32(_mm512_set1_epi32(i as i32), q4);
            }
            // The sum of the taps (as unsigned: +128 each, the bytes past them zero) and of
            // their magnitudes.
            let zero = _mm512_setzero_si512();
            let biased = _mm512_maskz_mov_epi8(low(taps), _mm512_xor_si512(wt, _mm512_set1_epi8(-128)));
            let sum = _mm512_reduce_add_epi64(_mm512_sad_epu8(biased, zero)) as i32 - 128 * taps as i32;
            let abs = _mm512_reduce_add_epi64(_mm512_sad_epu8(_mm512_abs_epi8(wt), zero)) as u64;
            let b = l.bias[c];
            let (s, off) = (l.requant.scale[c], l.requant.offset[c]);
            // The largest accumulator (wrapped or not, at most 2^31), scaled: whether
            // `vcvtps2dq` converts it without saturating.
            let amax = (b.unsigned_abs() as u64 + 128 * abs).min(1 << 31);
            let vmax = amax as f64 * (s as f64).abs() * (1.0 + 1e-6) + (off as f64).abs();
            let fits = vmax < (1u64 << 30) as f64;
            Chan {
                w0,
                w4,
                bias: _mm512_set1_epi32(b.wrapping_sub(sum.wrapping_mul(128))),
                scale: _mm512_set1_ps(s),
                offset: _mm512_set1_ps(off),
                general: off != 0.0 || !fits,
            }
        }
    }

    /// `vpermd` indices that undo the lane interleaving of `vpackssdw` then `vpacksswb`.
    const UNPACK: [i32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

    /// Four registers of accumulators requantized as [`Requant::row_inline`] does, as 64 bytes
    /// in order. Scale (then offset: a multiply and an add, not fused) in floats, rounded to
    /// nearest even by `vcvtps2dq` (the default MXCSR mode). When the scaled accumulators stay
    /// within +-2^30, clamping the rounded integers equals rounding the clamped floats (the
    /// bounds are integers), and every saturation on the way down to bytes (i32 to i16, adding
    /// the zero point, i16 to i8) is monotonic and within the int8 bounds, so the bounds are
    /// applied to the bytes once; otherwise to the floats too, as the definition does.
    #[inline(always)]
    unsafe fn requant4<const GENERAL: bool>(acc: [__m512i; 4], k: &Chan, b: &Bounds) -> __m512i {
        let q = |a: __m512i| {
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), k.scale);
            if GENERAL {
                v = _mm512_add_ps(v, k.offset);
                // `v > lo ? v : lo`, then `v < hi ? v : hi`, as the definition's selects.
                v = _mm512_min_ps(_mm512_max_ps(v, b.flo), b.fhi);
            }
            _mm512_cvtps_epi32(v)
        };
        let w01 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[0]), q(acc[1])), b.y0);
        let w23 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[2]), q(acc[3])), b.y0);
        let v = _mm512_permutexvar_epi32(_mm512_loadu_epi32(UNPACK.as_ptr()), _mm512_packs_epi16(w01, w23));
        _mm512_min_epi8(_mm512_max_epi8(v, b.lo), b.hi)
    }

    /// Stores the bytes of `v` that `mask` selects, at most `room` of them, contiguously at
    /// `dst`.
    #[inline(always)]
    unsafe fn store(dst: *mut i8, mask: u64, room: usize, v: __m512i) {
        let n = (mask.count_ones() as usize).min(room);
        if mask & mask.wrapping_add(1) == 0 {
            // A prefix: stored as it is.
            _mm512_mask_storeu_epi8(dst, low(n), v);
        } else {
            _mm512_mask_storeu_epi8(dst, low(n), _mm512_maskz_compress_epi8(mask, v));
        }
    }

    /// The padded plane of input plane `src` at `pf` (whose padding is already there):
    /// planes of 32 columns or more row by row, narrower ones 64 bytes at a time from the first
    /// inside byte, the input bytes spread over their inside positions (`vpexpandb`), the
    /// padding around them.
    #[inline(always)]
    unsafe fn fill(p: &Plan, x0v: __m512i, src: *const i8, pf: *mut u8) {
        let g = &p.g;
        let flip = _mm512_set1_epi8(-128);
        let first = pf.add(g.pt * p.wp + g.pl);
        debug_assert!((g.pt + p.rows_in) * p.wp + 64 <= p.pf_len && 64 * p.chunks.len() <= p.rows_in * p.wp + 63);
        if p.chunks.is_empty() {
            for iy in 0..p.rows_in {
                let (src, dst) = (src.add(iy * g.w), first.add(iy * p.wp) as *mut i8);
                let mut cx = 0;
                while cx < g.w {
                    let k = low(g.w - cx);
                    let v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, src.add(cx)), flip);
                    _mm512_mask_storeu_epi8(dst.add(cx), k, v);
                    cx += 64;
                }
            }
            return;
        }
        let (mut at, mut taken) = (first, 0);
        for &m in &p.chunks {
            let n = m.count_ones() as usize;
            let v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(low(n), src.add(taken)), flip);
            _mm512_storeu_si512(at as *mut _, _mm512_mask_expand_epi8(x0v, m, v));
            at = at.add(64);
            taken += n;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vbmi2,popcnt")]
    pub(super) unsafe fn depthwise(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        // Output bounds and zero point in int8 (as `Requant::new` makes them): the byte
        // arithmetic of `requant4` holds.
        let rq = l.requant;
        let int8 = |v: i32| (-128..=127).contains(&v);
        let plan = if int8(rq.lo) && int8(rq.hi) && int8(rq.y0) { Plan::new(l.g, l.x0) } else { None };
        let Some(p) = plan else {
            return fallback(l, chans, x, out);
        };
        match (p.g.kh, p.g.sh, p.rpa, p.m) {
            (3, 1, 1, _) => tiled::<3, 1, 1, 1>(l, &p, chans, x, out),
            (3, 2, 1, _) => tiled::<3, 2, 1, 1>(l, &p, chans, x, out),
            (5, 1, 1, 2) => tiled::<5, 1, 1, 2>(l, &p, chans, x, out),
            (5, 1, 1, _) => tiled::<5, 1, 1, 1>(l, &p, chans, x, out),
            (5, 2, 1, 2) => tiled::<5, 2, 1, 2>(l, &p, chans, x, out),
            (5, 2, 1, _) => tiled::<5, 2, 1, 1>(l, &p, chans, x, out),
            (3, 1, _, _) => tiled::<3, 1, 2, 1>(l, &p, chans, x, out),
            (3, 2, _, _) => tiled::<3, 2, 2, 1>(l, &p, chans, x, out),
            (5, 1, _, _) => tiled::<5, 1, 2, 4>(l, &p, chans, x, out),
            (5, 2, _, 2) => tiled::<5, 2, 2, 2>(l, &p, chans, x, out),
            _ => tiled::<5, 2, 2, 1>(l, &p, chans, x, out),
        }
    }

    /// Runs `$body` with `$i` bound to each constant below `$n` (at most 36), unrolled.
    macro_rules! unroll_below {
        ($i:ident, $n:expr, $body:block) => {
            unroll_below!(@ $i, $n, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35)
        };
        (@ $i:ident, $n:expr, $body:block, $($k:literal)*) => {
            const { assert!($n <= 36) };
            $(
                if $k < $n {
                    let $i: usize = $k;
                    $body
                }
            )*
        };
    }

    /// Registers down per tile; per tile of one block at stride 1, or of two blocks of a
    /// 3 x 3 kernel at stride 1 (the input rows they share are gathered once for more).
    const RB: usize = 4;
    const RB2: usize = 8;

    /// What the tiles of one channel read.
    struct Tiles<'a> {
        p: &'a Plan,
        k: Chan,
        bounds: &'a Bounds,
        /// The channel's input plane, and its padded plane (unless [`direct`]).
        xp: *const i8,
        pf: *const u8,
        dst: *mut i8,
        idx0: __m512i,
        idx4: __m512i,
        x0v: __m512i,
    }

    /// `K x K` kernels at stride `S`, `RPA` output rows per register, taps 4 of `M` rows per
    /// quad.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vbmi2,popcnt")]
    unsafe fn tiled<const K: usize, const S: usize, const RPA: usize, const M: usize>(
        l: &Layer,
        p: &Plan,
        chans: Range<usize>,
        x: &[i8],
        out: &mut [i8],
    ) {
        let g = &p.g;
        let rq: &Requant = l.requant;
        let bounds = Bounds {
            flo: _mm512_set1_ps((rq.lo - rq.y0) as f32),
            fhi: _mm512_set1_ps((rq.hi - rq.y0) as f32),
            y0: _mm512_set1_epi16(rq.y0 as i16),
            lo: _mm512_set1_epi8(rq.lo as i8),
            hi: _mm512_set1_epi8(rq.hi as i8),
        };
        let x0v = _mm512_set1_epi8(l.x0 ^ -128);
        // Two padded planes: the next channel's is filled while this one's is read, so that
        // its stores have long retired when its windows load them.
        let mut pf = vec![Z([(l.x0 as u8) ^ 0x80; 64]); 2 * p.pf_len / 64];
        let pf = pf.as_mut_ptr() as *mut u8;
        let plane_len = g.oh * g.ow;
        let plane = |c: usize| x[c * g.h * g.w..][..g.h * g.w].as_ptr();
        for (ci, c) in chans.clone().enumerate() {
            if !direct(S, RPA, M) {
                if ci == 0 {
                    fill(p, x0v, plane(c), pf);
                }
                if c + 1 < chans.end {
                    fill(p, x0v, plane(c + 1), pf.add((ci + 1) % 2 * p.pf_len));
                }
            }
            let t = Tiles {
                p,
                k: Chan::new::<K, M>(l, p, c),
                bounds: &bounds,
                xp: plane(c),
                pf: pf.add(ci % 2 * p.pf_len),
                dst: out.as_mut_ptr().add(ci * plane_len),
                idx0: _mm512_load_si512(p.idx0.0.as_ptr() as *const _),
                idx4: _mm512_load_si512(p.idx4.0.as_ptr() as *const _),
                x0v,
            };
            if t.k.general {
                tiles::<K, S, RPA, M, true>(&t);
            } else {
                tiles::<K, S, RPA, M, false>(&t);
            }
        }
    }

    /// Every tile of one channel: blocks 4 at a time (the last 1 to 3), or all of them when
    /// there are 1 or 2. (Closures would not inherit the target features: plain loops.)
    #[inline(always)]
    unsafe fn tiles<const K: usize, const S: usize, const RPA: usize, const M: usize, const GENERAL: bool>(t: &Tiles) {
        let (nb, na) = (t.p.nb, t.p.na);
        match nb {
            1 if S == 1 && RPA == 1 => {
                for a0 in (0..na).step_by(RB2) {
                    tile::<K, S, RPA, M, GENERAL, 1, RB2>(t, a0, 0);
                }
            }
            2 if S == 1 && K == 3 => {
                for a0 in (0..na).step_by(RB2) {
                    tile::<K, S, RPA, M, GENERAL, 2, RB2>(t, a0, 0);
                }
            }
            1 => {
                for a0 in (0..na).step_by(RB) {
                    tile::<K, S, RPA, M, GENERAL, 1, RB>(t, a0, 0);
                }
            }
            2 => {
                for a0 in (0..na).step_by(RB) {
                    tile::<K, S, RPA, M, GENERAL, 2, RB>(t, a0, 0);
                }
            }
            _ => {
                for a0 in (0..na).step_by(RB) {
                    let mut b0 = 0;
                    while b0 + 4 <= nb {
                        tile::<K, S, RPA, M, GENERAL, 4, RB>(t, a0, b0);
                        b0 += 4;
                    }
                    match nb - b0 {
                        1 => tile::<K, S, RPA, M, GENERAL, 1, RB>(t, a0, b0),
                        2 => tile::<K, S, RPA, M, GENERAL, 2, RB>(t, a0, b0),
                        3 => tile::<K, S, RPA, M, GENERAL, 3, RB>(t, a0, b0),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Registers `a0 .. a0 + RB` down (those below the plane computed, not stored), blocks
    /// `b0 .. b0 + CB` across: per input row, per block, the window's quads, each added into
    /// every register that uses it; then requantized and stored.
    #[inline(always)]
    unsafe fn tile<
        const K: usize,
        const S: usize,
        const RPA: usize,
        const M: usize,
        const GENERAL: bool,
        const CB: usize,
        const RB: usize,
    >(
        t: &Tiles,
        a0: usize,
        b0: usize,
    ) {
        let (p, k) = (t.p, &t.k);
        let g = &p.g;
        let mut acc = [[k.bias; CB]; RB];
        // Unrolled, so that which registers and taps each input row feeds is known at
        // compile time.
        unroll_below!(i, (RB - 1) * RPA * S + K, {
            // Padded row `r`, input row `iy`.
            let r = a0 * RPA * S + i;
            let iy = r.wrapping_sub(g.pt);
            let row = t.xp.wrapping_add(iy.wrapping_mul(g.w));
            for c in 0..CB {
                let b = b0 + c;
                let win = if !direct(S, RPA, M) {
                    _mm512_loadu_si512(t.pf.add(r * p.wp + b * p.step) as *const _)
                } else if iy < g.h {
                    // The inside bytes (only they are read: the address may lie outside the
                    // plane), flipped to unsigned, the padding set.
                    let w = p.cols.get_unchecked(b);
                    let v = _mm512_maskz_loadu_epi8(w.inside, row.wrapping_offset(w.from));
                    _mm512_xor_si512(v, _mm512_load_si512(w.fix.0.as_ptr() as *const _))
                } else {
                    t.x0v
                };
                let q0 = _mm512_permutexvar_epi8(t.idx0, win);
                // Whether some register uses this row's quad of taps 4.
                let use4 = K == 5
                    && (0..RB).any(|a| {
                        let ky = i.wrapping_sub(a * RPA * S);
                        ky < K && ky.is_multiple_of(M)
                    });
                let q4 = if use4 { _mm512_permutexvar_epi8(t.idx4, win) } else { q0 };
                for (a, acc) in acc.iter_mut().enumerate() {
                    let ky = i.wrapping_sub(a * RPA * S);
                    if ky < K {
                        acc[c] = _mm512_dpbusd_epi32(acc[c], q0, k.w0[ky]);
                        if use4 && ky.is_multiple_of(M) {
                            acc[c] = _mm512_dpbusd_epi32(acc[c], q4, k.w4[ky / M]);
                        }
                    }
                }
            }
        });
        let (ow, plane_len) = (g.ow, g.oh * g.ow);
        if CB >= 3 || p.nb > 2 {
            // A row's blocks at a time: a prefix of the 64 bytes.
            let zero = _mm512_setzero_si512();
            for (a, acc) in acc.iter().enumerate() {
                if a0 + a < g.oh {
                    let pick = |c: usize| if c < CB { acc[c.min(CB - 1)] } else { zero };
                    let v = requant4::<GENERAL>([pick(0), pick(1), pick(2), pick(3)], k, t.bounds);
                    let n = (ow - b0 * 16).min(CB * 16);
                    _mm512_mask_storeu_epi8(t.dst.add((a0 + a) * ow + b0 * 16), low(n), v);
                }
            }
        } else {
            // Whole rows: 4 registers at a time, without the lanes past a row's end (the
            // rows below the plane come last: cut by the room left).
            let lw = 16 / RPA;
            let reg = if RPA == 1 {
                [low(ow.min(16)), low(ow.saturating_sub(16).min(16))]
            } else {
                [low(ow) | low(ow) << lw, 0]
            };
            let mask = if CB == 1 {
                reg[0] | reg[0] << 16 | reg[0] << 32 | reg[0] << 48
            } else {
                reg[0] | reg[1] << 16 | reg[0] << 32 | reg[1] << 48
            };
            let per = 4 / CB;
            for q in 0..RB / per {
                let oy = (a0 + q * per) * RPA;
                if oy >= g.oh {
                    break;
                }
                let a = if CB == 1 {
                    [acc[4 * q][0], acc[4 * q + 1][0], acc[4 * q + 2][0], acc[4 * q + 3][0]]
                } else {
                    [acc[2 * q][0], acc[2 * q][CB - 1], acc[2 * q + 1][0], acc[2 * q + 1][CB - 1]]
                };
                let v = requant4::<GENERAL>(a, k, t.bounds);
                store(t.dst.add(oy * ow), mask, plane_len - oy * ow, v);
            }
        }
    }

    /// Other geometries: the shared driver, 16 outputs widened to i32 lanes and multiplied
    /// there.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fallback(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        body::<16>(l, chans, x, out, |ph, base, offsets, wts, b| {
            // SAFETY: runs inside `depthwise`, on a CPU with AVX-512 F; the slices are
            // bounds-checked.
            unsafe {
                let mut acc = _mm512_set1_epi32(b);
                for (&off, &w) in offsets.iter().zip(wts) {
                    let s = &ph[base + off..base + off + 16];
                    let v = _mm512_cvtepi16_epi32(_mm256_loadu_si256(s.as_ptr() as *const __m256i));
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(v, _mm512_set1_epi32(w as i32)));
                }
                let mut r = [0i32; 16];
                _mm512_storeu_si512(r.as_mut_ptr() as *mut _, acc);
                r
            }
        })
    }
}

#[cfg(test)]
#[path = "avx512_tests.rs"]
mod tests;
