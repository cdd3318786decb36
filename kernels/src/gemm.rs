//! Int8 matrix products with their output stage: `out[r][j] = requant(r, bias[r] + sum_i
//! w[r][i] * x[i][j])` for weights `w` `[m, k]` and activations `x` `[k, n]` (row-major int8:
//! an NCHW tensor is already `[channels, pixels]`). One [`Gemm`] is one layer: its weights
//! packed once for one [`GemmKernel`], its bias and requantization. Every kernel accumulates
//! exactly in i32 and requantizes as [`Requant::row`] does, so all of them give the same int8
//! outputs, bit for bit (the tests check it); they differ only in speed, which depends on the
//! CPU and the shape, so the caller times them and keeps the fastest.

use crate::Requant;
use std::ops::Range;

/// A matrix kernel. Which ones can run depends on the CPU: [`GemmKernel::available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// Portable Rust, vectorised by the compiler for the target's baseline (SSE2, NEON).
    Plain,
    /// x86_64 AVX2: operands widened to i16 pairs, `vpmaddwd`.
    Avx2,
    /// x86_64 AVX-512 VNNI: `vpdpbusd` on 512-bit registers (u8 x s8, activations offset by 128).
    Avx512Vnni,
    /// x86_64 AVX-VNNI: `vpdpbusd` on 256-bit registers (VEX encoding).
    AvxVnni,
    /// aarch64 NEON without the dot product (Cortex-A72, a Pi 4): `smlal`.
    Neon,
    /// aarch64 NEON with the dot product (Cortex-A76, A78: a Pi 5, a Jetson Orin): `sdot`.
    NeonDot,
}

impl GemmKernel {
    /// Every kernel, portable first.
    pub const ALL: [GemmKernel; 6] = [
        GemmKernel::Plain,
        GemmKernel::Avx2,
        GemmKernel::Avx512Vnni,
        GemmKernel::AvxVnni,
        GemmKernel::Neon,
        GemmKernel::NeonDot,
    ];

    /// The name used in logs, caches and `--int8-kernel`.
    pub fn name(self) -> &'static str {
        match self {
            GemmKernel::Plain => "plain",
            GemmKernel::Avx2 => "avx2",
            GemmKernel::Avx512Vnni => "avx512vnni",
            GemmKernel::AvxVnni => "avxvnni",
            GemmKernel::Neon => "neon",
            GemmKernel::NeonDot => "neon-dot",
        }
    }

    pub fn from_name(name: &str) -> Option<GemmKernel> {
        GemmKernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            GemmKernel::Plain => true,
            GemmKernel::Avx2 => crate::avx2::available(),
            GemmKernel::Avx512Vnni => crate::vnni::available_512(),
            GemmKernel::AvxVnni => crate::vnni::available_256(),
            GemmKernel::Neon => crate::neon::available(),
            GemmKernel::NeonDot => crate::neon::available_dot(),
        }
    }

    /// The kernels this CPU can run.
    pub fn available_here() -> Vec<GemmKernel> {
        GemmKernel::ALL.into_iter().filter(|k| k.available()).collect()
    }
}

/// The weights in the layout of one kernel.
#[derive(Debug, Clone)]
enum Packed {
    /// Row-major `[m, k]`, as given.
    Plain(Vec<i8>),
    Avx2(crate::avx2::PackedWeights),
    Vnni(crate::vnni::PackedWeights),
    Neon(crate::neon::PackedWeights),
}

/// A kernel asked for on a CPU that cannot run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the int8 kernel {} cannot run on this CPU", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// One layer's matrix product: weights packed for a kernel, bias, requantization.
#[derive(Debug, Clone)]
pub struct Gemm {
    kernel: GemmKernel,
    m: usize,
    k: usize,
    bias: Vec<i32>,
    requant: Requant,
    packed: Packed,
}

impl Gemm {
    /// Packs `weights` (`[m, k]`, row-major) for `kernel`.
    ///
    /// # Panics
    /// If `weights`, `bias` or `requant` do not have `m x k`, `m` and `m` entries.
    pub fn new(
        kernel: GemmKernel,
        weights: &[i8],
        m: usize,
        k: usize,
        bias: Vec<i32>,
        requant: Requant,
    ) -> Result<Gemm, Unavailable> {
        assert!(weights.len() == m * k && bias.len() == m && requant.scale.len() == m && requant.offset.len() == m);
        if !kernel.available() {
            return Err(Unavailable(kernel.name()));
        }
        let packed = match kernel {
            GemmKernel::Plain => Packed::Plain(weights.to_vec()),
            GemmKernel::Avx2 => Packed::Avx2(crate::avx2::PackedWeights::new(weights, m, k)),
            GemmKernel::Avx512Vnni | GemmKernel::AvxVnni => {
                Packed::Vnni(crate::vnni::PackedWeights::new(weights, m, k, kernel == GemmKernel::Avx512Vnni))
            }
            GemmKernel::Neon | GemmKernel::NeonDot => {
                Packed::Neon(crate::neon::PackedWeights::new(weights, m, k, kernel == GemmKernel::NeonDot))
            }
        };
        Ok(Gemm { kernel, m, k, bias, requant, packed })
    }

