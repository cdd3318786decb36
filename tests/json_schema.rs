//! Every command's `--json` output against its schema in docs/json.md, both ways: every key
//! the output has is documented there with its type, and every key documented as required is
//! in the output. Also: the same key means the same thing in every command (the document's
//! vocabulary table holds for every schema).

mod common;

use common::{bin, root, HostProc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;

/// One documented key: its type and whether it may be absent or null.
#[derive(Clone, Debug)]
struct Key {
    ty: String,
    optional: bool,
}

/// docs/json.md's schemas: `### \`name\`` headings, each followed by a table of
/// `| \`path\` | type | meaning |` rows.
fn schemas() -> BTreeMap<String, BTreeMap<String, Key>> {
    let doc = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Key>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            current = Some(h.trim_end_matches('`').to_owned());
        } else if line.starts_with('#') {
            current = None;
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            let (path, rest) = row.split_once('`').unwrap();
            let ty = rest.trim_start_matches(" |").split('|').next().unwrap().trim().to_owned();
            let optional = path.ends_with('?');
            let path = path.replace('?', "");
            out.entry(name.clone()).or_default().insert(path, Key { ty, optional });
        }
    }
    out
}

fn schema(names: &[&str]) -> BTreeMap<String, Key> {
    let all = schemas();
    let mut s = BTreeMap::new();
    for n in names {
        s.extend(all.get(*n).unwrap_or_else(|| panic!("docs/json.md has no schema `{n}`")).clone());
    }
    s
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "int" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "bool" => v.is_boolean(),
        "array" => v.is_array(),
        "object" | "map" => v.is_object(),
        t if t.starts_with("schema:") => v.is_object(),
        other => panic!("docs/json.md: unknown type {other}"),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The path of the object a documented key sits in ("" for the top).
fn parent(path: &str) -> Option<&str> {
    if path.ends_with("[]") || path.ends_with(".*") {
        return None; // an element or a map's entry, not a key
    }
    Some(path.rsplit_once('.').map_or("", |(p, _)| p))
}

fn walk(s: &BTreeMap<String, Key>, path: &str, v: &Value, errors: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let is_map = s.get(path).is_some_and(|k| k.ty == "map");
            for (k, child) in map {
                let p = if is_map { join(path, "*") } else { join(path, k) };
                check(s, &p, child, errors);
            }
            if !is_map {
                for (doc_path, key) in s {
                    let name = doc_path.rsplit('.').next().unwrap();
                    if parent(doc_path) == Some(path) && !key.optional && !map.contains_key(name) {
                        errors.push(format!("`{doc_path}` is documented as required but missing"));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                check(s, &format!("{path}[]"), item, errors);
            }
        }
        _ => {}
    }
}

fn check(s: &BTreeMap<String, Key>, path: &str, v: &Value, errors: &mut Vec<String>) {
    // An array's elements that are objects need no row of their own: their keys' rows say it.
    let element = Key { ty: "object".into(), optional: false };
    let key = match s.get(path) {
        Some(k) => k,
        None if path.ends_with("[]") && s.keys().any(|k| k.starts_with(&format!("{path}."))) => &element,
        None => {
            errors.push(format!("`{path}` ({v}) is not in docs/json.md"));
            return;
        }
    };
    if v.is_null() {
        if !key.optional {
            errors.push(format!("`{path}` is null but not documented as optional"));
        }
        return;
    }
    // `schema:NAME`: the value is an object of the schema NAME (a shape several places share).
    if let Some(name) = key.ty.strip_prefix("schema:") {
        let mut inner = Vec::new();
        walk(&schema(&[name]), "", v, &mut inner);
        errors.extend(inner.into_iter().map(|e| format!("in `{path}` ({name}): {e}")));
        return;
    }
    if !type_ok(&key.ty, v) {
        errors.push(format!("`{path}` is {v}, documented as {}", key.ty));
    }
    walk(s, path, v, errors);
}

/// Checks one output object against the named schemas (merged).
fn conforms(names: &[&str], v: &Value) {
    let s = schema(names);
    let mut errors = Vec::new();
    walk(&s, "", v, &mut errors);
    errors.dedup();
    assert!(errors.is_empty(), "{names:?} does not match docs/json.md:\n{}\nin {v:#}", errors.join("\n"));
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(!o.stdout.is_empty(), "no output: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// An answer stream: answers and errors, then the summary.
fn conforms_stream(out: &[Value]) -> (usize, usize) {
    let (mut answers, mut errors) = (0, 0);
    for v in out {
        if v["summary"] == true {
            conforms(&["summary"], v);
        } else if v.get("error").is_some() {
            conforms(&["error"], v);
            errors += 1;
        } else {
            conforms(&["answer"], v);
            answers += 1;
        }
    }
    assert_eq!(out.iter().filter(|v| v["summary"] == true).count(), 1, "one summary line");
    (answers, errors)
}

#[test]
fn classify() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("photos/china.jpg"), dir.path().join("china.jpg")).unwrap();
    std::fs::copy(root().join("photos/coffee.png"), dir.path().join("coffee.png")).unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"not a JPEG").unwrap();
    let o = bin().args(["classify", "--json", "--threshold", "0.9"]).arg(dir.path()).output().unwrap();
    assert_eq!(conforms_stream(&lines(&o)), (2, 1));
}

