//! Helpers of the kernels' tests.

use crate::Requant;

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
