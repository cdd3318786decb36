//! One run over a stream of inputs, shared by `classify`, `run` and `demo`: each input goes
//! through the pipeline and gets exactly one line out (an answer or an error naming it), and,
//! with a results log, one JSON line appended and flushed at once, so a power cut loses at
//! most the input in flight. Then the summary: counts, link bytes, mean span times and, on
//! labeled inputs, accuracy.

use crate::run::audit::{AuditSummary, Auditor};
use crate::run::inputs::Source;
use crate::run::pipeline::{Answer, Pipeline};
use crate::run::results_log::ResultsLog;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// Where answers go.
pub struct Sink<'a> {
    pub out: &'a mut dyn Write,
    pub json: bool,
    /// The results log (JSON lines, each synced to the disk before the next input).
    pub log: Option<ResultsLog>,
    /// Labels by file name, to score answers (from a labels.csv).
    pub labels: Option<HashMap<String, usize>>,
    /// The live audit of the device's answers by the host (`--audit-rate`), if any.
    pub audit: Option<Auditor>,
}

/// One line of the results log.
#[derive(Serialize)]
struct LogLine<'a> {
    seq: u64,
    #[serde(flatten)]
    answer: &'a Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    correct: Option<bool>,
    /// With an audit: the probability this input had of being audited (only on the answers
    /// the device gave itself, the ones that can be).
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_rate: Option<f64>,
}

/// Totals over a run, printed after the answers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Inputs answered: the denominator of every fraction here (`answered`, kept as it was).
    pub n: usize,
    pub inputs: usize,
    pub answered: usize,
    pub failed: usize,
    /// The fraction of the answers each stage gave, in stage order (as in `eval`).
    pub answered_by: Vec<f64>,
    /// Answers per model that gave them.
    pub answered_by_count: BTreeMap<String, usize>,
    /// The fraction of the answered inputs that went past the first stage (as in `eval`).
    pub forwarded: f64,
    pub forwarded_count: usize,
    /// Answered by the host over the link.
    pub offloaded: usize,
    pub degraded: usize,
    pub link_bytes_sent: u64,
    pub link_bytes_received: u64,
    /// True when the link was paced to rehearse a slower one: link times are modelled.
    pub link_paced: bool,
    pub mean_macs: f64,
    pub mean_ms: f64,
    /// Mean milliseconds per input of each span name.
    pub mean_span_ms: BTreeMap<String, f64>,
    /// Mean millijoules per input of each span name, when energy was measured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mean_span_mj: BTreeMap<String, f64>,
    /// Mean millijoules per input over every span, when energy was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_mj: Option<f64>,
    /// Where the energy figures came from (sensor and rail, or `estimate: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_source: Option<String>,
    /// On labeled inputs: the fraction answered correctly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1: Option<f64>,
    /// With `--audit-rate`: what the audits did (their bytes are in `link_bytes_*` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSummary>,
}

