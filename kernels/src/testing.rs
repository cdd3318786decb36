//! Helpers of the kernels' tests.

use crate::depthwise::{reference, Layer};
use crate::{Geometry, Requant};
use std::ops::Range;

/// A deterministic stream of int8 values.
pub fn xorshift(seed: u32) -> impl FnMut() -> i8 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as i8
    }
}

/// A requantization for `m` channels of products of depth `k` of random int8 values whose
/// outputs spread over the int8 range (some saturate): per-channel scales, a few channels with
/// a float offset, a non-zero output zero point, and clip bounds on every third layer shape.
pub fn requant_for(m: usize, k: usize) -> Requant {
    // Random int8 products of depth k sum to about 5500 x sqrt(k) (one standard deviation).
    let base = 40.0 / (5500.0 * (k as f32).sqrt());
    let acc_scale: Vec<f32> = (0..m).map(|c| base * (0.5 + (c % 5) as f32 * 0.3)).collect();
    let (lo, hi) = if (m + k).is_multiple_of(3) { (0.0, 6.0 * 30.0) } else { (f32::NEG_INFINITY, f32::INFINITY) };
    let mut rq = Requant::new(&acc_scale, 1.0 / 3.0, -5, lo, hi);
    for c in (0..m).step_by(7) {
        rq.offset[c] = (c % 11) as f32 - 5.0;
    }
    rq
}

/// A depthwise kernel (`kernel(layer, channels, x, out)`) against the reference on `g`, whole
/// and then split in two channel ranges, with `x` and the weights from `data`, for zero points
/// at the ends of int8 and between, and output stages that take every requantization path:
/// offsets and clip bounds (`requant_for`), scales that take the accumulators past the float
/// conversion's range, biases near the ends of i32 (accumulators that wrap, as the
/// reference's), tiny scales, crossed bounds, a zero point outside int8, bounds outside int8
/// with a zero point beyond i16 (the shared driver).
pub fn check_depthwise(
    kernel: impl Fn(&Layer, Range<usize>, &[i8], &mut [i8]),
    g: Geometry,
    data: &mut impl FnMut() -> i8,
) {
    let c = g.cin;
    let taps = g.kh * g.kw;
    let x: Vec<i8> = (0..c * g.h * g.w).map(|_| data()).collect();
    let wt: Vec<i8> = (0..c * taps).map(|_| data()).collect();
    let bias: Vec<i32> = (0..c).map(|i| 41 * i as i32 - 250).collect();
    let wrapping: Vec<i32> = (0..c).map(|i| if i % 2 == 0 { i32::MAX - 7 * i as i32 } else { i32::MIN + 3 }).collect();
    let mut big = Requant::new(&vec![1e6; c], 1.0, 3, -1.0, 90.0);
    big.scale[0] = 1e-3;
    let tiny = Requant::new(&vec![1e-9; c], 1.0, 0, f32::NEG_INFINITY, f32::INFINITY);
    let mut crossed = requant_for(c, taps);
    (crossed.lo, crossed.hi) = (20, -20);
    let mut odd_zero = requant_for(c, taps);
    odd_zero.y0 = 300;
    let mut wide = requant_for(c, taps);
    (wide.lo, wide.y0) = (-200, 40000);
    let stages = [
        (requant_for(c, taps), &bias),
        (requant_for(c, taps + 2), &bias),
        (big, &bias),
        (requant_for(c, taps), &wrapping),
        (tiny, &wrapping),
        (crossed, &bias),
        (odd_zero, &bias),
        (wide, &bias),
    ];
    for x0 in [-128i8, -7, 0, 127] {
        for (rq, bias) in &stages {
            let l = Layer { g: &g, weights: &wt, bias, x0, requant: rq };
            let want = reference(&l, &x);
            let mut got = vec![0i8; want.len()];
            kernel(&l, 0..c, &x, &mut got);
            assert!(got == want, "{g:?} x0={x0}: differs");
            let cut = c / 2;
            let mut parts = vec![0i8; want.len()];
            let (a, b) = parts.split_at_mut(cut * g.oh * g.ow);
            kernel(&l, 0..cut, &x, a);
            kernel(&l, cut..c, &x, b);
            assert!(parts == want, "{g:?} x0={x0}: split at channel {cut} differs");
        }
    }
}
