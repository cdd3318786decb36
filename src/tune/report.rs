//! `report`: what a results log of `run` or `demo` shows (inputs, answers, forwarded and
//! degraded counts, mean spans) against the calibration its config carries (the predicted
//! forward rate and its interval: drift when the realised rate falls outside).

use super::{io, Result, TuneError};
use crate::config::CalibrationInfo;
use crate::core::calibrate;
use serde::Serialize;
use std::path::Path;

/// What a results log shows against the calibration.
#[derive(Serialize)]
pub struct Report {
    pub log: String,
    pub inputs: usize,
    pub answered: usize,
    pub failed: usize,
    /// Answered inputs: the denominator of the fractions.
    pub n: usize,
    /// The fraction of the answered inputs that went past the first stage.
    pub forwarded: f64,
    pub forwarded_count: usize,
    pub degraded: usize,
    /// The same fraction as `forwarded`, under its first name.
    pub forwarded_rate: f64,
    /// From the config's [calibration], when it has one.
    pub predicted_rate: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// True when the realised rate falls outside the interval: the inputs have drifted.
    pub drift: bool,
    pub macs_per_input: Option<f64>,
    pub compute_saved_vs_large: Option<f64>,
    pub mean_span_ms: std::collections::BTreeMap<String, f64>,
    pub mean_span_mj: std::collections::BTreeMap<String, f64>,
    pub top1: Option<f64>,
    /// Lines cut short by a power cut, skipped (with a warning).
    pub torn: usize,
    /// The runs the log holds (their ids, in order of first appearance).
    pub runs: Vec<String>,
}

/// Reads a results log of `run` or `demo`. Torn lines (cut short by a power cut) are skipped
/// with a warning; other lines that do not parse are an error naming the line.
pub fn report(log: &Path, calibration: Option<&CalibrationInfo>) -> Result<Report> {
    let text = std::fs::read_to_string(log).map_err(io("cannot read the results log", log))?;
    let mut r = Report {
        log: log.display().to_string(),
        inputs: 0,
        answered: 0,
        failed: 0,
        n: 0,
        forwarded: 0.0,
        forwarded_count: 0,
        degraded: 0,
        forwarded_rate: 0.0,
        predicted_rate: None,
        interval: None,
        drift: false,
        macs_per_input: None,
        compute_saved_vs_large: None,
        mean_span_ms: Default::default(),
        mean_span_mj: Default::default(),
        top1: None,
        torn: 0,
        runs: vec![],
    };
    let (mut stage_counts, mut correct, mut scored) = (Vec::<usize>::new(), 0usize, 0usize);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        // A line cut short by a power cut (the run after it goes on on a new line).
        if crate::run::results_log::is_torn(line) {
            log::warn!("{} line {}: a torn line (a run cut off mid-write), skipped", log.display(), i + 1);
            r.torn += 1;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| TuneError::Invalid(format!("{} line {}: not a JSON object", log.display(), i + 1)))?;
        r.inputs += 1;
        if let Some(run) = v.get("run").and_then(|r| r.as_str()) {
            if !r.runs.iter().any(|x| x == run) {
                r.runs.push(run.to_owned());
            }
        }
        if v.get("error").is_some() {
            r.failed += 1;
            continue;
        }
        let stage = v["stage"]
            .as_u64()
            .ok_or_else(|| TuneError::Invalid(format!("{} line {}: no \"stage\"", log.display(), i + 1)))?;
        r.answered += 1;
        let forwarded = v["forwarded"].as_bool().unwrap_or(stage > 0);
        r.forwarded_count += forwarded as usize;
        r.degraded += v["degraded"].as_bool().unwrap_or(false) as usize;
        // Stages that ran: up to the one that answered, or one further when degraded.
        let ran = stage as usize + 1 + v["degraded"].as_bool().unwrap_or(false) as usize;
        if stage_counts.len() < ran {
            stage_counts.resize(ran, 0);
        }
        stage_counts.iter_mut().take(ran).for_each(|c| *c += 1);
        if let Some(c) = v["correct"].as_bool() {
            scored += 1;
            correct += c as usize;
        }
        for s in v["stages"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or("?").to_owned();
            *r.mean_span_ms.entry(name.clone()).or_default() += s["ms"].as_f64().unwrap_or(0.0);
            if let Some(mj) = s["mj"].as_f64() {
                *r.mean_span_mj.entry(name).or_default() += mj;
            }
        }
    }
    if r.answered == 0 {
        return Err(TuneError::Invalid(format!("{}: no answered input in the log", log.display())));
    }
    let n = r.answered as f64;
    r.mean_span_ms.values_mut().for_each(|v| *v /= n);
    r.mean_span_mj.values_mut().for_each(|v| *v /= n);
    r.forwarded_rate = r.forwarded_count as f64 / n;
    r.forwarded = r.forwarded_rate;
    r.n = r.answered;
    r.top1 = (scored > 0).then(|| correct as f64 / scored as f64);
    if let Some(c) = calibration {
        let p = c.forwarded as f64 / c.n.max(1) as f64;
        let (lo, hi) = calibrate::forward_interval(c.forwarded, c.n, r.answered);
        r.predicted_rate = Some(p);
        r.interval = Some((lo, hi));
        r.drift = r.forwarded_rate < lo || r.forwarded_rate > hi;
        // Compute actually spent: each stage's MACs times how often it ran (a degraded input
        // ran the device stages only; the failed offload is not compute).
        let macs: f64 = stage_counts
            .iter()
            .zip(&c.stage_macs)
            .enumerate()
            .map(
                |(i, (&k, &m))| {
                    if i + 1 == c.stage_macs.len() {
                        (k - r.degraded.min(k)) as f64 * m
                    } else {
                        k as f64 * m
                    }
                },
            )
            .sum::<f64>()
            / n;
        r.macs_per_input = Some(macs);
        r.compute_saved_vs_large = Some(1.0 - macs / c.large_model_macs);
    }
    Ok(r)
}

