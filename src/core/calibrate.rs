//! Threshold calibration on cached logits: temperature fitting (negative log-likelihood),
//! threshold sweeps for each metric with and without ensembling and temperature scaling,
//! the Pareto front of accuracy against cost, the choice of a threshold for a target or a
//! budget, and the prediction interval of the forward rate. Pure: no I/O, no clock. Every
//! decision goes through `policy::decide` and `Metric::clears`, the rule live runs use.

use crate::core::cost::{Cost, CostModel};
use crate::core::policy::{decide, Metric, StagePolicy};
use crate::tune::eval::Record;
use serde::Serialize;

/// Mean negative log-likelihood of the labels under softmax(logits / t).
pub fn nll(logits: &[&[f32]], labels: &[usize], t: f64) -> f64 {
    let mut total = 0.0;
    for (l, &y) in logits.iter().zip(labels) {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = l.iter().map(|&v| ((v as f64 - max) / t).exp()).sum::<f64>().ln();
        total += lse - (l[y] as f64 - max) / t;
    }
    total / logits.len().max(1) as f64
}

/// The temperature minimising the NLL, by golden-section search on ln t in [ln 0.05, ln 20].
pub fn fit_temperature(logits: &[&[f32]], labels: &[usize]) -> f64 {
    let f = |x: f64| nll(logits, labels, x.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// One point of a sweep: a threshold and what the cascade does with it on the data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub threshold: f32,
    pub top1: f64,
    /// Fraction of inputs that went past the first stage.
    pub forwarded: f64,
    /// Fraction of inputs that ran each stage.
    pub reach: Vec<f64>,
    pub cost: Cost,
    /// Inputs the cascade answered right (`top1` times n).
    pub correct: usize,
    /// Inputs the cascade answered right and the last stage alone wrong.
    pub gains: usize,
    /// Inputs the cascade answered wrong and the last stage alone right (the loss that
    /// `core::certify` bounds).
    pub losses: usize,
}

/// A sweep for one way of deciding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Curve {
    pub metric: Metric,
    pub ensemble: bool,
    /// The temperature of each stage (all 1 without temperature scaling).
    pub temperatures: Vec<f64>,
    pub points: Vec<Point>,
}

impl Curve {
    pub fn label(&self) -> String {
        let t = if self.temperatures.iter().all(|&t| t == 1.0) { "" } else { ", temperature" };
        let e = if self.ensemble { ", ensemble" } else { "" };
        format!("{}{e}{t}", self.metric)
    }
}

/// Per record and stage: the score and class the stage would decide on.
struct Decisions {
    scores: Vec<Vec<f32>>,
    classes: Vec<Vec<usize>>,
}

fn decisions(records: &[Record], metric: Metric, ensemble: bool, temps: &[f64]) -> Decisions {
    let stages = temps.len();
    let mut scores = Vec::with_capacity(records.len());
    let mut classes = Vec::with_capacity(records.len());
    for r in records {
        let mut history = Vec::with_capacity(stages);
        let (mut s, mut c) = (Vec::with_capacity(stages), Vec::with_capacity(stages));
        for (i, &t) in temps.iter().enumerate() {
            history.push(crate::core::policy::softmax(&r.logits[i], t as f32));
            let v = decide(&StagePolicy { metric, threshold: None, temperature: t as f32 }, &history, ensemble);
            s.push(v.score);
            c.push(v.class);
        }
        scores.push(s);
        classes.push(c);
    }
    Decisions { scores, classes }
}

