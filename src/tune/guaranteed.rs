//! What `calibrate` is sure of: the data it calibrates on (a labeled folder; with
//! `--agreement` an unlabeled folder or a results log, the last stage's answers the
//! reference), the guaranteed mode (`--max-drop E --delta D`: the fixed-grid curves and
//! `core::certify`'s choice, Bonferroni over the curves) and the 95% intervals of the chosen
//! point. The decisions are pure in `core::certify` and `core::guarantee`; this is their I/O.

use super::{eval, Result, TuneError};
use crate::core::calibrate::{self, Curve, Point};
use crate::core::certify;
use crate::core::cost::CostModel;
use crate::core::guarantee::{binomial_cdf, clopper_pearson};
use crate::core::policy::{argmax, Metric};
use crate::tune::dataset::{self, Labeled};
use crate::tune::eval::{Record, VsLast};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `--max-drop E --delta D`.
#[derive(Clone, Copy, Debug)]
pub struct GuaranteeOptions {
    pub max_drop: f64,
    pub delta: f64,
}

/// What the cascade's answers are scored against.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    /// labels.csv.
    Labels,
    /// The last stage's answer on each image of an unlabeled folder, computed here.
    LastStage,
    /// The host's answers recorded in a results log (checked against the last stage's here).
    Log(PathBuf),
}

impl Reference {
    pub fn agreement(&self) -> bool {
        *self != Reference::Labels
    }
}

/// The images to calibrate on and what they are scored against. `agreement` without a log:
/// every image of the folder (labels.csv, if any, unread). A log (`from_log`, or a file given
/// as `data` with `agreement`): the inputs it names, labeled with the host's answers it
/// recorded. Else labels.csv, which must list every image of the folder.
pub fn inputs(
    data: &Path,
    agreement: bool,
    from_log: Option<&Path>,
    model: &crate::model::Model,
    last: usize,
) -> Result<(Vec<Labeled>, Reference)> {
    let classes = model.classes.len();
    let text = dataset::is_text_data(data);
    let log = from_log.or((agreement && data.is_file() && !text).then_some(data));
    if let Some(log) = log {
        return Ok((host_answers(log, classes, last)?, Reference::Log(log.to_owned())));
    }
    if agreement {
        // A TSV's label column is there but not read: the host model's answers are the labels.
        let items = if text { dataset::read_data(data, model)? } else { dataset::unlabeled(data)? };
        return Ok((items, Reference::LastStage));
    }
    let items = dataset::read_data(data, model)?;
    if !text {
        dataset::check_every_image_listed(data, &items)?;
    }
    Ok((items, Reference::Labels))
}

/// The inputs of a results log of `run` or `demo` with the host's answer to each. A line of an
/// input the host answered (stage `last`, not degraded) carries it as `class`; an input the
/// device answered has it only when it was audited (`run --audit-rate`): in the audit line of
/// the same `seq` (`audit.class`), or as `host_class`.
/// Every answered input needs one: the inputs the device answered are the ones whose
/// agreement the threshold decides, and the offloaded ones alone are a biased subsample of the
/// hard ones. A log without them is an error naming how many lack it. The device's logits are
/// not in a log: the inputs are run again here, so the files it names must still exist.
fn host_answers(log: &Path, classes: usize, last: usize) -> Result<Vec<Labeled>> {
    let text = std::fs::read_to_string(log).map_err(super::io("cannot read the results log", log))?;
    let (mut items, mut missing, mut first_missing) = (Vec::new(), 0usize, None);
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || crate::run::results_log::is_torn(line) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TuneError::Invalid(format!("{} line {}: not JSON: {e}", log.display(), i + 1)))?;
        lines.push((i, v));
    }
    // The host's answers to audits (`run --audit-rate`): lines of their own, by the answer's seq.
    let audited: std::collections::HashMap<u64, u64> = lines
        .iter()
        .filter_map(|(_, v)| Some((v.get("seq")?.as_u64()?, v.get("audit")?.get("class")?.as_u64()?)))
        .collect();
    for (i, v) in lines {
        let not_an_answer = ["summary", "error", "audit", "threshold_change"];
        if not_an_answer.iter().any(|k| v.get(k).is_some()) {
            continue;
        }
        let Some(input) = v.get("input").and_then(|x| x.as_str()) else {
            return Err(TuneError::Invalid(format!(
                "{} line {}: no \"input\": not a results log",
                log.display(),
                i + 1
            )));
        };
        let num = |k: &str| v.get(k).and_then(|x| x.as_u64());
        let host = if num("stage") == Some(last as u64) && v.get("degraded").and_then(|x| x.as_bool()) == Some(false) {
            num("class")
        } else {
            num("seq").and_then(|seq| audited.get(&seq).copied()).or_else(|| num("host_class"))
        };
        match host {
            Some(c) if (c as usize) < classes => {
                items.push(Labeled { path: PathBuf::from(input), label: c as usize, text: None })
            }
            Some(c) => {
                return Err(TuneError::Invalid(format!(
                    "{} line {}: class {c} is out of range (the model has {classes} classes)",
                    log.display(),
                    i + 1
                )))
            }
            None => {
                missing += 1;
                first_missing.get_or_insert_with(|| input.to_owned());
            }
        }
    }
    if missing > 0 {
        return Err(TuneError::Invalid(format!(
            "{}: --agreement needs the host's answer for every input, and this log has no host answer for {missing} of its {} answered inputs (e.g. {}): a results log records the host's answer only for the inputs it offloaded (or audited: `run --audit-rate`). Calibrate on the images themselves (--agreement --data DIR), or on a log of a run that sent every input to the host",
            log.display(),
            missing + items.len(),
            first_missing.unwrap_or_default()
        )));
    }
    if items.is_empty() {
        return Err(TuneError::Invalid(format!("{}: the results log has no answered inputs", log.display())));
    }
    if let Some(gone) = items.iter().find(|i| !i.path.is_file()) {
        return Err(TuneError::Invalid(format!(
            "{}: the input {} is not there: a log has no logits, so calibrating on it runs the device's model on its inputs again",
            log.display(),
            gone.path.display()
        )));
    }
    Ok(items)
}

