//! `report`: what a results log of `run` or `demo` shows (inputs, answers, forwarded and
//! degraded counts, mean spans) against the calibration its config carries (the predicted
//! forward rate and its interval: drift when the realised rate falls outside), and, when the
//! run audited its device's answers (`--audit-rate`), the live disagreement rate with the host
//! with its 95% interval against the calibrated E (`core::guarantee::AuditTally`).

use super::{io, Result, TuneError};
use crate::config::CalibrationInfo;
use crate::core::calibrate;
use crate::core::guarantee::{AuditMethod, AuditTally, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The confidence of the live disagreement's interval.
pub const AUDIT_CONFIDENCE: f64 = 0.95;

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
    /// Link bytes of the answers and the audits together (the audits' alone in `audit`).
    pub link_bytes_sent: u64,
    pub link_bytes_received: u64,
    /// When the run audited its device's answers: the live disagreement with the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditReport>,
}

/// The live disagreement of the device's answers with the host, from the audits in a log.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// Inputs the device answered itself that could be audited (their lines carry
    /// `audit_rate`).
    pub answered: u64,
    /// Of them, audited (the host answered the audit), and how many disagreed.
    pub audited: u64,
    pub disagreed: u64,
    /// Audits the host did not answer (left out: counted as not audited).
    pub failed: u64,
    /// The estimated disagreement rate of the device's answers, with its 95% interval.
    pub rate: f64,
    pub interval: (f64, f64),
    /// `binomial` (one audit rate: Wilson's interval) or `horvitz-thompson` (rates that vary:
    /// weighted by 1/R).
    pub method: &'static str,
    /// The same figure over every answered input (forwarded ones take the host's answer and
    /// never disagree): the scale of a calibration's guarantee.
    pub all_inputs_rate: f64,
    pub all_inputs_interval: (f64, f64),
    /// E: `--max-disagreement`, else the config's [calibration] guarantee, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disagreement: Option<f64>,
    /// The device's answers against E (the stricter scale, the one `--adapt` holds):
    /// `within` (the whole interval at or below E), `unclear` (it straddles E) or `exceeds`
    /// (all of it above E: a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    /// The same over all answered inputs (the calibration guarantee's own scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_inputs_verdict: Option<&'static str>,
    /// The audits' link bytes, mean milliseconds per audit of each span, and their energy in
    /// all (when measured).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub mean_span_ms: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mj: Option<f64>,
    /// With `--adapt`: how many times the threshold moved, and the last value it moved to.
    pub threshold_changes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// What the audit lines of a log hold, gathered while it is read.
#[derive(Default)]
struct AuditLines {
    /// (seq, audit rate) of each answer line that could be audited.
    eligible: Vec<(u64, f64)>,
    /// By seq: whether the host disagreed; None when the audit failed.
    outcomes: HashMap<u64, Option<bool>>,
    bytes: (u64, u64),
    span_ms: BTreeMap<String, f64>,
    mj: Option<f64>,
    sent: usize,
    changes: usize,
    threshold: Option<f64>,
}

impl AuditLines {
    /// Takes the line if it is an audit's or a threshold change's (true), else leaves it.
    fn take(&mut self, v: &serde_json::Value) -> bool {
        if let Some(c) = v.get("threshold_change") {
            self.changes += 1;
            self.threshold = c["to"].as_f64().or(self.threshold);
            return true;
        }
        let Some(a) = v.get("audit") else { return false };
        let seq = v["seq"].as_u64().unwrap_or(u64::MAX);
        self.sent += 1;
        let outcome = if a.get("error").is_some() { None } else { a["disagreed"].as_bool() };
        self.outcomes.insert(seq, outcome);
        self.bytes.0 += a["link"]["bytes_sent"].as_u64().unwrap_or(0);
        self.bytes.1 += a["link"]["bytes_received"].as_u64().unwrap_or(0);
        for s in a["stages"].as_array().into_iter().flatten() {
            *self.span_ms.entry(s["name"].as_str().unwrap_or("?").to_owned()).or_default() +=
                s["ms"].as_f64().unwrap_or(0.0);
            if let Some(mj) = s["mj"].as_f64() {
                *self.mj.get_or_insert(0.0) += mj;
            }
        }
        true
    }

