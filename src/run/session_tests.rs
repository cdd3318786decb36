//! The session driver (`drive`) in-process over a pipeline of scripted models (the default
//! cascade's manifests, no model files loaded, no inference): one line out and one log line per
//! input, in order, whatever fails.

use super::*;
use crate::config::CascadeConfig;
use crate::model::preprocess;
use crate::run::inputs::Input;
use crate::testing;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const SMALL: &str = "efficientnet-lite0-int8";
const LARGE: &str = "efficientnet-lite2-fp32";

/// The default cascade (cascade.toml: the first stage answers at max softmax >= 0.5) with
/// scripted models: `sure` answered by the first stage (class 5), `unsure` forwarded (uniform
/// logits) and answered by the second (class 9); anything else fails in the model.
fn pipeline(sure: &image::RgbImage, unsure: &image::RgbImage) -> Pipeline {
    let config = CascadeConfig::load(&testing::root().join("cascade.toml")).unwrap();
    let (small, large) =
        (testing::manifest(SMALL).image().unwrap().clone(), testing::manifest(LARGE).image().unwrap().clone());
    let models = vec![
        testing::scripted_model(
            SMALL,
            vec![
                (preprocess::to_tensor(sure, &small), testing::logits(1000, 5, 9.0)),
                (preprocess::to_tensor(unsure, &small), vec![0.0; 1000]),
            ],
        ),
        testing::scripted_model(LARGE, vec![(preprocess::to_tensor(unsure, &large), testing::logits(1000, 9, 9.0))]),
    ];
    Pipeline::assembled(config, models, None)
}

/// The inputs of a run: answered at stage 0, answered at stage 1, not an image, unreadable,
/// and an image the model fails on.
fn inputs() -> (Pipeline, Vec<Input>) {
    let (sure, unsure, odd) = (
        testing::solid(64, 48, [250, 40, 40]),
        testing::solid(48, 64, [40, 250, 40]),
        testing::solid(32, 32, [0, 0, 0]),
    );
    let inputs = vec![
        ("photos/sure.png".to_owned(), Ok(testing::png(&sure))),
        ("photos/unsure.png".into(), Ok(testing::png(&unsure))),
        ("photos/broken.jpg".into(), Ok(b"not an image".to_vec())),
        ("photos/gone.png".into(), Err("cannot read photos/gone.png: No such file or directory".into())),
        ("photos/odd.png".into(), Ok(testing::png(&odd))),
    ];
    (pipeline(&sure, &unsure), inputs)
}

/// A source that checks, each time it is told an input is done, that the input's log line is
/// already written, and records what it was told.
struct Checked {
    inputs: std::vec::IntoIter<Input>,
    log: PathBuf,
    done: Rc<RefCell<Vec<(String, bool)>>>,
}

impl Iterator for Checked {
    type Item = Input;
    fn next(&mut self) -> Option<Input> {
        self.inputs.next()
    }
}

impl Source for Checked {
    fn done(&mut self, name: &str, answered: bool) {
        let mut done = self.done.borrow_mut();
        let last = log_lines(&self.log).pop().expect("a log line before the input is done");
        assert_eq!(last["input"], name, "{name} is done before its log line is written");
        done.push((name.to_owned(), answered));
    }
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect()
}

/// Drives the inputs with a results log at `log`; the output and the summary.
fn drive_logged(json: bool, log: &Path) -> (String, Summary, Vec<(String, bool)>) {
    let (mut pipeline, inputs) = inputs();
    let done = Rc::new(RefCell::new(Vec::new()));
    let source = Checked { inputs: inputs.into_iter(), log: log.to_owned(), done: done.clone() };
    let mut out = Vec::new();
    let labels = HashMap::from([("sure.png".to_owned(), 5), ("unsure.png".to_owned(), 1)]);
    let mut sink = Sink {
        out: &mut out,
        json,
        log: Some(ResultsLog::open(log, "run-1", None).unwrap().0),
        labels: Some(labels),
        audit: None,
    };
    let summary = drive(&mut pipeline, source, &mut sink).unwrap();
    let done = done.borrow().clone();
    (String::from_utf8(out).unwrap(), summary, done)
}

