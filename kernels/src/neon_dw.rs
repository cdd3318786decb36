//! The NEON depthwise convolutions of [`super`]: planes padded with the zero point, 3 x 3 and
//! 5 x 5 at stride 1 or 2 in `smull`/`smlal` blocks or with `sdot`, other shapes (and channels
//! whose weights the `smlal` pairs cannot sum exactly) on the shared driver in i16.

use super::*;

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
pub(super) fn dw_i16(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
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
pub(super) fn dw_mul(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
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
pub(super) unsafe fn dw_dot(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
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
