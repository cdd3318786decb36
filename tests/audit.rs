//! The live audit end to end (issue 14, item 4): a device `run` over TCP to a host process
//! audits the inputs it answered itself (`--audit-rate`), after their answers: every input
//! still has exactly one answer line (out and in the log), each audited one an `audit` line
//! of its own with the host's answer, linked by `seq`, and `report --json` estimates the live
//! disagreement with its interval; an audit rate outside [0, 1] is a bad command line.

mod common;

use common::{bin, HostProc};
use std::path::Path;

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The photos at threshold 0.5: camera.png and coffee.png answered on the device, the other
/// three forwarded. With --audit-rate 1 both device answers are audited.
#[test]
fn audited_run_logs_one_answer_per_input_and_an_audit_line_per_audit_and_report_estimates_it() {
    let host = HostProc::tcp(0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    let link = format!("tcp:{}", host.tcp);
    let o = bin()
        .args(["run", "--json", "--threshold", "0.5", "--link", &link, "--audit-rate", "1", "--audit-seed", "7"])
        .arg("--log")
        .arg(&log)
        .arg("photos")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // Standard output: one answer per input, then the summary with the audit's figures.
    let out: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (summary, answers) = out.split_last().unwrap();
    assert_eq!(answers.len(), 5, "one line per input, audits not among them");
    assert!(answers.iter().all(|a| a.get("audit").is_none() && a.get("class").is_some()));
    let audit = &summary["audit"];
    assert_eq!((audit["rate"].as_f64(), audit["eligible"].as_u64()), (Some(1.0), Some(2)), "{summary}");
    assert_eq!((audit["sent"].as_u64(), audit["audited"].as_u64()), (Some(2), Some(2)), "{summary}");
    assert!(audit["bytes_sent"].as_u64().unwrap() > 1000, "{summary}");
    assert!(audit["mean_span_ms"]["wait"].as_f64().unwrap() > 0.0, "{summary}");
    let answers_bytes: u64 = answers.iter().map(|a| a["link"]["bytes_sent"].as_u64().unwrap_or(0)).sum();
    assert_eq!(summary["link_bytes_sent"].as_u64().unwrap(), answers_bytes + audit["bytes_sent"].as_u64().unwrap());

    // The log: five answer lines, exactly one per input, and an audit line after each device
    // answer, with the host's answer.
    let lines = log_lines(&log);
    let answer_lines: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("audit").is_none()).collect();
    assert_eq!(answer_lines.len(), 5);
    let seqs: Vec<u64> = answer_lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let device: Vec<&serde_json::Value> = answer_lines.iter().copied().filter(|l| l["stage"] == 0).collect();
    assert_eq!(device.len(), 2, "camera and coffee answered on the device");
    for (i, l) in lines.iter().enumerate() {
        if l["stage"] == 0 {
            assert_eq!(l["audit_rate"], 1.0, "{l}");
            let next = &lines[i + 1];
            assert_eq!(next["seq"], l["seq"], "the audit line follows its answer's line: {next}");
            let a = &next["audit"];
            assert_eq!(a["model"], "efficientnet-lite2-fp32");
            assert_eq!(a["device_class"], l["class"]);
            assert!(a["class"].is_u64() && a["class_name"].is_string(), "{a}");
            assert_eq!(a["disagreed"], a["class"] != l["class"]);
            assert!(a["link"]["bytes_sent"].as_u64().unwrap() > 0, "{a}");
        } else if l.get("audit").is_none() {
            assert!(l.get("audit_rate").is_none(), "a forwarded input cannot be audited: {l}");
        }
    }
    // The host's answers on these two photos: the tripod and the espresso (models/README.md).
    let classes: Vec<u64> = lines.iter().filter_map(|l| l["audit"]["class"].as_u64()).collect();
    assert_eq!(classes, vec![872, 967]);

    // report: the live disagreement, its interval, against E.
    let o = bin().args(["report", "--json", "--max-disagreement", "0.05"]).arg(&log).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["inputs"], 5, "audit lines are not inputs: {r}");
    let a = &r["audit"];
    assert_eq!((a["answered"].as_u64(), a["audited"].as_u64(), a["disagreed"].as_u64()), (Some(2), Some(2), Some(0)));
    assert_eq!(a["method"], "binomial");
    let (lo, hi) = (a["interval"][0].as_f64().unwrap(), a["interval"][1].as_f64().unwrap());
    assert!(lo == 0.0 && hi > 0.5 && hi < 0.7, "Wilson's 95% interval of 0 of 2: {a}");
    assert_eq!(a["verdict"], "unclear", "two audits cannot tell 5%: {a}");
    assert_eq!(a["max_disagreement"], 0.05);
    assert_eq!(r["link_bytes_sent"], summary["link_bytes_sent"]);
    let o = bin().args(["report", "--max-disagreement", "0.05"]).arg(&log).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("live disagreement with the host: 0 of 2 audited"), "{text}");
}

/// Half the device's answers audited, by a seeded draw: the same seed audits the same inputs.
#[test]
fn a_seeded_audit_rate_below_one_audits_the_same_inputs_each_time() {
    let host = HostProc::tcp(0);
    let dir = tempfile::tempdir().unwrap();
    let link = format!("tcp:{}", host.tcp);
    let audited = |name: &str| {
        let log = dir.path().join(name);
        let o = bin()
            .args(["run", "--threshold", "0.1", "--link", &link, "--audit-rate", "0.5", "--audit-seed", "3"])
            .arg("--log")
            .arg(&log)
            .arg("photos")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines = log_lines(&log);
        assert_eq!(lines.iter().filter(|l| l.get("audit").is_none()).count(), 5);
        let audits: Vec<u64> =
            lines.iter().filter(|l| l.get("audit").is_some()).map(|l| l["seq"].as_u64().unwrap()).collect();
        assert!(lines.iter().filter(|l| l.get("audit").is_none()).all(|l| l["audit_rate"] == 0.5 || l["stage"] != 0));
        audits
    };
    let first = audited("a.jsonl");
    assert_eq!(first, audited("b.jsonl"));
    assert!(first.len() < 5, "{first:?}");
}

#[test]
fn audit_and_adapt_flags_out_of_range_are_bad_command_lines_naming_the_flag() {
    for (args, want) in [
        (&["--audit-rate", "1.5"][..], "--audit-rate"),
        (&["--audit-rate", "-0.1"][..], "--audit-rate"),
        (&["--audit-seed", "3"][..], "--audit-rate"),
        (&["--adapt"][..], "--audit-rate"),
        (&["--audit-rate", "0", "--adapt", "--adapt-target", "0.1"][..], "--audit-rate above 0"),
        (&["--audit-rate", "0.5", "--adapt"][..], "--adapt-target"),
        (&["--audit-rate", "0.5", "--adapt", "--adapt-target", "1.5"][..], "--adapt-target"),
    ] {
        let o = bin().args(["run", "--link", "tcp:127.0.0.1:9"]).args(args).arg("photos").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = bin().args(["report", "--max-disagreement", "2", "x.jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-disagreement"));
}
