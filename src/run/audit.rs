//! The live audit of a run (`run --audit-rate R`, issue 14): a seeded random fraction R of the
//! inputs the device answered itself is sent to the host as well, marked as audits, after the
//! input's answer line and results log line are written (so neither the answer nor its
//! latency figures wait for it; it runs on the same link before the next input is taken). The
//! host's answer goes into the results log as a line of its own, `{"seq": N, "input": ...,
//! "audit": {...}}`, linked to the answer by `seq`; `report` estimates from them the live
//! disagreement rate with the host (`core::guarantee::AuditTally`). With `--adapt` each audit
//! outcome moves the first stage's threshold (`core::guarantee::Adaptive`, adaptive conformal
//! inference), every change logged as `{"seq": N, "threshold_change": {...}}`.

use crate::config::AdaptInfo;
use crate::core::guarantee::{Adaptive, Direction};
use crate::core::policy::Metric;
use crate::link::Rng;
use crate::offload::LinkReport;
use crate::run::pipeline::{Answer, Pipeline};
use crate::run::results_log::ResultsLog;
use crate::run::spans::Spans;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// The default step of the adaptive threshold per audit.
pub const DEFAULT_GAMMA: f64 = 0.05;
/// The default grid the adaptive threshold in use is rounded to.
pub const DEFAULT_GRID: f64 = 0.01;
/// The default end of the threshold's range that forwards most (max-softmax and margin; for
/// entropy, 1 minus it): it still leaves the surest inputs on the device, so audits come back.
pub const DEFAULT_SAFE_END: f64 = 0.99;

/// The adaptive threshold's settings, resolved from `[adapt]`, the flags and the stage's policy.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptPlan {
    /// The stage whose threshold moves: the first.
    pub stage: usize,
    pub start: f64,
    pub lo: f64,
    pub hi: f64,
    pub gamma: f64,
    pub target: f64,
    pub grid: f64,
    pub direction: Direction,
}

impl AdaptPlan {
    /// The plan for a first stage at `start` with `metric`: `[adapt]` values, overridden by the
    /// flags' `target` and `gamma`. Without bounds, the calibrated threshold is the end that
    /// forwards least and [`DEFAULT_SAFE_END`] the other. An error names what is missing or
    /// out of range.
    pub fn resolve(
        start: f64,
        metric: Metric,
        table: Option<&AdaptInfo>,
        target: Option<f64>,
        gamma: Option<f64>,
    ) -> Result<AdaptPlan, String> {
        let t = table.cloned().unwrap_or_default();
        let target = target.or(t.target).ok_or(
            "--adapt needs a target disagreement rate: --adapt-target E, or target = E in the config's [adapt] table",
        )?;
        if !(target > 0.0 && target < 1.0) {
            return Err(format!("the adaptive threshold's target {target} is not in (0, 1)"));
        }
        let direction = if metric == Metric::Entropy { Direction::Down } else { Direction::Up };
        let (lo, hi) = match direction {
            Direction::Up => (t.lo.unwrap_or(start), t.hi.unwrap_or(DEFAULT_SAFE_END.max(start))),
            Direction::Down => (t.lo.unwrap_or((1.0 - DEFAULT_SAFE_END).min(start)), t.hi.unwrap_or(start)),
        };
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            return Err(format!("the adaptive threshold's bounds {lo}..{hi} are not a range within [0, 1]"));
        }
        let gamma = gamma.or(t.gamma).unwrap_or(DEFAULT_GAMMA);
        if !(gamma > 0.0 && gamma.is_finite()) {
            return Err(format!("the adaptive threshold's step (gamma) {gamma} must be more than 0"));
        }
        let grid = t.grid.unwrap_or(DEFAULT_GRID);
        Ok(AdaptPlan { stage: 0, start, lo, hi, gamma, target, grid, direction })
    }
}

/// What the audits of a run did, in its summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditSummary {
    /// The audit rate R.
    pub rate: f64,
    /// The seed of the draw.
    pub seed: u64,
    /// Inputs the device answered itself (not forwarded, not degraded): those that could be
    /// audited.
    pub eligible: usize,
    /// Audits sent.
    pub sent: usize,
    /// Audits the host answered.
    pub audited: usize,
    /// Audits the host could not answer (left out of the estimate).
    pub failed: usize,
    /// Audits whose host answer differs from the device's.
    pub disagreed: usize,
    /// disagreed / audited: the disagreement rate of the device's answers, as audited.
    pub disagreement: Option<f64>,
    /// Link bytes of the audits (also counted in the summary's link bytes).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Mean milliseconds per audit sent, of each span name (encode, send, wait).
    pub mean_span_ms: BTreeMap<String, f64>,
    /// Millijoules of all the audits together, when energy was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mj: Option<f64>,
    /// With --adapt: the threshold in use at the end, and how many times it moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_changes: Option<usize>,
}

/// The audit of a run: the draw, the audits, and the adaptive threshold.
pub struct Auditor {
    rate: f64,
    rng: Rng,
    adapt: Option<(AdaptPlan, Adaptive)>,
    summary: AuditSummary,
}