#[test]
fn demo_and_its_results_log_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    let o = bin().args(["demo", "--json", "--data", "photos", "--log"]).arg(&log).output().unwrap();
    let out = lines(&o);
    assert_eq!(conforms_stream(&out), (5, 0));
    assert!(out.iter().any(|v| v.get("link").is_some()), "an offloaded answer");
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        conforms(&["answer", "log-line"], &v);
    }
    let r = bin().args(["report", "--json"]).arg(&log).output().unwrap();
    conforms(&["report"], &lines(&r)[0]);
}

/// `demo` with an audit of every device answer and the adaptive threshold: the summary's
/// `audit`, the log's audit lines (and threshold changes, if any), report's `audit`.
#[test]
fn demo_with_an_audit_and_its_log_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.jsonl");
    let o = bin()
        .args(["demo", "--json", "--data", "photos", "--audit-rate", "1", "--audit-seed", "1"])
        .args(["--adapt", "--adapt-target", "0.05", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    let out = lines(&o);
    assert_eq!(conforms_stream(&out), (5, 0));
    assert!(out.last().unwrap().get("audit").is_some());
    let mut audits = 0;
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v.get("audit").is_some() {
            conforms(&["audit-line"], &v);
            audits += 1;
        } else if v.get("threshold_change").is_some() {
            conforms(&["threshold-change-line"], &v);
        } else {
            conforms(&["answer", "log-line"], &v);
        }
    }
    assert!(audits > 0);
    let r = bin().args(["report", "--json", "--max-disagreement", "0.05"]).arg(&log).output().unwrap();
    let r = &lines(&r)[0];
    assert!(r.get("audit").is_some());
    conforms(&["report"], r);
}

#[test]
fn run_over_tcp() {
    let host = HostProc::start(&["--listen", "0"], &[]);
    let link = format!("tcp:{}", host.tcp);
    let o = bin().args(["run", "--json", "--link", &link, "photos"]).output().unwrap();
    assert_eq!(conforms_stream(&lines(&o)), (5, 0));
}

#[test]
fn eval() {
    let o = bin().args(["eval", "--json", "--data", "photos"]).output().unwrap();
    conforms(&["eval"], &lines(&o)[0]);
}

