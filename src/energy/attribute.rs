//! Pure attribution of energy to a span of time from timestamped sensor samples (times in
//! seconds from any origin, increasing). Power samples are integrated by trapezoids, with
//! the power at the span's ends interpolated between the samples around them (held
//! constant beyond the first and last sample). Cumulative energy samples (RAPL, the
//! estimate) are interpolated at the span's ends and subtracted. No I/O, no clock.

/// Linear interpolation of samples at `t`; beyond the ends, the nearest sample's value.
fn interpolate(samples: &[(f64, f64)], t: f64) -> f64 {
    let i = samples.partition_point(|&(ts, _)| ts <= t);
    if i == 0 {
        return samples[0].1;
    }
    if i == samples.len() {
        return samples[i - 1].1;
    }
    let (ta, va) = samples[i - 1];
    let (tb, vb) = samples[i];
    if tb <= ta {
        return vb;
    }
    va + (vb - va) * (t - ta) / (tb - ta)
}

/// Joules over `[a, b]` from power samples `(t, watts)`: the integral of the piecewise-linear
/// power through the samples (trapezoids, ends interpolated). None without samples.
pub fn power_integral(samples: &[(f64, f64)], a: f64, b: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    if b <= a {
        return Some(0.0);
    }
    let mut joules = 0.0;
    let (mut t_prev, mut p_prev) = (a, interpolate(samples, a));
    let start = samples.partition_point(|&(t, _)| t <= a);
    for &(t, p) in samples[start..].iter().take_while(|&&(t, _)| t < b) {
        joules += (t - t_prev) * (p + p_prev) / 2.0;
        (t_prev, p_prev) = (t, p);
    }
    joules += (b - t_prev) * (interpolate(samples, b) + p_prev) / 2.0;
    Some(joules)
}

/// Cumulative energy at `t` from samples `(t, joules)`: interpolated between samples,
/// extrapolated beyond the ends at the slope of the nearest pair. Needs two samples.
fn counter_at(samples: &[(f64, f64)], t: f64) -> f64 {
    let n = samples.len();
    let i = samples.partition_point(|&(ts, _)| ts <= t).clamp(1, n - 1);
    let (ta, ea) = samples[i - 1];
    let (tb, eb) = samples[i];
    if tb <= ta {
        return eb;
    }
    ea + (eb - ea) * (t - ta) / (tb - ta)
}

/// Joules over `[a, b]` from cumulative energy samples `(t, joules)`. None with fewer than
/// two samples.
pub fn counter_integral(samples: &[(f64, f64)], a: f64, b: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    if b <= a {
        return Some(0.0);
    }
    Some((counter_at(samples, b) - counter_at(samples, a)).max(0.0))
}

/// Mean power over `[a, b]` from power samples, or None when it cannot be had.
pub fn mean_power(samples: &[(f64, f64)], a: f64, b: f64) -> Option<f64> {
    (b > a).then(|| power_integral(samples, a, b).map(|j| j / (b - a))).flatten()
}

/// A span shorter than two sensor intervals holds at most one reading of its own: its
/// figure rests on interpolation.
pub fn is_interpolated(span_s: f64, interval_s: f64) -> bool {
    span_s < 2.0 * interval_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_power_is_power_times_time() {
        let s: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 0.01, 5.0)).collect();
        assert!((power_integral(&s, 0.123, 0.456).unwrap() - 5.0 * 0.333).abs() < 1e-12);
        // Beyond the samples the power is held.
        assert!((power_integral(&s, -1.0, 2.0).unwrap() - 15.0).abs() < 1e-12);
    }

    #[test]
    fn ramp_is_integrated_exactly() {
        // p(t) = 10 t, sampled every 0.1 s: trapezoids are exact for a line.
        let s: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64 / 10.0, i as f64)).collect();
        let j = power_integral(&s, 0.25, 0.75).unwrap();
        assert!((j - 5.0 * (0.75f64.powi(2) - 0.25f64.powi(2))).abs() < 1e-12, "{j}");
    }

    #[test]
    fn span_between_two_samples_uses_interpolated_ends() {
        let s = [(0.0, 2.0), (1.0, 4.0)];
        // p(0.25)=2.5, p(0.5)=3: (2.5+3)/2 x 0.25.
        assert!((power_integral(&s, 0.25, 0.5).unwrap() - 0.6875).abs() < 1e-12);
    }

    #[test]
    fn counter_is_interpolated_and_extrapolated() {
        let s = [(0.0, 0.0), (1.0, 3.0), (2.0, 5.0)];
        assert!((counter_integral(&s, 0.5, 1.5).unwrap() - (4.0 - 1.5)).abs() < 1e-12);
        assert!((counter_integral(&s, 2.0, 3.0).unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(counter_integral(&s[..1], 0.0, 1.0), None);
        assert_eq!(power_integral(&[], 0.0, 1.0), None);
    }

    #[test]
    fn short_spans_are_flagged() {
        assert!(is_interpolated(0.15, 0.1));
        assert!(!is_interpolated(0.2, 0.1));
    }
}