/// Sweeps the threshold (shared by every stage but the last) over `thresholds`, or over the
/// observed first-stage scores when `thresholds` is empty.
pub fn sweep(
    records: &[Record],
    metric: Metric,
    ensemble: bool,
    temps: &[f64],
    model: &CostModel,
    thresholds: &[f32],
) -> Curve {
    let d = decisions(records, metric, ensemble, temps);
    let stages = temps.len();
    let candidates: Vec<f32> =
        if thresholds.is_empty() { candidate_thresholds(&d, metric) } else { thresholds.to_vec() };
    let n = records.len().max(1) as f64;
    // The last stage alone, at temperature 1 (a temperature does not move the argmax).
    let last_right: Vec<bool> =
        records.iter().map(|r| crate::core::policy::argmax(&r.logits[stages - 1]) == r.label).collect();
    let points = candidates
        .into_iter()
        .map(|t| {
            let mut reach = vec![0usize; stages];
            let (mut correct, mut gains, mut losses) = (0usize, 0usize, 0usize);
            for (((scores, classes), r), &last_right) in d.scores.iter().zip(&d.classes).zip(records).zip(&last_right) {
                let exit = (0..stages - 1).find(|&i| metric.clears(scores[i], t)).unwrap_or(stages - 1);
                for slot in reach.iter_mut().take(exit + 1) {
                    *slot += 1;
                }
                let right = classes[exit] == r.label;
                correct += right as usize;
                gains += (right && !last_right) as usize;
                losses += (!right && last_right) as usize;
            }
            let reach: Vec<f64> = reach.into_iter().map(|k| k as f64 / n).collect();
            Point {
                threshold: t,
                top1: correct as f64 / n,
                forwarded: reach.get(1).copied().unwrap_or(0.0),
                cost: model.expected(&reach),
                reach,
                correct,
                gains,
                losses,
            }
        })
        .collect();
    Curve { metric, ensemble, temperatures: temps.to_vec(), points }
}

/// Up to about 200 thresholds at the quantiles of the first stage's scores, and the two ends
/// (everything answered by the first stage, everything forwarded).
fn candidate_thresholds(d: &Decisions, metric: Metric) -> Vec<f32> {
    let mut s: Vec<f32> = d.scores.iter().map(|v| v[0]).filter(|v| v.is_finite()).collect();
    s.sort_by(f32::total_cmp);
    let step = (s.len() / 200).max(1);
    let mut out: Vec<f32> = s.iter().step_by(step).copied().collect();
    // Ends: a threshold every score clears, and one none does.
    match metric {
        Metric::Entropy => out.extend([1.0, -0.001]),
        _ => out.extend([0.0, 1.001]),
    }
    out.sort_by(f32::total_cmp);
    out.dedup();
    out
}

/// Indices of the points on the Pareto front (no other point is at least as accurate and
/// cheaper in MACs), cheapest first.
pub fn pareto(points: &[&Point]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.sort_by(|&a, &b| {
        points[a].cost.macs.total_cmp(&points[b].cost.macs).then(points[b].top1.total_cmp(&points[a].top1))
    });
    let mut best = f64::NEG_INFINITY;
    idx.into_iter()
        .filter(|&i| {
            let keep = points[i].top1 > best;
            best = best.max(points[i].top1);
            keep
        })
        .collect()
}

/// What calibration aims for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Target {
    /// The cheapest point (in MACs) at least this accurate.
    Accuracy(f64),
    /// The most accurate point within a budget per input.
    Macs(f64),
    Mj(f64),
    Ms(f64),
    /// The most accurate point forwarding at most this fraction.
    MaxForward(f64),
}

/// Picks (curve, point) for the target. When nothing meets it, `Err` holds the closest point:
/// the most accurate one for an accuracy target, the cheapest for a budget.
pub fn choose(curves: &[Curve], target: Target) -> Result<(usize, usize), (usize, usize)> {
    let all: Vec<(usize, usize, &Point)> = curves
        .iter()
        .enumerate()
        .flat_map(|(c, curve)| curve.points.iter().enumerate().map(move |(p, pt)| (c, p, pt)))
        .collect();
    let cheaper = |a: &Point, b: &Point| a.cost.macs.total_cmp(&b.cost.macs);
    let better = |a: &Point, b: &Point| a.top1.total_cmp(&b.top1).then(cheaper(b, a));
    // Ties go to the earliest curve (the simplest way of deciding: max-softmax, no ensemble,
    // no temperature): `max_by` keeps the last of equal elements, so walk backwards.
    let pick = |ok: &dyn Fn(&Point) -> bool, by_cost: bool| {
        all.iter()
            .rev()
            .filter(|(_, _, p)| ok(p))
            .max_by(
                |(_, _, a), (_, _, b)| {
                    if by_cost {
                        cheaper(b, a).then(a.top1.total_cmp(&b.top1))
                    } else {
                        better(a, b)
                    }
                },
            )
            .map(|&(c, p, _)| (c, p))
    };
    let most_accurate = || pick(&|_| true, false).expect("a sweep has points");
    let cheapest = |key: &dyn Fn(&Point) -> f64| {
        all.iter().min_by(|(_, _, a), (_, _, b)| key(a).total_cmp(&key(b))).map(|&(c, p, _)| (c, p)).expect("points")
    };
    match target {
        Target::Accuracy(a) => pick(&|p| p.top1 >= a - 1e-12, true).ok_or_else(most_accurate),
        Target::Macs(m) => pick(&|p| p.cost.macs <= m, false).ok_or_else(|| cheapest(&|p| p.cost.macs)),
        Target::Mj(e) => pick(&|p| p.cost.device_mj <= e, false).ok_or_else(|| cheapest(&|p| p.cost.device_mj)),
        Target::Ms(t) => pick(&|p| p.cost.ms <= t, false).ok_or_else(|| cheapest(&|p| p.cost.ms)),
        Target::MaxForward(f) => pick(&|p| p.forwarded <= f + 1e-12, false).ok_or_else(|| cheapest(&|p| p.forwarded)),
    }
}

