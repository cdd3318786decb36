//! The guaranteed mode's choice (`calibrate --max-drop E --delta D`): on each way of deciding
//! (a curve: a metric, with or without ensembling), Learn then Test by fixed-sequence testing
//! over a threshold grid fixed before the data is seen, from the most forwarding threshold to
//! the least; over several curves, Bonferroni (each curve tested at D / curves), so every
//! threshold certified on any curve holds at once with probability at least 1 - D and the
//! cheapest of them can be taken. Pure: curves in, a choice out.

use crate::core::calibrate::Curve;
use crate::core::guarantee::{inputs_needed, learn_then_test, Tally};
use crate::core::policy::Metric;

/// The thresholds the guaranteed mode tests, in the order it tests them (most forwarding
/// first), the same whatever the data: Learn then Test's hypotheses must be fixed before the
/// calibration draw, so the grid is not taken from the observed scores as the other modes'
/// sweeps are. Steps of 0.001 over [0, 1], finer (down to 1e-6) at the safe end, where
/// max-softmax scores pile up.
pub fn fixed_grid(metric: Metric) -> Vec<f32> {
    let mut g: Vec<f32> = (0..=1000).map(|k| k as f32 / 1000.0).collect();
    for j in 4..=6 {
        for step in [10f64.powi(-j), 5.0 * 10f64.powi(-j)] {
            // Lower is surer for entropy: its safe end is 0.
            g.push(if metric == Metric::Entropy { step as f32 } else { (1.0 - step) as f32 });
        }
    }
    g.sort_by(f32::total_cmp);
    g.dedup();
    if metric != Metric::Entropy {
        g.reverse();
    }
    g
}

/// A certified threshold: curve, point (in that curve's order) and its p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Certified {
    pub curve: usize,
    pub point: usize,
    pub p_value: f64,
}

/// What the guaranteed mode found.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The level of each curve's fixed sequence: delta / the number of curves (Bonferroni).
    pub delta_per_curve: f64,
    /// The cheapest (in MACs) of every certified point over every curve; None when no curve
    /// certified anything (then forwarding every input is the only sure choice).
    pub chosen: Option<Certified>,
    /// How many points each curve certified.
    pub certified_per_curve: Vec<usize>,
    /// When nothing was certified: the observed loss rate of the first threshold in a curve's
    /// sequence that lets any calibration input exit, and about how many calibration inputs
    /// would certify it at that rate (the fewest over the curves; None when no number up to
    /// ten million would, e.g. a loss rate at or above E).
    pub needed: Option<(f64, Option<u64>)>,
}