    /// The estimate, when the log has audited answers.
    fn report(mut self, answered: usize, max_disagreement: Option<f64>) -> Option<AuditReport> {
        let mut tally = AuditTally::default();
        let mut failed = 0;
        for &(seq, rate) in &self.eligible {
            let outcome = self.outcomes.get(&seq).copied();
            failed += matches!(outcome, Some(None)) as u64;
            tally.record(rate, outcome.flatten());
        }
        let e = tally.estimate(AUDIT_CONFIDENCE)?;
        let all = e.over_all_inputs(answered as u64);
        let n = self.sent.max(1) as f64;
        self.span_ms.values_mut().for_each(|v| *v /= n);
        Some(AuditReport {
            answered: e.answered,
            audited: e.audited,
            disagreed: e.disagreed,
            failed,
            rate: e.rate,
            interval: (e.interval.lo, e.interval.hi),
            method: match e.method {
                AuditMethod::Binomial => "binomial",
                AuditMethod::HorvitzThompson => "horvitz-thompson",
            },
            all_inputs_rate: all.rate,
            all_inputs_interval: (all.interval.lo, all.interval.hi),
            max_disagreement,
            verdict: max_disagreement.map(|m| verdict_name(e.verdict(m))),
            all_inputs_verdict: max_disagreement.map(|m| verdict_name(all.verdict(m))),
            bytes_sent: self.bytes.0,
            bytes_received: self.bytes.1,
            mean_span_ms: self.span_ms,
            mj: self.mj,
            threshold_changes: self.changes,
            threshold: self.threshold,
        })
    }
}

/// Reads a results log of `run` or `demo`. Torn lines (cut short by a power cut) are skipped
/// with a warning; other lines that do not parse are an error naming the line.
pub fn report(log: &Path, calibration: Option<&CalibrationInfo>) -> Result<Report> {
    report_against(log, calibration, None)
}

/// [`report`], the live disagreement (from the log's audits) judged against
/// `max_disagreement` (E, over all inputs, as a calibration's guarantee reads).
pub fn report_against(
    log: &Path,
    calibration: Option<&CalibrationInfo>,
    max_disagreement: Option<f64>,
) -> Result<Report> {
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
        link_bytes_sent: 0,
        link_bytes_received: 0,
        audit: None,
    };
    let mut audits = AuditLines::default();
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
        // An audit's line or a threshold change: not an input of its own.
        if audits.take(&v) {
            continue;
        }
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
        if let (Some(seq), Some(rate)) = (v["seq"].as_u64(), v["audit_rate"].as_f64()) {
            audits.eligible.push((seq, rate));
        }
        r.link_bytes_sent += v["link"]["bytes_sent"].as_u64().unwrap_or(0);
        r.link_bytes_received += v["link"]["bytes_received"].as_u64().unwrap_or(0);
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
    r.link_bytes_sent += audits.bytes.0;
    r.link_bytes_received += audits.bytes.1;
    r.audit = audits.report(r.answered, max_disagreement);
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
    if let Some(a) = &r.audit {
        t += &audit_text(a);
    }
    let spans: Vec<String> = r.mean_span_ms.iter().map(|(k, v)| format!("{k} {v:.1} ms")).collect();
    t += &format!("mean per input: {}", spans.join(", "));
    if !r.mean_span_mj.is_empty() {
        let mj: Vec<String> = r.mean_span_mj.iter().map(|(k, v)| format!("{k} {v:.2} mJ")).collect();
        t += &format!("\nenergy per input: {}", mj.join(", "));
    }
    t
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Within => "within",
        Verdict::Unclear => "unclear",
        Verdict::Exceeds => "exceeds",
    }
}

/// The audit's lines of the report's text.
fn audit_text(a: &AuditReport) -> String {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let mut t = format!(
        "live disagreement with the host: {} of {} audited device answers ({} could be audited, {} audits failed): \
         {} of the device's answers (95% interval {}..{}, {}); {} of all answered inputs ({}..{})\n",
        a.disagreed,
        a.audited,
        a.answered,
        a.failed,
        pct(a.rate),
        pct(a.interval.0),
        pct(a.interval.1),
        a.method,
        pct(a.all_inputs_rate),
        pct(a.all_inputs_interval.0),
        pct(a.all_inputs_interval.1)
    );
    let judge = |scale: &str, verdict: Option<&str>, e: f64| match verdict {
        Some("exceeds") => format!(
            "WARNING: the live disagreement of {scale} exceeds E = {}: the whole interval is above it; \
             the inputs have drifted (recalibrate, or run with --adapt)\n",
            pct(e)
        ),
        Some("within") => format!("{scale}: within E = {}\n", pct(e)),
        _ => format!("{scale}: the interval straddles E = {}: more audits would tell\n", pct(e)),
    };
    match a.max_disagreement {
        Some(e) => {
            t += &judge("the device's answers", a.verdict, e);
            t += &judge("all answered inputs", a.all_inputs_verdict, e);
        }
        None => t += "no E to compare with (--max-disagreement E, or a [calibration] guarantee)\n",
    }
    let spans: Vec<String> = a.mean_span_ms.iter().map(|(k, v)| format!("{k} {v:.1} ms")).collect();
    t += &format!(
        "audits: {} bytes sent, {} received (in the link totals); per audit: {}{}\n",
        a.bytes_sent,
        a.bytes_received,
        spans.join(", "),
        a.mj.map_or(String::new(), |mj| format!("; {mj:.1} mJ in all"))
    );
    if a.threshold_changes > 0 {
        t += &format!(
            "adaptive threshold: {} change(s), the last to {:.3}\n",
            a.threshold_changes,
            a.threshold.unwrap_or(f64::NAN)
        );
    }
    t
}