/// The 99% interval of the fraction forwarded in a future run of `m` inputs, given `k` of `n`
/// forwarded during calibration: normal approximation with both samples' variance, the rate
/// smoothed by half an input so that 0 and n still get an interval.
pub fn forward_interval(k: usize, n: usize, m: usize) -> (f64, f64) {
    const Z99: f64 = 2.5758;
    let p = k as f64 / n.max(1) as f64;
    let ps = (k as f64 + 0.5) / (n as f64 + 1.0);
    let half = Z99 * (ps * (1.0 - ps) * (1.0 / n.max(1) as f64 + 1.0 / m.max(1) as f64)).sqrt();
    ((p - half).max(0.0), (p + half).min(1.0))
}

/// The paper's figure of merit: among the single models the cascade matches in accuracy, the
/// most accurate one, and how many times fewer MACs the cheapest cascade point at least as
/// accurate needs. `singles` holds (name, top1, macs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Merit {
    pub model: String,
    pub model_top1: f64,
    pub model_macs: f64,
    pub cascade_macs: f64,
    /// model MACs / cascade MACs: above 1, the cascade saves compute at equal accuracy.
    pub reduction: f64,
}

pub fn merit(curves: &[Curve], singles: &[(String, f64, f64)]) -> Option<Merit> {
    let best = curves.iter().flat_map(|c| &c.points).map(|p| p.top1).fold(f64::NEG_INFINITY, f64::max);
    let (name, top1, macs) = singles
        .iter()
        .filter(|(_, a, _)| *a <= best + 1e-12)
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))?;
    let (c, p) = choose(curves, Target::Accuracy(*top1)).ok()?;
    let cascade_macs = curves[c].points[p].cost.macs;
    Some(Merit {
        model: name.clone(),
        model_top1: *top1,
        model_macs: *macs,
        cascade_macs,
        reduction: macs / cascade_macs.max(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cost::{Figure, LocalStage};

    fn local_model(macs: &[u64]) -> CostModel {
        CostModel {
            local: macs
                .iter()
                .map(|&m| LocalStage { macs: m, ms: Figure::estimate(1.0, "t"), mj: Figure::estimate(1.0, "t") })
                .collect(),
            remote: None,
        }
    }

    fn rec(label: usize, a: [f32; 2], b: [f32; 2]) -> Record {
        let l = |p: [f32; 2]| p.iter().map(|x| x.ln()).collect();
        Record { input: "x".into(), label, logits: vec![l(a), l(b)], macs: vec![] }
    }

    #[test]
    fn temperature_fit_matches_the_closed_form() {
        // Binary logits (2, 0) on every input, right on 80% of them: the NLL is minimal where
        // sigmoid(2 / t) = 0.8, i.e. t = 2 / ln 4 = 1.442695.
        let logits: Vec<Vec<f32>> = (0..10).map(|_| vec![2.0, 0.0]).collect();
        let labels: Vec<usize> = (0..10).map(|i| if i < 8 { 0 } else { 1 }).collect();
        let refs: Vec<&[f32]> = logits.iter().map(|v| v.as_slice()).collect();
        let t = fit_temperature(&refs, &labels);
        assert!((t - 2.0 / 4f64.ln()).abs() < 1e-4, "{t}");
        assert!(nll(&refs, &labels, t) < nll(&refs, &labels, 1.0));
    }

    #[test]
    fn sweep_counts_exits_accuracy_and_cost() {
        let records = vec![
            rec(0, [0.9, 0.1], [0.2, 0.8]),   // sure and right; the big model is wrong
            rec(1, [0.6, 0.4], [0.1, 0.9]),   // unsure at 0.7, wrong; big right
            rec(1, [0.55, 0.45], [0.3, 0.7]), // unsure, wrong; big right
            rec(0, [0.95, 0.05], [0.9, 0.1]), // sure, right
        ];
        let model = local_model(&[100, 1000]);
        let c = sweep(&records, Metric::MaxSoftmax, false, &[1.0, 1.0], &model, &[0.0, 0.7, 1.001]);
        let at = |t: f32| c.points.iter().find(|p| p.threshold == t).unwrap();
        assert_eq!((at(0.0).top1, at(0.0).forwarded), (0.5, 0.0));
        assert_eq!((at(0.7).top1, at(0.7).forwarded), (1.0, 0.5));
        assert!((at(0.7).cost.macs - 600.0).abs() < 1e-9);
        // Against the big model alone (right on 3 of 4): the early exit at 0.7 gains one input
        // and loses none; exiting everything gains the same one and loses two.
        assert_eq!((at(0.7).correct, at(0.7).gains, at(0.7).losses), (4, 1, 0));
        assert_eq!((at(0.0).correct, at(0.0).gains, at(0.0).losses), (2, 1, 2));
        assert_eq!((at(1.001).gains, at(1.001).losses), (0, 0));
        assert_eq!((at(1.001).top1, at(1.001).forwarded), (0.75, 1.0));
        // Every threshold gives the same result as the live decision path.
        let policies = |t| {
            vec![
                StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(t), temperature: 1.0 },
                StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 },
            ]
        };
        for p in &c.points {
            let names = vec!["a".to_string(), "b".to_string()];
            let e = crate::tune::eval::score(&records, 0, &names, &[100, 1000], &policies(p.threshold), false);
            assert_eq!((e.cascade.top1, e.cascade.forwarded), (p.top1, p.forwarded));
        }
        let auto = sweep(&records, Metric::Entropy, true, &[1.0, 1.0], &model, &[]);
        assert!(auto.points.iter().any(|p| p.forwarded == 0.0) && auto.points.iter().any(|p| p.forwarded == 1.0));
    }

    fn pt(top1: f64, macs: f64, forwarded: f64) -> Point {
        Point {
            threshold: 0.0,
            top1,
            forwarded,
            reach: vec![],
            cost: Cost { macs, ..Default::default() },
            correct: 0,
            gains: 0,
            losses: 0,
        }
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let p =
            [pt(0.8, 100.0, 0.0), pt(0.85, 300.0, 0.2), pt(0.82, 400.0, 0.3), pt(0.9, 500.0, 0.4), pt(0.79, 50.0, 0.0)];
        let refs: Vec<&Point> = p.iter().collect();
        assert_eq!(pareto(&refs), vec![4, 0, 1, 3]);
    }

    #[test]
    fn targets_pick_the_right_point_or_the_closest() {
        let curve = Curve {
            metric: Metric::MaxSoftmax,
            ensemble: false,
            temperatures: vec![1.0, 1.0],
            points: vec![pt(0.8, 100.0, 0.0), pt(0.85, 300.0, 0.2), pt(0.9, 500.0, 0.4)],
        };
        let curves = vec![curve];
        assert_eq!(choose(&curves, Target::Accuracy(0.84)), Ok((0, 1)));
        assert_eq!(choose(&curves, Target::Accuracy(0.95)), Err((0, 2)));
        assert_eq!(choose(&curves, Target::Macs(400.0)), Ok((0, 1)));
        assert_eq!(choose(&curves, Target::Macs(10.0)), Err((0, 0)));
        assert_eq!(choose(&curves, Target::MaxForward(0.3)), Ok((0, 1)));
        let singles = vec![("small".to_string(), 0.8, 100.0), ("big".to_string(), 0.85, 900.0)];
        let m = merit(&curves, &singles).unwrap();
        assert_eq!(m.model, "big");
        assert!((m.reduction - 3.0).abs() < 1e-9);
    }

    #[test]
    fn forward_interval_contains_the_rate_and_shrinks_with_data() {
        let (lo, hi) = forward_interval(170, 1000, 1000);
        assert!(lo < 0.17 && hi > 0.17);
        let (lo2, hi2) = forward_interval(1700, 10000, 10000);
        assert!(hi2 - lo2 < hi - lo);
        let (lo0, hi0) = forward_interval(0, 100, 100);
        assert!(lo0 == 0.0 && hi0 > 0.0);
    }
}