    pub fn kernel(&self) -> GemmKernel {
        self.kernel
    }

    /// Rows (output channels).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Depth.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Threads split the rows in multiples of this (the kernel's row panel).
    pub fn row_block(&self) -> usize {
        match &self.packed {
            Packed::Plain(_) => 1,
            Packed::Avx2(_) => crate::avx2::MR,
            Packed::Vnni(w) => w.row_block(),
            Packed::Neon(w) => w.row_block(),
        }
    }

    /// The product over every row: `x` is `[k, n]`, `out` `[m, n]`.
    ///
    /// # Panics
    /// If the sizes do not match.
    pub fn run(&self, x: &[i8], n: usize, out: &mut [i8]) {
        self.run_rows(0..self.m, x, n, out)
    }

    /// The product for rows `rows` only, written to `out` (`[rows.len(), n]`): for splitting a
    /// product between threads. `rows.start`, and `rows.end` unless it is `m`, must be multiples
    /// of [`Gemm::row_block`].
    ///
    /// # Panics
    /// If the sizes do not match or `rows.start` is not a multiple of the row block.
    pub fn run_rows(&self, rows: Range<usize>, x: &[i8], n: usize, out: &mut [i8]) {
        let b = self.row_block();
        assert!(
            rows.start <= rows.end
                && rows.end <= self.m
                && rows.start.is_multiple_of(b)
                && (rows.end == self.m || rows.end.is_multiple_of(b))
        );
        assert!(x.len() == self.k * n && out.len() == rows.len() * n);
        if rows.is_empty() || n == 0 {
            return;
        }
        match &self.packed {
            Packed::Plain(w) => plain(w, self.k, rows, x, n, &self.bias, &self.requant, out),
            Packed::Avx2(w) => {
                let (b, panels) = (crate::avx2::MR, crate::avx2::panels(self.m));
                if n == 1 {
                    crate::avx2::matvec_rows(w, rows, x, &self.bias, &self.requant, out)
                } else {
                    crate::avx2::gemm_panels(
                        w,
                        rows.start / b..rows.end.div_ceil(b).min(panels),
                        x,
                        n,
                        &self.bias,
                        &self.requant,
                        out,
                    )
                }
            }
            Packed::Vnni(w) => w.run(rows, x, n, &self.bias, &self.requant, out),
            Packed::Neon(w) => w.run(rows, x, n, &self.bias, &self.requant, out),
        }
    }
}

/// The portable product: per row, the accumulators of every column updated one weight at a
/// time (a loop over columns the compiler vectorises), then requantized.
#[allow(clippy::too_many_arguments)]
fn plain(w: &[i8], k: usize, rows: Range<usize>, x: &[i8], n: usize, bias: &[i32], rq: &Requant, out: &mut [i8]) {
    if n == 1 {
        // One column: a dot product per row (vectorised along k).
        for (r, o) in rows.zip(out.chunks_exact_mut(1)) {
            let dot = w[r * k..][..k].iter().zip(x).fold(0i32, |s, (&a, &b)| s.wrapping_add(a as i32 * b as i32));
            rq.row_inline(r, &[bias[r].wrapping_add(dot)], o);
        }
        return;
    }
    let mut acc = vec![0i32; n];
    for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
        acc.fill(bias[r]);
        for (i, &wv) in w[r * k..][..k].iter().enumerate() {
            let wv = wv as i16;
            for (a, &xv) in acc.iter_mut().zip(&x[i * n..][..n]) {
                // |w| and |x| <= 128: the product fits an i16.
                *a = a.wrapping_add((wv * xv as i16) as i32);
            }
        }
        rq.row_inline(r, &acc, o);
    }
}

