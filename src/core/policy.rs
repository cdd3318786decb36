//! The confidence policy of a cascade: softmax with temperature, the three confidence
//! metrics, the exit decision of each stage and the ensembling of the stages that ran.
//! Pure code: plain values in, plain values out, no I/O, no clock. The cascade driver in
//! `cascade` and the calibration call these with live or cached logits alike.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How sure a model is about its answer, computed from its class probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The largest probability. Higher means surer.
    MaxSoftmax,
    /// The largest probability minus the second largest. Higher means surer.
    Margin,
    /// Shannon entropy divided by ln(number of classes), in 0..1. Lower means surer.
    Entropy,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::MaxSoftmax, Metric::Margin, Metric::Entropy];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::MaxSoftmax => "max-softmax",
            Metric::Margin => "margin",
            Metric::Entropy => "entropy",
        }
    }

    /// The metric's value for a probability vector.
    pub fn score(self, probs: &[f32]) -> f32 {
        match self {
            Metric::MaxSoftmax => top2(probs).0 .1,
            Metric::Margin => {
                let ((_, p1), p2) = top2(probs);
                p1 - p2.map_or(0.0, |(_, p)| p)
            }
            Metric::Entropy => normalised_entropy(probs),
        }
    }

    /// Whether a score clears a threshold: at or above it for max-softmax and margin, at or
    /// below it for entropy.
    pub fn clears(self, score: f32, threshold: f32) -> bool {
        match self {
            Metric::MaxSoftmax | Metric::Margin => score >= threshold,
            Metric::Entropy => score <= threshold,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown metric '{s}' (expected max-softmax, margin or entropy)"))
    }
}

/// Softmax of `logits / temperature`, computed stably. A temperature of 1 leaves the logits
/// as they are; above 1 softens, below 1 sharpens.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut out: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
    let sum: f32 = out.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        out.iter_mut().for_each(|p| *p /= sum);
    }
    out
}

/// Log-probabilities, as logits for `softmax`: `softmax(log_probs(p), 1)` gives `p` back.
/// Zeros are floored so that they stay finite.
pub fn log_probs(probs: impl IntoIterator<Item = f32>) -> Vec<f32> {
    probs.into_iter().map(|p| p.max(1e-30).ln()).collect()
}

/// Index of the largest value (the first one on ties). Empty input gives 0.
pub fn argmax(values: &[f32]) -> usize {
    top2(values).0 .0
}

/// The largest (index, value) and the second largest, if there is one.
fn top2(values: &[f32]) -> ((usize, f32), Option<(usize, f32)>) {
    let mut first = (0usize, f32::NEG_INFINITY);
    let mut second: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v > first.1 {
            if first.1 > f32::NEG_INFINITY {
                second = Some(first);
            }
            first = (i, v);
        } else if second.is_none_or(|(_, s)| v > s) {
            second = Some((i, v));
        }
    }
    if values.is_empty() {
        first.1 = 0.0;
    }
    (first, second)
}

/// The `k` largest (index, value) pairs, largest first.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, values[i])).collect()
}

/// Shannon entropy of a probability vector divided by ln(K): 0 for a one-hot vector, 1 for
/// the uniform one.
pub fn normalised_entropy(probs: &[f32]) -> f32 {
    if probs.len() < 2 {
        return 0.0;
    }
    let h: f64 = probs.iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum();
    (h / (probs.len() as f64).ln()) as f32
}

/// The element-wise mean of several probability vectors of one length.
pub fn mean_probs(all: &[&[f32]]) -> Vec<f32> {
    let n = all.len().max(1) as f32;
    let len = all.first().map_or(0, |p| p.len());
    let mut out = vec![0.0f32; len];
    for p in all {
        for (o, v) in out.iter_mut().zip(p.iter()) {
            *o += v;
        }
    }
    out.iter_mut().for_each(|o| *o /= n);
    out
}

/// How one stage decides whether its answer is final.
#[derive(Clone, Debug, PartialEq)]
pub struct StagePolicy {
    pub metric: Metric,
    /// None for the last stage, which always answers.
    pub threshold: Option<f32>,
    /// Logits are divided by this before the softmax (temperature scaling).
    pub temperature: f32,
}

/// What a stage's outcome is, given the probabilities of every stage that ran so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The probabilities the decision was taken on: this stage's, or the mean over the
    /// stages that ran when ensembling.
    pub probs: Vec<f32>,
    pub class: usize,
    pub score: f32,
    /// True when this stage's answer is final (confident, or the last stage).
    pub exit: bool,
}

