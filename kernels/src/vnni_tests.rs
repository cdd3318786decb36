//! Tests of `vnni.rs`.

use super::*;
use crate::gemm::reference;
use crate::testing::xorshift;

/// Both instruction sets this CPU runs (none elsewhere).
fn kernels() -> Vec<bool> {
    let k: Vec<bool> =
        [true, false].into_iter().filter(|&w| if w { available_512() } else { available_256() }).collect();
    if k.is_empty() {
        eprintln!("SKIPPED: no VNNI on this CPU");
    }
    k
}

/// Runs rows `0..cut` and `cut..m` separately and checks both against the reference.
fn check(w: &[i8], x: &[i8], (m, k, n): (usize, usize, usize), bias: &[i32], rq: &Requant, what: &str) {
    let want = reference(w, m, k, x, n, bias, rq);
    for wide in kernels() {
        let p = PackedWeights::new(w, m, k, wide);
        let cut = (m / 2).div_ceil(P) * P;
        let mut got = vec![0i8; m * n];
        let (lo, hi) = got.split_at_mut(cut.min(m) * n);
        p.run(0..cut.min(m), x, n, bias, rq, lo);
        p.run(cut.min(m)..m, x, n, bias, rq, hi);
        assert!(got == want, "wide={wide} m={m} k={k} n={n} {what}: differs from the reference");
    }
}

fn requant(
    m: usize,
    scale: impl Fn(usize) -> f32,
    offset: impl Fn(usize) -> f32,
    y0: i32,
    lo: i32,
    hi: i32,
) -> Requant {
    Requant { scale: (0..m).map(scale).collect(), offset: (0..m).map(offset).collect(), y0, lo, hi }
}

/// Every tile height, full and partial blocks of columns, depths around multiples of 4,
/// under the three epilogues of full blocks and the exact one of partial blocks.
#[test]
fn shapes_and_requantizations_equal_the_reference() {
    let mut rnd = xorshift(7);
    for &(m, k, n) in &[
        (1, 1, 2),
        (13, 3, 64),
        (9, 5, 65),
        (7, 16, 130),
        (12, 27, 49),
        (6, 33, 17),
        (11, 64, 196),
        (25, 8, 16),
        (4, 4, 127),
        (14, 40, 1),
        (33, 260, 1),
    ] {
        let w: Vec<i8> = (0..m * k).map(|_| rnd()).collect();
        let x: Vec<i8> = (0..k * n).map(|_| rnd()).collect();
        let bias: Vec<i32> = (0..m).map(|i| (i as i32 * 7919) % 20000 - 10000).collect();
        let s = 30.0 / (5500.0 * (k as f32).sqrt());
        let sc = |c: usize| s * (0.5 + (c % 3) as f32 * 0.4);
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |_| 0.0, -3, -128, 127), "no offsets");
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |c| c as f32 * 1.5 - 4.0, 5, -20, 100), "offsets");
        // Large scales (outputs far past the bounds), an infinite and a NaN one.
        let big = |c: usize| match c % 4 {
            0 => 1e6,
            1 => f32::INFINITY,
            2 => f32::NAN,
            _ => -3e9,
        };
        check(&w, &x, (m, k, n), &bias, &requant(m, big, |_| 0.0, 7, -128, 127), "large scales");
        let finite = |c: usize| if c.is_multiple_of(2) { 0.75 } else { -2e4 };
        check(&w, &x, (m, k, n), &bias, &requant(m, finite, |_| 0.0, -1, -128, 127), "large finite scales");
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |c| [f32::NAN, 0.0, 1e12][c % 3], 0, -5, 60), "odd offsets");
        // Bounds past int8 (the output wraps, as `as i8` does) and an inverted pair.
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |_| 0.0, 3, -300, 300), "wide bounds");
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |_| 0.0, 1000, 1100, 900), "large zero point");
        check(&w, &x, (m, k, n), &bias, &requant(m, sc, |_| 0.0, 0, 10, -10), "inverted bounds");
    }
}

/// The bias correction and the accumulators wrap as the reference's i32 does.
#[test]
fn wrapping_is_exact() {
    let (m, k, n) = (8, 300, 70);
    let w = vec![-128i8; m * k];
    let x = vec![-128i8; k * n];
    let bias: Vec<i32> = (0..m).map(|i| i32::MAX - i as i32 * 1000).collect();
    check(&w, &x, (m, k, n), &bias, &requant(m, |_| 1e-6, |_| 0.0, 0, -128, 127), "wrapping");
}
