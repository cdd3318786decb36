//! One truth across commands (issue 19): `eval` and `calibrate` measure the cascade a live run
//! is. The host stage is scored on the payload the link carries (a forwarded input travels as
//! the host model's crop re-encoded as JPEG, which can change its answer), and calibrate's
//! predicted milliseconds and millijoules per input are those `classify` then measures.

mod common;

use common::bin;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// The tests time commands: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `eval --predictions`' cascade answer per file (name -> class).
fn eval_cascade_answers(encoding: &str, dir: &Path) -> (BTreeMap<String, u64>, f64) {
    let csv = dir.join(format!("predictions-{encoding}.csv"));
    let out = bin()
        .args(["eval", "--data", "photos", "--json", "--encoding", encoding, "--predictions"])
        .arg(&csv)
        .output()
        .unwrap();
    let report = &json_lines(&out)[0];
    let answers = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2] == "cascade").then(|| (f[0].to_owned(), f[3].parse().unwrap()))
        })
        .collect();
    (answers, report["cascade"]["top1"].as_f64().unwrap())
}

/// `demo`'s answer per file over the PTY link, and its top-1 on the labeled photos.
fn demo_answers(encoding: &str) -> (BTreeMap<String, u64>, f64) {
    let out = bin().args(["demo", "--data", "photos", "--json", "--encoding", encoding]).output().unwrap();
    let lines = json_lines(&out);
    let summary = lines.iter().find(|l| l["summary"] == true).expect("a summary line");
    let answers = lines
        .iter()
        .filter(|l| l.get("class").is_some())
        .map(|l| {
            let name = Path::new(l["input"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (name, l["class"].as_u64().unwrap())
        })
        .collect();
    (answers, summary["top1"].as_f64().unwrap())
}

#[test]
fn eval_scores_the_host_stage_on_the_payload_the_link_carries() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for encoding in ["crop-jpeg", "original"] {
        let (eval, eval_top1) = eval_cascade_answers(encoding, dir.path());
        let (demo, demo_top1) = demo_answers(encoding);
        assert_eq!(eval.len(), 5, "{eval:?}");
        assert_eq!(eval, demo, "eval's cascade and the deployed one answer differently with --encoding {encoding}");
        assert!((eval_top1 - demo_top1).abs() < 1e-9, "{encoding}: eval {eval_top1}, demo {demo_top1}");
    }
}

/// Within 15%, on a machine shared with other tests: up to three tries, each a fresh timing
/// pass (the logits come from the cache after the first) and a fresh classify run. Before this
/// issue the two differed by a factor of two or more (calibrate timed every image on all cores
/// at once and priced energy from the board's active power; classify measured one at a time).
#[test]
fn calibrate_predicts_the_cost_classify_measures() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::twenty_labeled_images(&data);
    let out = dir.path().join("c.toml");
    let mut seen = Vec::new();
    for attempt in 1..=3 {
        let cal = bin()
            .args(["calibrate", "--max-forward", "0.5", "--force", "--json", "--threads", "1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        let cal = &json_lines(&cal)[0];
        let predicted = &cal["chosen"]["in_process"];
        let (p_ms, p_mj) = (predicted["ms"].as_f64().unwrap(), predicted["device_mj"].as_f64().unwrap());
        let forwarded = cal["chosen"]["point"]["forwarded"].as_f64().unwrap();
        let classify =
            bin().args(["classify", "--json", "--threads", "1", "--config"]).arg(&out).arg(&data).output().unwrap();
        let lines = json_lines(&classify);
        let s = lines.iter().find(|l| l["summary"] == true).expect("a summary line");
        let (m_ms, m_mj) = (s["mean_ms"].as_f64().unwrap(), s["mean_mj"].as_f64().unwrap());
        // The same decisions: the forwarded fraction is the calibrated one exactly.
        let n = s["answered"].as_f64().unwrap();
        let lines_forwarded = lines.iter().filter(|l| l["forwarded"] == true).count() as f64;
        assert!(
            (lines_forwarded / n - forwarded).abs() < 1e-9,
            "classify forwarded {lines_forwarded}/{n}, calibrate {forwarded}"
        );
        seen.push(format!("try {attempt}: calibrate {p_ms:.1} ms {p_mj:.1} mJ, classify {m_ms:.1} ms {m_mj:.1} mJ"));
        eprintln!("{}", seen.last().unwrap());
        if (p_ms / m_ms - 1.0).abs() <= 0.15 && (p_mj / m_mj - 1.0).abs() <= 0.15 {
            return;
        }
    }
    panic!("calibrate's predicted cost is not within 15% of classify's: {seen:#?}");
}