/// Runs every input through the pipeline, writing one line each (and one log line, before the
/// source is told the input is done); then, with an audit, the input's audit (after its lines:
/// the answer never waits for it). Returns the summary.
pub fn drive(pipeline: &mut Pipeline, mut inputs: impl Source, sink: &mut Sink) -> std::io::Result<Summary> {
    let mut s =
        Summary { answered_by_count: pipeline.names.iter().map(|n| (n.clone(), 0)).collect(), ..Default::default() };
    let mut by_stage = vec![0usize; pipeline.names.len()];
    let (mut correct, mut scored) = (0usize, 0usize);
    let mut seq = 0u64;
    if let Some((stage, t)) = sink.audit.as_ref().and_then(Auditor::initial_threshold) {
        pipeline.set_threshold(stage, t as f32);
    }
    while let Some((name, bytes)) = inputs.next() {
        // Sequence numbers go on from the log's last line across runs.
        seq = sink.log.as_mut().map_or(seq + 1, |l| l.next_seq());
        s.inputs += 1;
        let result = bytes.and_then(|b| pipeline.answer_keeping_input(&name, &b).map(|(a, decoded)| (a, decoded, b)));
        match result {
            Ok((mut a, decoded, b)) => {
                let audit_rate = sink.audit.as_ref().and_then(|au| au.eligible(&a, pipeline.names.len()));
                if let Some(energy) = &pipeline.energy {
                    energy.fill(&mut a.stages.0);
                }
                let label = sink.labels.as_ref().and_then(|l| l.get(file_name(&name)));
                let ok = label.map(|&l| l == a.class);
                if let Some(ok) = ok {
                    scored += 1;
                    correct += ok as usize;
                }
                if sink.json {
                    writeln!(sink.out, "{}", serde_json::to_string(&a).map_err(std::io::Error::other)?)?;
                } else {
                    writeln!(sink.out, "{}", answer_line(&a, pipeline.remote.is_some(), ok))?;
                }
                if let Some(log) = sink.log.as_mut() {
                    let line = LogLine { seq, answer: &a, correct: ok, audit_rate };
                    log.append(serde_json::to_value(&line).map_err(std::io::Error::other)?)?;
                }
                count(&mut s, &a, pipeline.remote.is_some() && a.stage + 1 == pipeline.names.len());
                if let Some(k) = by_stage.get_mut(a.stage) {
                    *k += 1;
                }
                inputs.done(&name, true);
                if let (Some(auditor), Some(_)) = (sink.audit.as_mut(), audit_rate) {
                    sink.out.flush()?;
                    auditor.after_answer(pipeline, seq, &name, &b, &decoded, &a, sink.log.as_mut())?;
                }
            }
            Err(e) => {
                s.failed += 1;
                let line = serde_json::json!({ "seq": seq, "input": name, "error": e });
                if sink.json {
                    writeln!(sink.out, "{line}")?;
                } else {
                    writeln!(sink.out, "{name}: error: {e}")?;
                }
                if let Some(log) = sink.log.as_mut() {
                    log.append(line)?;
                }
                inputs.done(&name, false);
            }
        }
        sink.out.flush()?;
    }
    s.n = s.answered;
    let n = s.answered.max(1) as f64;
    s.forwarded = s.forwarded_count as f64 / n;
    s.answered_by = by_stage.iter().map(|&k| k as f64 / n).collect();
    s.mean_macs /= n;
    s.mean_ms /= n;
    s.mean_span_ms.values_mut().for_each(|v| *v /= n);
    s.mean_span_mj.values_mut().for_each(|v| *v /= n);
    s.mean_mj = (!s.mean_span_mj.is_empty()).then(|| s.mean_span_mj.values().sum());
    s.top1 = (scored > 0).then(|| correct as f64 / scored as f64);
    if let Some(auditor) = &sink.audit {
        let a = auditor.summary();
        s.link_bytes_sent += a.bytes_sent;
        s.link_bytes_received += a.bytes_received;
        s.audit = Some(a);
    }
    Ok(s)
}

fn file_name(input: &str) -> &str {
    std::path::Path::new(input).file_name().and_then(|f| f.to_str()).unwrap_or(input)
}

fn count(s: &mut Summary, a: &Answer, by_host: bool) {
    s.answered += 1;
    *s.answered_by_count.entry(a.model.clone()).or_default() += 1;
    s.forwarded_count += a.forwarded as usize;
    s.offloaded += by_host as usize;
    s.degraded += a.degraded as usize;
    if let Some(l) = &a.link {
        s.link_bytes_sent += l.bytes_sent;
        s.link_bytes_received += l.bytes_received;
        s.link_paced |= l.paced;
    }
    s.mean_macs += a.macs as f64;
    s.mean_ms += a.ms;
    for span in &a.stages.0 {
        *s.mean_span_ms.entry(span.name.to_owned()).or_default() += span.ms;
        if let Some(e) = &span.energy {
            *s.mean_span_mj.entry(span.name.to_owned()).or_default() += e.mj;
            s.energy_source = Some(e.source.clone());
        }
    }
}

