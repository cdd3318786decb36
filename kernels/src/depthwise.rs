//! Depthwise convolutions (one filter per channel) on NCHW int8 planes, with their output
//! stage. One [`Depthwise`] is one layer: geometry, weights, bias (with `-x0 * sum(weights)`
//! folded in), requantization, and the [`DwKernel`] that runs it. Every kernel gives the same
//! int8 outputs bit for bit (tested); they differ in speed only.
//!
//! The kernels share one plan: per channel, the plane padded with the input's zero point into
//! i16 and split into `sw` column phases, so that every tap reads a contiguous run; outputs
//! `LANES` at a time with i32 accumulators held in registers across every tap; then one
//! requantization pass per output row.

use crate::{Geometry, Requant, Unavailable};
use std::ops::Range;

/// A depthwise kernel. Which ones can run depends on the CPU: [`DwKernel::available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DwKernel {
    /// Portable Rust, vectorised by the compiler for the target's baseline (SSE2, NEON).
    Plain,
    /// x86_64 AVX2: 16 i16 products per `vpmullw`, widened into i32 accumulators.
    Avx2,
    /// x86_64 AVX-512 with VNNI and VBMI (Ice Lake and later): taps gathered four at a time
    /// with `vpermb` into `vpdpbusd`.
    Avx512,
    /// aarch64 NEON without the dot product: `smlal`.
    Neon,
    /// aarch64 NEON with the dot product: `sdot` over groups of taps.
    NeonDot,
}

impl DwKernel {
    pub const ALL: [DwKernel; 5] =
        [DwKernel::Plain, DwKernel::Avx2, DwKernel::Avx512, DwKernel::Neon, DwKernel::NeonDot];

    /// The name used in logs, caches and `--int8-kernel`.
    pub fn name(self) -> &'static str {
        match self {
            DwKernel::Plain => "plain",
            DwKernel::Avx2 => "avx2",
            DwKernel::Avx512 => "avx512",
            DwKernel::Neon => "neon",
            DwKernel::NeonDot => "neon-dot",
        }
    }

    pub fn from_name(name: &str) -> Option<DwKernel> {
        DwKernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            DwKernel::Plain => true,
            DwKernel::Avx2 => crate::avx2::available(),
            DwKernel::Avx512 => crate::avx512::available(),
            DwKernel::Neon => crate::neon::available(),
            DwKernel::NeonDot => crate::neon::available_dot(),
        }
    }

    /// The kernels this CPU can run.
    pub fn available_here() -> Vec<DwKernel> {
        DwKernel::ALL.into_iter().filter(|k| k.available()).collect()
    }
}

/// One depthwise convolution layer.
#[derive(Debug, Clone)]
pub struct Depthwise {
    kernel: DwKernel,
    geo: Geometry,
    /// `[channels, kh * kw]`.
    weights: Vec<i8>,
    /// Per channel, with `-x0 * sum(weights)` folded in.
    bias: Vec<i32>,
    x0: i8,
    requant: Requant,
}

impl Depthwise {
    /// # Panics
    /// If `weights`, `bias` and `requant` do not match `geo.cin` channels of `kh x kw` taps.
    pub fn new(
        kernel: DwKernel,
        geo: Geometry,
        weights: Vec<i8>,
        bias: Vec<i32>,
        x0: i8,
        requant: Requant,
    ) -> Result<Depthwise, Unavailable> {
        let c = geo.cin;
        assert!(weights.len() == c * geo.kh * geo.kw && bias.len() == c && requant.scale.len() == c);
        if !kernel.available() {
            return Err(Unavailable(kernel.name()));
        }
        Ok(Depthwise { kernel, geo, weights, bias, x0, requant })
    }

    pub fn kernel(&self) -> DwKernel {
        self.kernel
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Every channel: `x` `[cin, h, w]`, `out` `[cin, oh, ow]`.
    pub fn run(&self, x: &[i8], out: &mut [i8]) {
        self.run_channels(0..self.geo.cin, x, out)
    }

    /// Channels `chans` only, for splitting a layer between threads: `x` is the whole input,
    /// `out` holds just those channels' planes.
    ///
    /// # Panics
    /// If the sizes do not match.
    pub fn run_channels(&self, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
        let g = &self.geo;
        assert!(chans.end <= g.cin && x.len() == g.cin * g.h * g.w && out.len() == chans.len() * g.oh * g.ow);
        let layer = Layer { g, weights: &self.weights, bias: &self.bias, x0: self.x0, requant: &self.requant };
        match self.kernel {
            DwKernel::Plain => plain(&layer, chans, x, out),
            DwKernel::Avx2 => crate::avx2::depthwise(&layer, chans, x, out),
            DwKernel::Avx512 => crate::avx512::depthwise(&layer, chans, x, out),
            DwKernel::Neon => crate::neon::depthwise(&layer, chans, x, out, false),
            DwKernel::NeonDot => crate::neon::depthwise(&layer, chans, x, out, true),
        }
    }
}

/// A layer as the kernels see it (borrowed).
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    pub g: &'a Geometry,
    /// `[channels, kh * kw]`.
    pub weights: &'a [i8],
    pub bias: &'a [i32],
    pub x0: i8,
    pub requant: &'a Requant,
}

