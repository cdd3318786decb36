//! `report` in-process on small results logs written here: counts, rates, spans, runs, a torn
//! line skipped, the comparison with a config's calibration, and the errors naming the line.

use super::*;
use crate::core::calibrate::forward_interval;

/// Two runs: answered at stage 1 (right), answered at stage 2 (wrong), failed, a line torn by
/// a power cut, then (the next run) answered degraded at stage 1; a blank line.
const LOG: &str = r#"{"seq":1,"run":"r1","input":"a.png","stage":0,"forwarded":false,"degraded":false,"correct":true,"stages":[{"name":"decode","ms":2.0},{"name":"infer","ms":4.0,"mj":3.0}]}
{"seq":2,"run":"r1","input":"b.png","stage":1,"forwarded":true,"degraded":false,"correct":false,"stages":[{"name":"decode","ms":4.0},{"name":"infer","ms":8.0,"mj":6.0}]}
{"seq":3,"run":"r1","input":"c.jpg","error":"c.jpg: not an image"}
{"seq":4,"run":"r1","input":"d.png","stage":0,"forwa

{"seq":5,"run":"r2","input":"e.png","stage":0,"forwarded":true,"degraded":true,"stages":[{"name":"decode","ms":0.0}]}
"#;

fn write_log(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn calibration(n: usize, forwarded: usize) -> CalibrationInfo {
    CalibrationInfo {
        data: "photos".into(),
        n,
        forwarded,
        top1: 0.8,
        macs_per_input: 400.0,
        large_model_macs: 1000.0,
        stage_macs: vec![100.0, 1000.0],
        target: "accuracy >= 0.8".into(),
        ..Default::default()
    }
}

#[test]
fn report_counts_a_log_skipping_its_torn_line() {
    let (_dir, log) = write_log(LOG);
    let r = report(&log, None).unwrap();
    assert_eq!((r.inputs, r.answered, r.failed, r.forwarded_count, r.degraded, r.torn), (4, 3, 1, 2, 1, 1));
    assert_eq!(r.runs, ["r1", "r2"]);
    assert!((r.forwarded_rate - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.top1, Some(0.5), "two answers labeled, one right");
    assert_eq!(r.mean_span_ms.get("decode"), Some(&2.0));
    assert_eq!(r.mean_span_ms.get("infer"), Some(&4.0));
    assert_eq!(r.mean_span_mj.get("infer"), Some(&3.0));
    assert_eq!((r.predicted_rate, r.interval, r.drift, r.macs_per_input), (None, None, false, None));

    let text = report_text(&r);
    assert!(text.contains("4 inputs, 3 answered, 1 failed, 2 forwarded (66.7%), 1 degraded"), "{text}");
    assert!(text.contains("2 runs; 1 torn line(s) skipped"), "{text}");
    assert!(text.contains("no [calibration] in the config"), "{text}");
    assert!(text.contains("top-1 on the labeled inputs: 50.0%"), "{text}");
    assert!(text.contains("mean per input: decode 2.0 ms, infer 4.0 ms"), "{text}");
    assert!(text.contains("energy per input: infer 3.00 mJ"), "{text}");
}

#[test]
fn report_compares_the_forward_rate_with_the_calibration_and_prices_the_compute() {
    let (_dir, log) = write_log(LOG);
    let r = report(&log, Some(&calibration(100, 30))).unwrap();
    assert_eq!(r.predicted_rate, Some(0.3));
    assert_eq!(r.interval, Some(forward_interval(30, 100, 3)));
    assert!(!r.drift, "2 of 3 forwarded is within the interval of 3 inputs: {:?}", r.interval);
    // Stages run: the first three times, the second twice, less the degraded input's failed
    // offload: (3 x 100 + 1 x 1000) / 3.
    let macs = r.macs_per_input.unwrap();
    assert!((macs - 1300.0 / 3.0).abs() < 1e-9, "{macs}");
    assert!((r.compute_saved_vs_large.unwrap() - (1.0 - macs / 1000.0)).abs() < 1e-12);
    let text = report_text(&r);
    assert!(text.contains("calibration predicted 30.0% forwarded") && text.contains(": within it"), "{text}");

    let r = report(&log, Some(&calibration(10_000, 100))).unwrap();
    assert!(r.drift, "2 of 3 forwarded against 1% calibrated: {:?}", r.interval);
    assert!(report_text(&r).contains("WARNING, the realised rate is outside it"));
}

#[test]
fn report_errors_name_the_log_and_the_line() {
    let err = |text: &str| {
        let (_dir, log) = write_log(text);
        format!("{:#}", report(&log, None).map(|_| ()).unwrap_err())
    };
    let first = LOG.lines().next().unwrap();
    let e = err(&format!("{first}\nnot JSON, and not cut short]\n"));
    assert!(e.contains("results.jsonl line 2: not a JSON object"), "{e}");
    let e = err(r#"{"seq":1,"input":"a.png"}"#);
    assert!(e.contains(r#"results.jsonl line 1: no "stage""#), "{e}");
    let e = err("{\"seq\":1,\"input\":\"c.jpg\",\"error\":\"not an image\"}\n{\"seq\":2,\"inp\n");
    assert!(e.contains("results.jsonl: no answered input in the log"), "{e}");
    let e = format!("{:#}", report(Path::new("/nonexistent/results.jsonl"), None).map(|_| ()).unwrap_err());
    assert!(e.contains("cannot read the results log /nonexistent/results.jsonl"), "{e}");
}