/// One answer as a line of text.
pub fn answer_line(a: &Answer, remote: bool, correct: Option<bool>) -> String {
    let place = match (remote, a.forwarded, a.degraded) {
        (_, _, true) => format!("DEGRADED, answered by {} ({})", a.model, a.degraded_reason.as_deref().unwrap_or("")),
        (true, true, false) => format!("host: {}", a.model),
        (true, false, false) => format!("device: {}", a.model),
        (false, _, false) => format!("stage {}: {}", a.stage, a.model),
    };
    let mark = match correct {
        Some(true) => " [right]",
        Some(false) => " [wrong]",
        None => "",
    };
    let energy: Vec<&crate::energy::StageEnergy> = a.stages.0.iter().filter_map(|s| s.energy.as_ref()).collect();
    let mj = if energy.is_empty() {
        String::new()
    } else {
        let est = if energy.iter().any(|e| e.source.starts_with("estimate")) { " est." } else { "" };
        format!(", {:.0} mJ{est}", energy.iter().map(|e| e.mj).sum::<f64>())
    };
    let link = a.link.as_ref().map_or(String::new(), |l| {
        let host = match (l.host_decode_ms, l.host_infer_ms) {
            (Some(d), Some(i)) => format!(" (host: decode {d:.1} ms, infer {i:.1} ms)"),
            _ => String::new(),
        };
        format!(", {} B up / {} B down{}{host}", l.bytes_sent, l.bytes_received, if l.paced { " (paced)" } else { "" })
    });
    format!(
        "{:<28} {:>4} {:<26} {} {:.3}  {}  {:.1} ms{}{}{}",
        truncate(file_name(&a.input), 28),
        a.class,
        truncate(&a.class_name, 26),
        a.metric,
        a.confidence,
        place,
        a.ms,
        mj,
        link,
        mark
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('~')).collect()
    }
}

/// The summary as its JSON line: the totals after `"summary": true`, which tells the line
/// apart from the answers' lines.
pub fn summary_json(s: &Summary) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Line<'a> {
        summary: bool,
        #[serde(flatten)]
        totals: &'a Summary,
    }
    serde_json::to_string(&Line { summary: true, totals: s })
}

/// The summary as text.
pub fn summary_text(s: &Summary) -> String {
    let by: Vec<String> = s.answered_by_count.iter().map(|(m, k)| format!("{k} by {m}")).collect();
    let spans: Vec<String> = s.mean_span_ms.iter().map(|(n, ms)| format!("{n} {ms:.1}")).collect();
    let mut t = format!(
        "\n{} inputs: {} answered ({}), {} failed\nforwarded {}, offloaded to the host {}, degraded {}\n",
        s.inputs,
        s.answered,
        by.join(", "),
        s.failed,
        s.forwarded_count,
        s.offloaded,
        s.degraded
    );
    if s.link_bytes_sent + s.link_bytes_received > 0 {
        t += &format!(
            "link: {} bytes sent, {} received{}\n",
            s.link_bytes_sent,
            s.link_bytes_received,
            if s.link_paced { " (paced link: its times are modelled, not measured)" } else { "" }
        );
    }
    t += &format!(
        "per input: {:.0} M MACs on the device, {:.1} ms; mean ms per span: {}",
        s.mean_macs / 1e6,
        s.mean_ms,
        spans.join(", ")
    );
    if let Some(a) = s.top1 {
        t += &format!("\ntop-1 on the labeled inputs: {:.1}%", a * 100.0);
    }
    if let (Some(mj), Some(src)) = (s.mean_mj, &s.energy_source) {
        let per: Vec<String> = s.mean_span_mj.iter().map(|(n, v)| format!("{n} {v:.1}")).collect();
        t += &format!("\nenergy per input: {mj:.1} mJ ({src}); mean mJ per span: {}", per.join(", "));
    }
    if let Some(a) = &s.audit {
        t += &audit_text(a);
    }
    t
}

/// The audit's lines of the summary text.
fn audit_text(a: &AuditSummary) -> String {
    let spans: Vec<String> = a.mean_span_ms.iter().map(|(n, ms)| format!("{n} {ms:.1}")).collect();
    let mut t = format!(
        "\naudit (rate {}, seed {}): {} of {} device answers sent to the host, {} answered, {} failed; {} disagreed{}",
        a.rate,
        a.seed,
        a.sent,
        a.eligible,
        a.audited,
        a.failed,
        a.disagreed,
        a.disagreement.map_or(String::new(), |d| format!(" ({:.1}%)", d * 100.0))
    );
    if a.sent > 0 {
        t += &format!(
            "\naudit link: {} bytes sent, {} received (in the link totals above); mean ms per audit: {}{}",
            a.bytes_sent,
            a.bytes_received,
            spans.join(", "),
            a.mj.map_or(String::new(), |mj| format!("; audits' energy {mj:.1} mJ in all"))
        );
    }
    if let (Some(th), Some(n)) = (a.threshold, a.threshold_changes) {
        t += &format!("\nadaptive threshold: {th:.3} at the end, after {n} change(s) (in the log)");
    }
    t
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