/// Rows wider than 8 outputs take 16 accumulators at a time, narrower ones 8 (the 7 x 7
/// planes of the last blocks would waste most of 16).
fn plain(l: &Layer, chans: Range<usize>, x: &[i8], out: &mut [i8]) {
    if l.g.ow > 8 {
        body::<16>(l, chans, x, out, block_plain::<16>)
    } else {
        body::<8>(l, chans, x, out, block_plain::<8>)
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

/// The padded planes of one channel, split into column phases, and where each tap reads.
pub struct Phases {
    /// Phase `f` holds padded columns `f, f + sw, f + 2 sw, ...`, `pw` of them per row, `hp`
    /// rows: `[sw, hp, pw]`.
    pub data: Vec<i16>,
    pub hp: usize,
    pub pw: usize,
    /// Each tap's offset in `data` for output row 0, column 0.
    pub offsets: Vec<usize>,
}

impl Phases {
    /// Room for one channel of `g`, its rows wide enough for blocks of `lanes` outputs (the
    /// last block reads past the row's end).
    pub fn new(g: &Geometry, lanes: usize) -> Phases {
        let taps = g.kh * g.kw;
        let (hp, wp) = ((g.oh - 1) * g.sh + g.kh, (g.ow - 1) * g.sw + g.kw);
        let ow_blocks = g.ow.div_ceil(lanes) * lanes;
        let pw = wp.div_ceil(g.sw).max(ow_blocks + (g.kw - 1) / g.sw);
        let offsets = (0..taps).map(|t| ((t % g.kw % g.sw) * hp + t / g.kw) * pw + (t % g.kw) / g.sw).collect();
        Phases { data: vec![0; g.sw * hp * pw], hp, pw, offsets }
    }

    /// Fills the phases from one channel's plane, the padding with `x0`.
    pub fn fill(&mut self, g: &Geometry, x0: i8, plane: &[i8]) {
        let (hp, pw) = (self.hp, self.pw);
        self.data.fill(x0 as i16);
        for iy in 0..g.h {
            let py = iy + g.pt;
            if py >= hp {
                break;
            }
            let src = &plane[iy * g.w..][..g.w];
            if g.sw == 1 {
                // One phase: the row as it is, after the left pad.
                let dst = &mut self.data[py * pw + g.pl..][..g.w.min(pw - g.pl.min(pw))];
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
                let dst = &mut self.data[(f * hp + py) * pw + start..][..pw.saturating_sub(start)];
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
    }
}

/// The shared driver: per channel of `chans`, the phases filled, then every output row
/// `LANES` outputs at a time through `block`, then requantized in one pass per row. `out`
/// holds the planes of `chans` only.
#[inline(always)]
pub fn body<const LANES: usize>(
    l: &Layer,
    chans: Range<usize>,
    x: &[i8],
    out: &mut [i8],
    block: impl Fn(&[i16], usize, &[usize], &[i16], i32) -> [i32; LANES],
) {
    let g = *l.g;
    let taps = g.kh * g.kw;
    let mut ph = Phases::new(&g, LANES);
    let mut wts = vec![0i16; taps];
    let mut row_acc = vec![0i32; g.ow.div_ceil(LANES) * LANES];
    let first = chans.start;
    for c in chans {
        ph.fill(&g, l.x0, &x[c * g.h * g.w..][..g.h * g.w]);
        for (t, w) in wts.iter_mut().enumerate() {
            *w = l.weights[c * taps + t] as i16;
        }
        let b = l.bias[c];
        for oy in 0..g.oh {
            let row = oy * g.sh * ph.pw;
            let out_row = &mut out[((c - first) * g.oh + oy) * g.ow..][..g.ow];
            for ox in (0..g.ow).step_by(LANES) {
                row_acc[ox..ox + LANES].copy_from_slice(&block(&ph.data, row + ox, &ph.offsets, &wts, b));
            }
            l.requant.row_inline(c, &row_acc[..g.ow], out_row);
        }
    }
}

/// The definition every kernel is checked against: a plain convolution with zero-point
/// padding, i64 sums wrapped to i32, requantized.
pub fn reference(l: &Layer, x: &[i8]) -> Vec<i8> {
    let g = l.g;
    let (k, taps) = ((g.kh, g.kw), g.kh * g.kw);
    let mut out = vec![0i8; g.cin * g.oh * g.ow];
    let mut acc = vec![0i32; g.ow];
    for c in 0..g.cin {
        for oy in 0..g.oh {
            for (ox, a) in acc.iter_mut().enumerate() {
                let mut s = l.bias[c] as i64;
                for ky in 0..k.0 {
                    for kx in 0..k.1 {
                        let iy = (oy * g.sh + ky) as isize - g.pt as isize;
                        let ix = (ox * g.sw + kx) as isize - g.pl as isize;
                        let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                        let v = if inside { x[(c * g.h + iy as usize) * g.w + ix as usize] } else { l.x0 };
                        s += l.weights[c * taps + ky * k.1 + kx] as i64 * v as i64;
                    }
                }
                *a = s as i32;
            }
            l.requant.row(c, &acc, &mut out[(c * g.oh + oy) * g.ow..][..g.ow]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{requant_for, xorshift};

    /// `(channels, h, w, k, stride, pad top, pad left, pad bottom, pad right)`: odd sizes,
    /// asymmetric pads, and EfficientNet-Lite0's sixteen depthwise layers (TensorFlow's "same"
    /// padding at stride 2: nothing before, one after).
    type Shape = (usize, usize, usize, usize, usize, usize, usize, usize, usize);
    const SHAPES: &[Shape] = &[
        (3, 7, 9, 3, 1, 1, 1, 1, 1),
        (4, 8, 8, 3, 2, 0, 0, 1, 1),
        (2, 11, 6, 5, 2, 1, 1, 2, 2),
        (2, 5, 5, 5, 1, 2, 2, 2, 2),
        (5, 1, 1, 3, 1, 1, 1, 1, 1),
        (3, 9, 33, 3, 1, 1, 1, 1, 1),
        (3, 17, 17, 3, 2, 1, 1, 1, 1),
        (32, 112, 112, 3, 1, 1, 1, 1, 1),
        (96, 112, 112, 3, 2, 0, 0, 1, 1),
        (144, 56, 56, 3, 1, 1, 1, 1, 1),
        (144, 56, 56, 5, 2, 1, 1, 2, 2),
        (240, 28, 28, 5, 1, 2, 2, 2, 2),
        (240, 28, 28, 3, 2, 0, 0, 1, 1),
        (480, 14, 14, 3, 1, 1, 1, 1, 1),
        (480, 14, 14, 5, 1, 2, 2, 2, 2),
        (672, 14, 14, 5, 1, 2, 2, 2, 2),
        (672, 14, 14, 5, 2, 1, 1, 2, 2),
        (1152, 7, 7, 5, 1, 2, 2, 2, 2),
        (1152, 7, 7, 3, 1, 1, 1, 1, 1),
    ];

    /// Every kernel this CPU runs gives the reference's int8 outputs exactly, for whole layers
    /// and for channel ranges (as threads split them).
    #[test]
    fn every_available_kernel_equals_the_reference() {
        let kernels = DwKernel::available_here();
        eprintln!("depthwise kernels on this CPU: {:?}", kernels.iter().map(|k| k.name()).collect::<Vec<_>>());
        for kernel in DwKernel::ALL {
            if !kernel.available() {
                eprintln!("SKIPPED: depthwise kernel {} (this CPU cannot run it)", kernel.name());
            }
        }
        let mut rnd = xorshift(777);
        for &(c, h, w, k, s, pt, pl, pb, pr) in SHAPES {
            let oh = (h + pt + pb - k) / s + 1;
            let ow = (w + pl + pr - k) / s + 1;
            let g = Geometry { cin: c, h, w, kh: k, kw: k, sh: s, sw: s, pt, pl, oh, ow };
            let x: Vec<i8> = (0..c * h * w).map(|_| rnd()).collect();
            let wt: Vec<i8> = (0..c * k * k).map(|_| rnd()).collect();
            let bias: Vec<i32> = (0..c).map(|i| 100 * i as i32 - 50).collect();
            for x0 in [-7i8, -128, 127] {
                let rq = requant_for(c, k * k);
                let l = Layer { g: &g, weights: &wt, bias: &bias, x0, requant: &rq };
                let want = reference(&l, &x);
                for &kernel in &kernels {
                    let d = Depthwise::new(kernel, g, wt.clone(), bias.clone(), x0, rq.clone()).unwrap();
                    let mut got = vec![0i8; c * oh * ow];
                    d.run(&x, &mut got);
                    assert!(got == want, "{} c={c} h={h} w={w} k={k} s={s} x0={x0}: differs", kernel.name());
                    if c > 1 {
                        let cut = c / 2;
                        let mut parts = vec![0i8; c * oh * ow];
                        let (lo, hi) = parts.split_at_mut(cut * oh * ow);
                        d.run_channels(0..cut, &x, lo);
                        d.run_channels(cut..c, &x, hi);
                        assert!(
                            parts == want,
                            "{} c={c} h={h} k={k} s={s}: split at channel {cut} differs",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for k in DwKernel::ALL {
            assert_eq!(DwKernel::from_name(k.name()), Some(k));
        }
        assert!(DwKernel::Plain.available());
    }
}