#[test]
fn every_input_gets_one_line_out_and_one_log_line_and_failures_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    let (out, summary, done) = drive_logged(true, &log);

    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names = ["photos/sure.png", "photos/unsure.png", "photos/broken.jpg", "photos/gone.png", "photos/odd.png"];
    assert_eq!(lines.len(), names.len(), "{out}");
    for (line, name) in lines.iter().zip(names) {
        assert_eq!(line["input"], name, "{line}");
    }
    let [sure, unsure] = [&lines[0], &lines[1]];
    assert!(sure["class"] == 5 && sure["stage"] == 0 && sure["model"] == SMALL && sure["forwarded"] == false, "{sure}");
    assert!(unsure["class"] == 9 && unsure["stage"] == 1 && unsure["model"] == LARGE, "{unsure}");
    assert!(unsure["forwarded"] == true && unsure["degraded"] == false, "{unsure}");
    assert!(lines[2]["error"].as_str().unwrap().contains("decode"), "{}", lines[2]);
    assert!(lines[3]["error"].as_str().unwrap().contains("No such file"), "{}", lines[3]);
    assert!(lines[4]["error"].as_str().unwrap().contains("no scripted answer"), "{}", lines[4]);

    let logged = log_lines(&log);
    assert_eq!(logged.len(), names.len());
    for (i, (line, name)) in logged.iter().zip(names).enumerate() {
        assert!(line["seq"] == i as u64 + 1 && line["input"] == name && line["run"] == "run-1", "{line}");
        assert_eq!(line.get("error").is_some(), i >= 2, "{line}");
    }
    assert!(logged[0]["correct"] == true && logged[1]["correct"] == false, "{logged:?}");
    let want: Vec<(String, bool)> = names.iter().enumerate().map(|(i, n)| (n.to_string(), i < 2)).collect();
    assert_eq!(done, want, "the source is told of every input once, in order");

    assert_eq!((summary.inputs, summary.answered, summary.failed), (5, 2, 3));
    assert_eq!((summary.forwarded_count, summary.offloaded, summary.degraded), (1, 0, 0));
    assert_eq!((summary.n, summary.forwarded, summary.answered_by.as_slice()), (2, 0.5, [0.5, 0.5].as_slice()));
    assert_eq!(summary.answered_by_count, BTreeMap::from([(SMALL.to_owned(), 1), (LARGE.to_owned(), 1)]));
    assert_eq!(summary.top1, Some(0.5));
    assert_eq!(summary.mean_macs, 1.5e6, "one model's MACs for the first answer, two for the second");
    for span in ["decode", "preprocess", "infer", "decide"] {
        assert!(summary.mean_span_ms.contains_key(span), "{span}: {:?}", summary.mean_span_ms);
    }
    let text = summary_text(&summary);
    assert!(text.contains(&format!("5 inputs: 2 answered (1 by {SMALL}, 1 by {LARGE}), 3 failed")), "{text}");
    assert!(text.contains("top-1 on the labeled inputs: 50.0%"), "{text}");
}

#[test]
fn text_lines_name_the_stage_and_the_error_and_a_second_run_goes_on_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    drive_logged(true, &log);
    let (out, summary, _) = drive_logged(false, &log);

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("sure.png") && lines[0].contains(&format!("stage 0: {SMALL}")), "{}", lines[0]);
    assert!(lines[0].ends_with("[right]"), "{}", lines[0]);
    assert!(lines[1].contains(&format!("stage 1: {LARGE}")) && lines[1].ends_with("[wrong]"), "{}", lines[1]);
    assert!(lines[2].starts_with("photos/broken.jpg: error: "), "{}", lines[2]);
    assert!(lines[3].starts_with("photos/gone.png: error: cannot read"), "{}", lines[3]);
    assert!(lines[4].starts_with("photos/odd.png: error: "), "{}", lines[4]);
    assert_eq!(summary.answered, 2);

    let seqs: Vec<u64> = log_lines(&log).iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "sequence numbers go on across runs");
}

#[test]
fn without_a_log_or_labels_every_input_still_gets_its_line() {
    let (mut pipeline, inputs) = inputs();
    let mut out = Vec::new();
    let mut sink = Sink { out: &mut out, json: true, log: None, labels: None, audit: None };
    let summary = drive(&mut pipeline, inputs.into_iter(), &mut sink).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 5, "{out}");
    assert_eq!((summary.answered, summary.failed, summary.top1), (2, 3, None));
}