/// Decides at one stage. `history` holds the probabilities of every stage that ran, this
/// one last. With `ensemble`, the decision is taken on their mean.
pub fn decide(policy: &StagePolicy, history: &[Vec<f32>], ensemble: bool) -> Verdict {
    let probs = match (ensemble, history) {
        (true, h) if h.len() > 1 => {
            let refs: Vec<&[f32]> = h.iter().map(|p| p.as_slice()).collect();
            mean_probs(&refs)
        }
        (_, h) => h.last().cloned().unwrap_or_default(),
    };
    let score = policy.metric.score(&probs);
    let exit = policy.threshold.is_none_or(|t| policy.metric.clears(score, t));
    Verdict { class: argmax(&probs), score, exit, probs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn softmax_matches_hand_computation() {
        // e^0, e^1, e^2 = 1, 2.718282, 7.389056; sum 11.107338
        let p = softmax(&[0.0, 1.0, 2.0], 1.0);
        assert!(close(p[0], 0.090031), "{p:?}");
        assert!(close(p[1], 0.244728));
        assert!(close(p[2], 0.665241));
        // Temperature 2 halves the logits: e^0, e^0.5, e^1 = 1, 1.648721, 2.718282
        let p = softmax(&[0.0, 1.0, 2.0], 2.0);
        assert!(close(p[0], 1.0 / 5.367003), "{p:?}");
        assert!(close(p[2], std::f32::consts::E / 5.367003));
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0], 1.0);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn metrics_match_hand_computation() {
        let p = [0.5f32, 0.3, 0.2];
        assert!(close(Metric::MaxSoftmax.score(&p), 0.5));
        assert!(close(Metric::Margin.score(&p), 0.2));
        // H = -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.2 ln 0.2) = 1.029653; / ln 3 (1.098612) = 0.937231
        assert!(close(Metric::Entropy.score(&p), 0.937231), "{}", Metric::Entropy.score(&p));
        assert!(close(Metric::Entropy.score(&[1.0, 0.0, 0.0]), 0.0));
        assert!(close(Metric::Entropy.score(&[0.25; 4]), 1.0));
        // Margin with the best class not first, and with ties.
        assert!(close(Metric::Margin.score(&[0.1, 0.2, 0.7]), 0.5));
        assert!(close(Metric::Margin.score(&[0.4, 0.4, 0.2]), 0.0));
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
    }

    #[test]
    fn thresholds_point_the_right_way() {
        assert!(Metric::MaxSoftmax.clears(0.6, 0.5));
        assert!(Metric::MaxSoftmax.clears(0.5, 0.5));
        assert!(!Metric::MaxSoftmax.clears(0.4, 0.5));
        assert!(Metric::Margin.clears(0.3, 0.2));
        assert!(Metric::Entropy.clears(0.1, 0.2));
        assert!(!Metric::Entropy.clears(0.3, 0.2));
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>().unwrap(), m);
        }
        assert!("softmax".parse::<Metric>().is_err());
    }

    #[test]
    fn exit_decision_and_last_stage() {
        let first = StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(0.5), temperature: 1.0 };
        let sure = decide(&first, &[vec![0.8, 0.1, 0.1]], false);
        assert!(sure.exit);
        assert_eq!(sure.class, 0);
        let unsure = decide(&first, &[vec![0.4, 0.35, 0.25]], false);
        assert!(!unsure.exit);
        let last = StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 };
        assert!(decide(&last, &[vec![0.4, 0.35, 0.25], vec![0.34, 0.33, 0.33]], false).exit);
    }

    #[test]
    fn ensembling_averages_every_stage_that_ran() {
        let last = StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 };
        let history = vec![vec![0.6, 0.4, 0.0], vec![0.0, 0.5, 0.5]];
        // Alone, the second stage says class 1 (first of the tie) with 0.5.
        let alone = decide(&last, &history, false);
        assert_eq!(alone.class, 1);
        // Averaged: [0.3, 0.45, 0.25] -> class 1 with 0.45.
        let mean = decide(&last, &history, true);
        assert_eq!(mean.class, 1);
        assert!(close(mean.score, 0.45));
        assert!(close(mean.probs[0], 0.3));
        // A middle stage exits on the ensemble's confidence, not its own.
        let mid = StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(0.55), temperature: 1.0 };
        let h = vec![vec![0.9, 0.1], vec![0.3, 0.7]];
        assert!(decide(&mid, &h, false).exit);
        let v = decide(&mid, &h, true);
        assert!(v.exit && v.class == 0 && close(v.score, 0.6));
    }

    #[test]
    fn top_k_orders_by_value() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5], 3), vec![(1, 0.5), (3, 0.5), (2, 0.2)]);
    }
}
