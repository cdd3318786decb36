//! The audit and the adaptive threshold in-process, over a scripted device model and a
//! scripted host (no model files, no link): a drift in the run (the same scene turns into one
//! the device is fairly sure of and wrong about) makes the audits disagree; with `--adapt` the
//! threshold climbs until those inputs are forwarded, every change logged; without it the
//! device goes on answering them.

use super::*;
use crate::config::CascadeConfig;
use crate::core::cascade::StageFailure;
use crate::model::preprocess;
use crate::offload::{ConnectError, RemoteInfo, RemoteStage};
use crate::run::inputs::Files;
use crate::run::session::{drive, Sink, Summary};
use crate::testing;
use std::path::Path;

const SMALL: &str = "efficientnet-lite0-int8";
const LARGE: &str = "efficientnet-lite2-fp32";
const CLEAN: [u8; 3] = [250, 40, 40];
const DRIFTED: [u8; 3] = [40, 40, 250];

/// The host: class 5 for the clean scene, class 7 for the drifted one (the device says 5 to
/// both). Counts the audits it is sent.
struct FakeHost {
    audits: usize,
}

impl FakeHost {
    fn logits(input: &crate::model::Decoded) -> Vec<f32> {
        let crate::model::Decoded::Image(img) = input else { panic!("an image cascade") };
        let class = if img.get_pixel(0, 0).0 == DRIFTED { 7 } else { 5 };
        crate::core::policy::log_probs(crate::core::policy::softmax(&testing::logits(1000, class, 12.0), 1.0))
    }
}

impl RemoteStage for FakeHost {
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
        Ok(RemoteInfo { model: LARGE.into(), classes: 1000 })
    }
    fn infer(
        &mut self,
        _: &[u8],
        input: &crate::model::Decoded,
        _: &mut Spans,
        _: usize,
        _: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure> {
        Ok(Self::logits(input))
    }
    fn audit(
        &mut self,
        _: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure> {
        self.audits += 1;
        spans.time("wait", Some(stage), || ());
        report.bytes_sent += 100;
        report.bytes_received += 10;
        Ok(Self::logits(input))
    }
    fn is_paced(&self) -> bool {
        false
    }
}

/// The default cascade (max-softmax, threshold 0.5) with a scripted device model: class 5 at
/// 0.89 on the clean scene, at 0.70 on the drifted one; the host as above.
fn pipeline() -> Pipeline {
    let config = CascadeConfig::load(&testing::root().join("cascade.toml")).unwrap();
    let small = testing::manifest(SMALL).image().unwrap().clone();
    let tensor = |rgb| preprocess::to_tensor(&testing::solid(64, 48, rgb), &small);
    let models = vec![testing::scripted_model(
        SMALL,
        vec![(tensor(CLEAN), testing::logits(1000, 5, 9.0)), (tensor(DRIFTED), testing::logits(1000, 5, 7.75))],
    )];
    let remote: Box<dyn RemoteStage> = Box::new(FakeHost { audits: 0 });
    Pipeline::assembled(config, models, Some((remote, LARGE.to_owned())))
}

/// 20 clean inputs, then 60 drifted and 20 clean again, through the session with an audit of
/// every device answer; the summary and the log's lines.
fn run(dir: &Path, auditor: Auditor) -> (Summary, Vec<serde_json::Value>) {
    let (clean, drifted) =
        (testing::png(&testing::solid(64, 48, CLEAN)), testing::png(&testing::solid(64, 48, DRIFTED)));
    let mut files = Vec::new();
    for (i, (bytes, n)) in [(&clean, 20), (&drifted, 60), (&clean, 20)].into_iter().enumerate() {
        for k in 0..n {
            let p = dir.join(format!("{i}-{k}.png"));
            std::fs::write(&p, bytes).unwrap();
            files.push(p);
        }
    }
    let log = dir.join(format!("log-{}.jsonl", files.len()));
    let mut out = Vec::new();
    let mut sink = Sink {
        out: &mut out,
        json: true,
        log: Some(ResultsLog::open(&log, "run-1", None).unwrap().0),
        labels: None,
        audit: Some(auditor),
    };
    let summary = drive(&mut pipeline(), Files::new(files), &mut sink).unwrap();
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 100, "one line out per input");
    let text = std::fs::read_to_string(&log).unwrap();
    (summary, text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn answers(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| l.get("audit").is_none() && l.get("threshold_change").is_none()).collect()
}

fn plan(target: f64) -> AdaptPlan {
    AdaptPlan::resolve(0.5, Metric::MaxSoftmax, None, Some(target), Some(0.05)).unwrap()
}

#[test]
fn a_static_threshold_goes_on_answering_the_drifted_inputs_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, lines) = run(dir.path(), Auditor::new(1.0, 1));
    let answers = answers(&lines);
    assert_eq!(answers.len(), 100, "one answer line per input");
    assert!(answers.iter().all(|a| a["stage"] == 0 && a["audit_rate"] == 1.0));
    let a = summary.audit.unwrap();
    assert_eq!((a.eligible, a.sent, a.audited, a.disagreed), (100, 100, 100, 60));
    assert_eq!((a.bytes_sent, summary.link_bytes_sent), (10_000, 10_000));
    assert!(lines.iter().all(|l| l.get("threshold_change").is_none()));
    // Each audit line follows its answer's line, with the host's class.
    for pair in lines.windows(2).filter(|w| w[1].get("audit").is_some()) {
        assert_eq!(pair[0]["seq"], pair[1]["seq"]);
        let host = pair[1]["audit"]["class"].as_u64().unwrap();
        assert_eq!(pair[1]["audit"]["disagreed"], host != 5);
    }
}