/// Sets each record's label to its reference answer: the last stage's own (`LastStage`); for
/// a log, checks that the last stage here gives the host's recorded answers, so that the
/// loss counted (an early exit answering otherwise) is exactly a disagreement with the host.
pub fn set_reference(records: &mut [Record], reference: &Reference, last: usize) -> Result<()> {
    match reference {
        Reference::Labels => Ok(()),
        Reference::LastStage => {
            records.iter_mut().for_each(|r| r.label = argmax(&r.logits[last]));
            Ok(())
        }
        Reference::Log(log) => {
            let differ: Vec<&Record> = records.iter().filter(|r| argmax(&r.logits[last]) != r.label).collect();
            match differ.first() {
                None => Ok(()),
                Some(r) => Err(TuneError::Invalid(format!(
                    "{}: the host's answers it recorded differ from the last stage's here on {} of {} inputs (e.g. {}): the log was made with another host model or payload (--encoding, --jpeg-quality)",
                    log.display(),
                    differ.len(),
                    records.len(),
                    r.input
                ))),
            }
        }
    }
}

/// The curves the guaranteed mode tests: every metric, with and without ensembling, at
/// temperature 1 (temperatures fitted on the calibration images would make the hypotheses
/// depend on the draw), on each metric's fixed grid.
pub fn curves(records: &[Record], stages: usize, model: &CostModel) -> Vec<Curve> {
    let ones = vec![1.0; stages];
    let mut out = Vec::new();
    for metric in Metric::ALL {
        for ensemble in [false, true] {
            out.push(calibrate::sweep(records, metric, ensemble, &ones, model, &certify::fixed_grid(metric)));
        }
    }
    out
}

/// The guarantee asked for and what was certified (`guarantee` in calibrate's JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Guarantee {
    /// `labels` (accuracy drop) or `agreement` (disagreement with the last stage).
    pub mode: &'static str,
    pub max_drop: f64,
    pub delta: f64,
    /// What holds, in one sentence.
    pub statement: String,
    /// Ways of deciding tested (metric x ensembling, temperature 1).
    pub curves: usize,
    /// How the curves share delta: `bonferroni`.
    pub correction: &'static str,
    /// Each curve's level: delta / curves.
    pub delta_per_curve: f64,
    /// Thresholds on each curve's fixed grid.
    pub grid: usize,
    /// Whether any threshold cheaper than forwarding every input was certified.
    pub certified: bool,
    /// The chosen threshold's p-value (when certified).
    pub p_value: Option<f64>,
    /// Thresholds certified on each curve.
    pub certified_per_curve: Vec<usize>,
    /// When nothing was certified: the observed loss rate at the first threshold that exits
    /// any input ...
    pub observed_loss_rate: Option<f64>,
    /// ... and about how many calibration inputs would certify it at that rate (null: none
    /// would, the rate is at or above E).
    pub inputs_needed: Option<u64>,
}