#[test]
fn calibrate_and_report_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::twenty_labeled_images(&data);
    let out = dir.path().join("c.toml");
    let o = bin()
        .args(["calibrate", "--json", "--max-forward", "0.5", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    conforms(&["calibrate"], &lines(&o)[0]);
    // report with a calibration to compare with: its optional keys filled in.
    let log = dir.path().join("results.jsonl");
    let d =
        bin().args(["demo", "--config"]).arg(&out).arg("--data").arg(&data).arg("--log").arg(&log).output().unwrap();
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let r = bin().args(["report", "--json", "--config"]).arg(&out).arg(&log).output().unwrap();
    let r = &lines(&r)[0];
    conforms(&["report"], r);
    assert!(r["predicted_rate"].is_number(), "{r}");
}

#[test]
fn bench() {
    let args = ["bench", "--json", "--runs", "1", "--min-seconds", "0", "--min-inferences", "2", "--warmup", "1"];
    let o = bin().args(args).output().unwrap();
    conforms(&["bench"], &lines(&o)[0]);
    // On a Pi 4's thermal, clock and firmware files, throttling: every key of the machine's state.
    let tree = tempfile::tempdir().unwrap();
    common::energy::pi4_thermal(tree.path(), 82_300, 1_500_000, "50005");
    common::energy::proc_status(tree.path(), 204_800);
    let o = bin().args(args).args(["--board", "rpi4", "--sysfs-root"]).arg(tree.path()).output().unwrap();
    let v = &lines(&o)[0];
    conforms(&["bench"], v);
    assert!(v["thermal"]["after"]["throttled"]["now"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
}

#[test]
fn boards() {
    let o = bin().args(["boards", "--json"]).output().unwrap();
    conforms(&["boards"], &lines(&o)[0]);
}

/// The document's vocabulary holds in every schema: where a key of the table appears (as the
/// last part of a path), it has the table's type. Answers are the documented exceptions: there
/// `forwarded` is whether that input was, and `label` the predicted name.
#[test]
fn one_word_for_one_thing() {
    let doc = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    let vocabulary: BTreeMap<String, String> = doc
        .split("## One word for one thing")
        .nth(1)
        .unwrap()
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let key = l.strip_prefix("| `")?.split('`').next()?.to_owned();
            let ty = l.split('|').nth(2)?.trim().split(' ').next()?.to_owned();
            Some((key, ty))
        })
        .collect();
    assert!(vocabulary.contains_key("forwarded") && vocabulary.contains_key("n"), "{vocabulary:?}");
    let mut errors = Vec::new();
    for (name, keys) in schemas() {
        for (path, key) in keys {
            let leaf = path.rsplit('.').next().unwrap();
            let Some(ty) = vocabulary.get(leaf) else { continue };
            // The documented exceptions: in an answer, `forwarded` is whether that input was and
            // `label` the predicted name; calibrate's cost figures are `{value, source}`.
            let figure = name == "calibrate" && ["ms", "mj"].contains(&leaf) && key.ty == "schema:figure";
            let exception = matches!((name.as_str(), leaf), ("answer", "forwarded" | "label")) || figure;
            if !exception && ty != &key.ty {
                errors.push(format!("{name}: `{path}` is {}, the vocabulary says {ty}", key.ty));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_checker_finds_undocumented_missing_and_mistyped_keys() {
    let ok = serde_json::json!({"n": 3, "failed": 0, "errors": 0, "models": [], "cascade": {
        "top1": 0.5, "top1_ci": [0.1, 0.9], "forwarded": 0.2, "forwarded_ci": [0.0, 0.7], "macs_per_input": 1.0, "answered_by": [0.8, 0.2], "metric": "margin",
        "threshold": 0.5, "ensemble": false}, "payload": null});
    conforms(&["eval"], &ok);
    let mut s = Vec::new();
    let bad = serde_json::json!({"n": 3.5, "failed": 0, "models": [], "cascade": {
        "top1": 0.5, "forwarded": 0.2, "macs_per_input": 1.0, "answered_by": [], "metric": "margin",
        "ensemble": false, "extra": 1}});
    walk(&schema(&["eval"]), "", &bad, &mut s);
    let text = s.join("\n");
    for want in ["`n` is 3.5", "`errors` is documented as required", "`cascade.extra`"] {
        assert!(text.contains(want), "{want} not found in:\n{text}");
    }
}