/// Learn then Test on every curve at `delta / curves.len()`, the points of each curve given in
/// test order (most forwarding first, as [`fixed_grid`] sorts them), `n` calibration inputs,
/// each point's loss count in `Point::losses` (the cascade wrong where the last stage alone is
/// right; with the last stage's answers as labels, a disagreement with it). Stops each curve at
/// its first threshold not certified; takes the cheapest certified point over all curves (ties:
/// the earlier curve, the earlier point).
pub fn select(curves: &[Curve], n: u64, max_drop: f64, delta: f64) -> Selection {
    let delta_per_curve = delta / curves.len().max(1) as f64;
    let mut chosen: Option<Certified> = None;
    let mut certified_per_curve = Vec::with_capacity(curves.len());
    let mut needed: Option<(f64, Option<u64>)> = None;
    for (c, curve) in curves.iter().enumerate() {
        let tallies: Vec<Tally> = curve.points.iter().map(|p| Tally { n, losses: p.losses as u64 }).collect();
        let cert = learn_then_test(&tallies, max_drop, delta_per_curve);
        let certified = cert.chosen.map_or(0, |last| last + 1);
        certified_per_curve.push(certified);
        for p in 0..certified {
            let cheaper = chosen.is_none_or(|b| curve.points[p].cost.macs < curves[b.curve].points[b.point].cost.macs);
            if cheaper {
                chosen = Some(Certified { curve: c, point: p, p_value: cert.p_values[p] });
            }
        }
        // The first threshold that exits anything here: what a larger set would certify first.
        if let Some(first) = curve.points.iter().find(|p| p.forwarded < 1.0) {
            let rate = first.losses as f64 / n.max(1) as f64;
            let count = inputs_needed(rate, max_drop, delta_per_curve, 10_000_000);
            let fewer = match (needed, count) {
                (None, _) => true,
                (Some((_, None)), Some(_)) => true,
                (Some((_, Some(old))), Some(new)) => new < old,
                _ => false,
            };
            if fewer {
                needed = Some((rate, count));
            }
        }
    }
    Selection { delta_per_curve, needed: if chosen.is_some() { None } else { needed }, chosen, certified_per_curve }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::calibrate::{sweep, Point};
    use crate::core::cost::{Cost, CostModel, Figure, LocalStage};
    use crate::tune::eval::Record;

    fn pt(forwarded: f64, macs: f64, losses: usize) -> Point {
        Point {
            threshold: 0.0,
            top1: 0.0,
            forwarded,
            reach: vec![],
            cost: Cost { macs, ..Default::default() },
            correct: 0,
            gains: 0,
            losses,
        }
    }

    fn curve(points: Vec<Point>) -> Curve {
        Curve { metric: Metric::MaxSoftmax, ensemble: false, temperatures: vec![1.0, 1.0], points }
    }

    #[test]
    fn the_grid_is_fixed_and_runs_from_the_most_forwarding_threshold() {
        let g = fixed_grid(Metric::MaxSoftmax);
        assert_eq!(g[0], 1.0);
        assert!(g.windows(2).all(|w| w[0] > w[1]));
        assert!(g.contains(&((1.0 - 1e-6f64) as f32)) && g.contains(&0.5) && *g.last().unwrap() == 0.0);
        let e = fixed_grid(Metric::Entropy);
        assert_eq!(e[0], 0.0);
        assert!(e.windows(2).all(|w| w[0] < w[1]) && e.contains(&1e-6));
        assert_eq!(g.len(), e.len());
    }

    #[test]
    fn bonferroni_level_the_cheapest_certified_point_and_the_stop() {
        // n = 1000, E = 0.01: 0 losses p = 0.99^1000 = 4e-5; 5 losses p = P(Bin <= 5) = 0.066;
        // 2 losses p = 0.0028.
        let a =
            curve(vec![pt(0.9, 900.0, 0), pt(0.5, 500.0, 2), pt(0.3, 300.0, 5), pt(0.2, 200.0, 12), pt(0.1, 100.0, 0)]);
        let b = curve(vec![pt(0.8, 800.0, 0), pt(0.4, 400.0, 2), pt(0.35, 350.0, 3)]);
        // Alone at delta 0.1, curve a certifies down to 300 (p 0.066 <= 0.1), then stops at 12
        // losses (p 0.79), even though the point after it has no loss.
        let s = select(std::slice::from_ref(&a), 1000, 0.01, 0.1);
        assert_eq!(s.delta_per_curve, 0.1);
        assert_eq!(s.certified_per_curve, vec![3]);
        assert_eq!(s.chosen.map(|c| (c.curve, c.point)), Some((0, 2)));
        assert!((s.chosen.unwrap().p_value - 0.0661).abs() < 1e-3, "{:?}", s.chosen);
        // Two curves: each at 0.05, so a's 5 losses no longer pass; b's 3 losses (p 0.0101) do,
        // and b's 350 is the cheapest certified point.
        let s = select(&[a, b], 1000, 0.01, 0.1);
        assert_eq!(s.delta_per_curve, 0.05);
        assert_eq!(s.certified_per_curve, vec![2, 3]);
        assert!(s.chosen.unwrap().p_value <= 0.05);
        assert_eq!(s.chosen.map(|c| (c.curve, c.point)), Some((1, 2)));
        assert_eq!(s.needed, None);
    }

    #[test]
    fn too_few_inputs_certify_nothing_and_say_how_many_would() {
        // 20 inputs, E = 0.05, delta 0.1 over two curves: the first threshold exits nothing
        // (p = 0.95^20 = 0.36); the first that exits something has no loss, so
        // ceil(ln 0.05 / ln 0.95) = 59 inputs would certify it.
        let c = curve(vec![pt(1.0, 1000.0, 0), pt(0.9, 950.0, 0), pt(0.5, 500.0, 1)]);
        let s = select(&[c.clone(), c], 20, 0.05, 0.1);
        assert_eq!(s.chosen, None);
        assert_eq!(s.certified_per_curve, vec![0, 0]);
        assert_eq!(s.needed, Some((0.0, Some(59))));
    }

    /// Seeded calibration draws from a known population: a first stage whose confidence is
    /// uniform and which is right with probability equal to its confidence, a last stage right
    /// 80% of the time independently. The true loss at threshold t (the first stage exits at
    /// confidence >= t, wrong, the last right) is 0.8 (1 - t^2) / 2; the guaranteed choice's
    /// true loss must exceed E in at most delta of the draws.
    #[test]
    fn over_seeded_draws_the_choice_violates_e_at_most_delta_of_the_time() {
        let (e, delta, n, draws) = (0.05, 0.1, 400usize, 300usize);
        let model = CostModel {
            local: [100u64, 1000]
                .iter()
                .map(|&m| LocalStage { macs: m, ms: Figure::estimate(1.0, "t"), mj: Figure::estimate(1.0, "t") })
                .collect(),
            remote: None,
        };
        let grid: Vec<f32> = (0..=100).rev().map(|k| k as f32 / 100.0).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut violations, mut certified) = (0, 0);
        for _ in 0..draws {
            let records: Vec<Record> = (0..n)
                .map(|_| {
                    // Two classes: the first stage's top probability is its confidence c in
                    // [0.5, 1); mapped to [0, 1) for the threshold by the margin 2c - 1.
                    let c = 0.5 + uniform() / 2.0;
                    let small_right = uniform() < c;
                    let big_right = uniform() < 0.8;
                    let label = 0;
                    let small = if small_right { [c, 1.0 - c] } else { [1.0 - c, c] };
                    let big = if big_right { [0.9, 0.1] } else { [0.1, 0.9] };
                    let l = |p: [f64; 2]| p.iter().map(|x| x.ln() as f32).collect();
                    Record { input: "x".into(), label, logits: vec![l(small), l(big)], macs: vec![] }
                })
                .collect();
            let curves = vec![sweep(&records, Metric::Margin, false, &[1.0, 1.0], &model, &grid)];
            let s = select(&curves, n as u64, e, delta);
            if let Some(c) = s.chosen {
                certified += 1;
                // Margin m = 2c - 1 uniform on [0, 1); exits at m >= t; wrong with prob
                // 1 - c = (1 - m) / 2; the loss rate is 0.8 * ∫_t^1 (1 - m) / 2 dm.
                let t = curves[0].points[c.point].threshold as f64;
                let true_loss = 0.8 * (1.0 - t).powi(2) / 4.0;
                violations += (true_loss > e) as usize;
            }
        }
        assert!(certified > draws / 2, "the test has power: {certified} of {draws}");
        assert!((violations as f64) <= delta * draws as f64, "{violations} violations in {draws} draws");
    }
}