/// Runs `core::certify` on the guaranteed curves; the chosen (curve, point), or the closest
/// (the most forwarding point of the first curve) when nothing was certified.
pub fn certify(curves: &[Curve], n: usize, g: GuaranteeOptions, reference: &Reference) -> (Guarantee, (usize, usize)) {
    let s = certify::select(curves, n as u64, g.max_drop, g.delta);
    let agreement = reference.agreement();
    let statement = if agreement {
        format!(
            "with probability at least {:.3} over the calibration draw, the cascade agrees with the last stage (the host model) on at least {:.2}% of inputs like these",
            1.0 - g.delta,
            (1.0 - g.max_drop) * 100.0
        )
    } else {
        format!(
            "with probability at least {:.3} over the calibration draw, the cascade's top-1 on inputs like these is at most {:.2} points below the last stage's alone",
            1.0 - g.delta,
            g.max_drop * 100.0
        )
    };
    let guarantee = Guarantee {
        mode: if agreement { "agreement" } else { "labels" },
        max_drop: g.max_drop,
        delta: g.delta,
        statement,
        curves: curves.len(),
        correction: "bonferroni",
        delta_per_curve: s.delta_per_curve,
        grid: curves.first().map_or(0, |c| c.points.len()),
        certified: s.chosen.is_some(),
        p_value: s.chosen.map(|c| c.p_value),
        certified_per_curve: s.certified_per_curve.clone(),
        observed_loss_rate: s.needed.map(|(rate, _)| rate),
        inputs_needed: s.needed.and_then(|(_, count)| count),
    };
    (guarantee, s.chosen.map_or((0, 0), |c| (c.curve, c.point)))
}

/// How sure an accuracy target's choice is (`chosen.target_check`).
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: f64,
    /// One-sided 95% lower confidence bound of the chosen point's top-1 (Clopper-Pearson).
    pub top1_lower: f64,
    /// The exact binomial p-value of "the true top-1 is below the target" given the
    /// calibration count (small: the data speak for the target).
    pub p_value: f64,
    /// Whether `top1_lower` reaches the target. The point was picked on the same images, so
    /// even this is optimistic; `--max-drop` gives a guarantee.
    pub holds_at_95: bool,
}

pub fn target_check(target: f64, point: &Point, n: usize) -> TargetCheck {
    let k = point.correct as u64;
    let lower = clopper_pearson(k, n as u64, 0.90).lo;
    // P(X >= k | n, target) = 1 - P(X <= k - 1).
    let p_value = if k == 0 { 1.0 } else { 1.0 - binomial_cdf(k - 1, n as u64, target) };
    TargetCheck { target, top1_lower: lower, p_value, holds_at_95: lower >= target }
}

/// The chosen point's 95% intervals: top-1, the fraction forwarded, and the paired difference
/// with the last stage alone.
pub fn intervals(point: &Point, n: usize) -> ([f64; 2], [f64; 2], VsLast) {
    let forwarded = (point.forwarded * n as f64).round() as usize;
    (eval::rate_ci(point.correct, n), eval::rate_ci(forwarded, n), VsLast::new(point.gains, point.losses, n))
}

/// The guarantee as text, for `summary_text`.
pub fn text(g: &Guarantee) -> String {
    let mut t = format!(
        "guarantee ({}, E = {}, delta = {}): a fixed grid of {} thresholds per curve tested from the most forwarding down, on {} curves at delta/{} = {:.4} each (Bonferroni)\n",
        g.mode, g.max_drop, g.delta, g.grid, g.curves, g.curves, g.delta_per_curve
    );
    if g.certified {
        t += &format!("  CERTIFIED (p-value {:.2e}): {}\n", g.p_value.unwrap_or(f64::NAN), g.statement);
    } else {
        t += &format!(
            "  NOTHING CERTIFIED cheaper than forwarding every input to the last stage: these images are too few (or the early exits disagree too often) for E = {} at delta = {}\n",
            g.max_drop, g.delta
        );
        match (g.observed_loss_rate, g.inputs_needed) {
            (Some(r), Some(k)) => {
                t += &format!(
                "  at the observed loss rate {:.2}%, about {k} calibration images would certify the first early exit\n",
                r * 100.0
            )
            }
            (Some(r), None) => {
                t += &format!(
                    "  the observed loss rate {:.2}% is at or above E: no number of images would certify it\n",
                    r * 100.0
                )
            }
            _ => {}
        }
    }
    t
}
