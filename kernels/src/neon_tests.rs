//! Tests of `neon.rs` (run natively on aarch64 and under qemu as a Cortex-A72 and a Cortex-A76).

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