pub fn report_text(r: &Report) -> String {
    let mut t = format!(
        "{}: {} inputs, {} answered, {} failed, {} forwarded ({:.1}%), {} degraded\n",
        r.log,
        r.inputs,
        r.answered,
        r.failed,
        r.forwarded_count,
        r.forwarded_rate * 100.0,
        r.degraded
    );
    if r.runs.len() > 1 || r.torn > 0 {
        t += &format!("{} runs; {} torn line(s) skipped\n", r.runs.len(), r.torn);
    }
    match (r.predicted_rate, r.interval) {
        (Some(p), Some((lo, hi))) => {
            t += &format!(
                "calibration predicted {:.1}% forwarded (99% interval for {} inputs: {:.1}%..{:.1}%){}\n",
                p * 100.0,
                r.answered,
                lo * 100.0,
                hi * 100.0,
                if r.drift {
                    ": WARNING, the realised rate is outside it; the inputs have drifted"
                } else {
                    ": within it"
                }
            );
        }
        _ => t += "no [calibration] in the config: nothing to compare the forward rate with\n",
    }
    if let (Some(m), Some(s)) = (r.macs_per_input, r.compute_saved_vs_large) {
        t += &format!("compute: {:.0} M MACs per input, {:.1}% less than the large model alone\n", m / 1e6, s * 100.0);
    }
    if let Some(a) = r.top1 {
        t += &format!("top-1 on the labeled inputs: {:.1}%\n", a * 100.0);
    }
    let spans: Vec<String> = r.mean_span_ms.iter().map(|(k, v)| format!("{k} {v:.1} ms")).collect();
    t += &format!("mean per input: {}", spans.join(", "));
    if !r.mean_span_mj.is_empty() {
        let mj: Vec<String> = r.mean_span_mj.iter().map(|(k, v)| format!("{k} {v:.2} mJ")).collect();
        t += &format!("\nenergy per input: {}", mj.join(", "));
    }
    t
}