/// The definition every kernel is checked against: i64 sums, wrapped to i32, requantized.
pub fn reference(w: &[i8], m: usize, k: usize, x: &[i8], n: usize, bias: &[i32], rq: &Requant) -> Vec<i8> {
    let mut out = vec![0i8; m * n];
    let mut acc = vec![0i32; n];
    for r in 0..m {
        for (j, a) in acc.iter_mut().enumerate() {
            let s: i64 = (0..k).map(|i| w[r * k + i] as i64 * x[i * n + j] as i64).sum();
            *a = (s + bias[r] as i64) as i32;
        }
        rq.row(r, &acc, &mut out[r * n..][..n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{requant_for, xorshift};

    /// Shapes that stress the edges (one row, one column, odd depths, partial tiles) and the
    /// shapes of EfficientNet-Lite0's products (pointwise convolutions at every resolution,
    /// the stem's im2col, the classifier).
    pub const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (5, 3, 17),
        (3, 37, 1),
        (7, 1280, 1),
        (33, 27, 40),
        (4, 2, 16),
        (8, 33, 48),
        (17, 5, 65),
        (64, 64, 64),
        (31, 129, 33),
        (16, 32, 12544),
        (96, 16, 12544),
        (24, 96, 3136),
        (144, 24, 3136),
        (40, 144, 784),
        (240, 40, 784),
        (80, 240, 196),
        (480, 80, 196),
        (112, 480, 196),
        (672, 112, 196),
        (192, 672, 49),
        (1152, 192, 49),
        (320, 1152, 49),
        (1280, 320, 49),
        (32, 27, 12544),
        (1000, 1280, 1),
    ];

    /// Every kernel this CPU runs gives the reference's int8 outputs exactly, on every shape,
    /// for the whole product and for row ranges (as threads split it).
    #[test]
    fn every_available_kernel_equals_the_reference() {
        let kernels = GemmKernel::available_here();
        eprintln!("matrix kernels on this CPU: {:?}", kernels.iter().map(|k| k.name()).collect::<Vec<_>>());
        for kernel in GemmKernel::ALL {
            if !kernel.available() {
                eprintln!("SKIPPED: matrix kernel {} (this CPU cannot run it)", kernel.name());
            }
        }
        let mut rnd = xorshift(2024);
        for &(m, k, n) in SHAPES {
            let w: Vec<i8> = (0..m * k).map(|_| rnd()).collect();
            let x: Vec<i8> = (0..k * n).map(|_| rnd()).collect();
            let bias: Vec<i32> = (0..m).map(|i| (i as i32 * 7919) % 20000 - 10000).collect();
            let rq = requant_for(m, k);
            let want = reference(&w, m, k, &x, n, &bias, &rq);
            for &kernel in &kernels {
                let g = Gemm::new(kernel, &w, m, k, bias.clone(), rq.clone()).unwrap();
                let mut got = vec![0i8; m * n];
                g.run(&x, n, &mut got);
                assert!(got == want, "{} m={m} k={k} n={n}: differs from the reference", kernel.name());
                // Rows split at the kernel's block boundaries, as threads split them.
                let b = g.row_block();
                let cut = (m / 2).div_ceil(b) * b;
                if cut < m {
                    let mut parts = vec![0i8; m * n];
                    let (lo, hi) = parts.split_at_mut(cut * n);
                    g.run_rows(0..cut, &x, n, lo);
                    g.run_rows(cut..m, &x, n, hi);
                    assert!(parts == want, "{} m={m} k={k} n={n}: split at row {cut} differs", kernel.name());
                }
            }
        }
    }

    /// Extreme values: every weight and activation -128 or 127, and a bias near the bound.
    #[test]
    fn extreme_values_are_exact() {
        for &(m, k, n) in &[(8usize, 1152usize, 49usize), (16, 64, 33), (3, 1280, 1)] {
            for (wv, xv) in [(-128i8, -128i8), (127, -128), (-128, 127), (127, 127)] {
                let w = vec![wv; m * k];
                let x = vec![xv; k * n];
                let bias = vec![1 << 29; m];
                let rq = requant_for(m, k);
                let want = reference(&w, m, k, &x, n, &bias, &rq);
                for kernel in GemmKernel::available_here() {
                    let g = Gemm::new(kernel, &w, m, k, bias.clone(), rq.clone()).unwrap();
                    let mut got = vec![0i8; m * n];
                    g.run(&x, n, &mut got);
                    assert!(got == want, "{} m={m} k={k} n={n} w={wv} x={xv}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn names_round_trip_and_unavailable_kernels_are_refused() {
        for k in GemmKernel::ALL {
            assert_eq!(GemmKernel::from_name(k.name()), Some(k));
            let made = Gemm::new(k, &[1], 1, 1, vec![0], Requant::new(&[1.0], 1.0, 0, f32::MIN, f32::MAX));
            assert_eq!(made.is_ok(), k.available(), "{}", k.name());
        }
        assert_eq!(GemmKernel::from_name("nope"), None);
        assert!(GemmKernel::Plain.available());
    }
}