impl Auditor {
    /// Audits a fraction `rate` (in [0, 1]) of the device's answers, drawn from `seed`.
    pub fn new(rate: f64, seed: u64) -> Auditor {
        let rate = rate.clamp(0.0, 1.0);
        Auditor { rate, rng: Rng::new(seed), adapt: None, summary: AuditSummary { rate, seed, ..Default::default() } }
    }

    /// Moves the threshold from the audits as `plan` says.
    pub fn adapting(mut self, plan: AdaptPlan) -> Auditor {
        let a = Adaptive::new(plan.start, plan.lo, plan.hi, plan.gamma, plan.target, plan.direction);
        let a = if plan.grid > 0.0 { a.with_grid(plan.grid) } else { a };
        self.summary.threshold = Some(a.threshold());
        self.summary.threshold_changes = Some(0);
        self.adapt = Some((plan, a));
        self
    }

    /// The threshold the adaptive plan starts from (rounded to its grid), to put in use at
    /// the start of the run.
    pub fn initial_threshold(&self) -> Option<(usize, f64)> {
        self.adapt.as_ref().map(|(p, a)| (p.stage, a.threshold()))
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The audit rate an answer had, when it could be audited: the device answered it itself
    /// (a stage before the host's), not degraded.
    pub fn eligible(&self, a: &Answer, stages: usize) -> Option<f64> {
        (a.stage + 1 < stages && !a.degraded).then_some(self.rate)
    }

    /// After an eligible answer's lines are written: draws whether to audit it and, if so,
    /// sends it to the host, logs the host's answer and, when adapting, moves the threshold.
    #[allow(clippy::too_many_arguments)]
    pub fn after_answer(
        &mut self,
        pipeline: &mut Pipeline,
        seq: u64,
        input: &str,
        bytes: &[u8],
        decoded: &crate::model::Decoded,
        answer: &Answer,
        mut log: Option<&mut ResultsLog>,
    ) -> std::io::Result<()> {
        self.summary.eligible += 1;
        if !self.rng.chance(self.rate) {
            return Ok(());
        }
        self.summary.sent += 1;
        let (mut spans, mut report) = (Spans::default(), LinkReport::default());
        let host = pipeline.audit(bytes, decoded, &mut spans, &mut report);
        if let Some(energy) = &pipeline.energy {
            energy.fill(&mut spans.0);
        }
        self.count(&spans, &report);
        let rate = self.rate;
        let common = |mut o: serde_json::Value| {
            o["rate"] = json!(rate);
            o["ms"] = json!(spans.total_ms());
            o["stages"] = json!(spans);
            o["link"] = json!(report);
            o
        };
        let (line, outcome) = match host {
            Ok(class) => {
                let disagreed = class != answer.class;
                self.summary.audited += 1;
                self.summary.disagreed += disagreed as usize;
                let host_model = pipeline.names.last().cloned().unwrap_or_default();
                let audit = common(json!({
                    "class": class,
                    "class_name": pipeline.models[0].class_name(class),
                    "model": host_model,
                    "device_class": answer.class,
                    "device_stage": answer.stage,
                    "disagreed": disagreed,
                }));
                (json!({ "seq": seq, "input": input, "audit": audit }), Some(disagreed))
            }
            Err(why) => {
                self.summary.failed += 1;
                log::warn!("audit of {input} (input {seq}): the host did not answer: {why}");
                (json!({ "seq": seq, "input": input, "audit": common(json!({ "error": why })) }), None)
            }
        };
        let audited = self.summary.audited.max(1) as f64;
        self.summary.disagreement = (self.summary.audited > 0).then(|| self.summary.disagreed as f64 / audited);
        if let Some(log) = log.as_deref_mut() {
            log.append(line)?;
        }
        if let (Some(disagreed), Some((plan, adaptive))) = (outcome, self.adapt.as_mut()) {
            if answer.stage != plan.stage {
                return Ok(());
            }
            if let Some(change) = adaptive.observe(disagreed) {
                pipeline.set_threshold(plan.stage, change.to as f32);
                let (observed, disagreed) = adaptive.observed();
                log::info!(
                    "threshold of stage {} moved {:.3} -> {:.3} after {observed} audits ({disagreed} disagreed; target {})",
                    plan.stage,
                    change.from,
                    change.to,
                    plan.target
                );
                self.summary.threshold = Some(change.to);
                *self.summary.threshold_changes.get_or_insert(0) += 1;
                if let Some(log) = log {
                    log.append(json!({
                        "seq": seq,
                        "input": input,
                        "threshold_change": {
                            "stage": plan.stage,
                            "from": change.from,
                            "to": change.to,
                            "observation": change.observation,
                            "disagreed": disagreed,
                            "target": plan.target,
                        }
                    }))?;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, spans: &Spans, report: &LinkReport) {
        let s = &mut self.summary;
        s.bytes_sent += report.bytes_sent;
        s.bytes_received += report.bytes_received;
        for span in &spans.0 {
            *s.mean_span_ms.entry(span.name.to_owned()).or_default() += span.ms;
            if let Some(e) = &span.energy {
                *s.mj.get_or_insert(0.0) += e.mj;
            }
        }
    }

    /// The summary: the span means are per audit sent.
    pub fn summary(&self) -> AuditSummary {
        let mut s = self.summary.clone();
        let n = s.sent.max(1) as f64;
        s.mean_span_ms.values_mut().for_each(|v| *v /= n);
        s
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