#[test]
fn the_adaptive_threshold_climbs_under_drift_until_the_drifted_inputs_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, lines) = run(dir.path(), Auditor::new(1.0, 1).adapting(plan(0.1)));
    let answers = answers(&lines);
    assert_eq!(answers.len(), 100, "one answer line per input, whatever the threshold does");
    let changes: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("threshold_change")).collect();
    assert!(!changes.is_empty());
    for c in &changes {
        assert!(c["from"].is_f64() && c["to"].is_f64() && c["observation"].is_u64() && c["target"] == 0.1, "{c}");
    }
    let top = changes.iter().map(|c| c["to"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(top > 0.70, "the threshold climbs past the drifted inputs' confidence: {top}");
    // Before the drift every input is answered on the device; after the threshold has climbed,
    // the drifted ones are forwarded (answered by the host, right) and no longer audited.
    assert!(answers[..20].iter().all(|a| a["stage"] == 0));
    let drifted = &answers[20..80];
    let on_device = drifted.iter().filter(|a| a["stage"] == 0).count();
    assert!(on_device < 15, "{on_device} of 60 drifted inputs still answered on the device");
    assert!(drifted[40..].iter().all(|a| a["stage"] == 1 && a["class"] == 7));
    let a = summary.audit.unwrap();
    assert_eq!(a.disagreed, on_device, "every drifted device answer was audited and disagreed");
    assert_eq!(a.threshold_changes, Some(changes.len()));
    // Static, 60 of the 100 device answers disagree; adaptive, few.
    assert!((a.disagreed as f64) / (a.audited as f64) < 0.25, "{a:?}");
    // The clean inputs after the drift are still answered on the device (0.89 >= threshold).
    assert!(answers[80..].iter().all(|a| a["stage"] == 0), "the bounds keep some answers on the device");
}

#[test]
fn an_adapt_plan_takes_the_table_then_the_flags_and_names_what_is_wrong() {
    let table = AdaptInfo { target: Some(0.02), lo: Some(0.3), hi: Some(0.9), gamma: Some(0.1), grid: Some(0.0) };
    let p = AdaptPlan::resolve(0.5, Metric::Margin, Some(&table), None, None).unwrap();
    assert_eq!((p.lo, p.hi, p.gamma, p.target, p.grid, p.direction), (0.3, 0.9, 0.1, 0.02, 0.0, Direction::Up));
    let p = AdaptPlan::resolve(0.5, Metric::MaxSoftmax, Some(&table), Some(0.05), Some(0.2)).unwrap();
    assert_eq!((p.target, p.gamma), (0.05, 0.2));
    // Defaults: the calibrated threshold is the end that forwards least.
    let p = AdaptPlan::resolve(0.4, Metric::Entropy, None, Some(0.1), None).unwrap();
    assert_eq!((p.lo, p.hi, p.direction, p.gamma), (1.0 - DEFAULT_SAFE_END, 0.4, Direction::Down, DEFAULT_GAMMA));
    let e = AdaptPlan::resolve(0.5, Metric::MaxSoftmax, None, None, None).unwrap_err();
    assert!(e.contains("--adapt-target"), "{e}");
    let bad = AdaptInfo { lo: Some(0.9), hi: Some(0.95), ..Default::default() };
    assert!(AdaptPlan::resolve(0.5, Metric::MaxSoftmax, Some(&bad), Some(0.1), None).is_ok());
}
