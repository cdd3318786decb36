//! Text cascades (issue 16): the tokenizers against the Python package's token ids on all of
//! SST-2 dev, the text models' logits against ONNX Runtime's on a committed sample, `classify`
//! over `--text` and `--lines`, `eval` on a TSV, bad input of every kind, and a text cascade end
//! to end over a PTY pair (device and host processes, joined by socat).

mod common;

use common::{bin, root, HostProc};
use edgecascade::model::manifest::{Kind, Manifest};
use edgecascade::model::runner::RunnerOptions;
use edgecascade::model::text::TextTokenizer;
use edgecascade::model::Model;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The device's text model, committed.
const DEVICE: &str = "models/minilm-l3-sst2-int8.toml";

/// The host model the tests run, committed: the small host where it is there, else the device
/// model again (a cascade of two stages all the same).
fn test_host() -> &'static str {
    if root().join("models/minilm-l6-sst2-int8.onnx").is_file() {
        "models/minilm-l6-sst2-int8.toml"
    } else {
        DEVICE
    }
}

/// A text cascade of committed models, threshold `t`, written into `dir`.
fn config(dir: &Path, t: f32) -> PathBuf {
    let path = dir.join("text.toml");
    let body = format!(
        "[[stage]]\nmodel = \"{}\"\nmetric = \"max-softmax\"\nthreshold = {t}\n\n[[stage]]\nmodel = \"{}\"\n",
        root().join(DEVICE).display(),
        root().join(test_host()).display()
    );
    std::fs::write(&path, body).unwrap();
    path
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sst2_dev() -> Option<PathBuf> {
    let p = root().join("../shared/data/sst2/sst2_dev.tsv");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is not here (the data set is not in the repository)", p.display());
        None
    }
}

/// Every text model's manifest in models/.
fn text_manifests() -> Vec<Manifest> {
    let mut found: Vec<Manifest> = std::fs::read_dir(root().join("models"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| Manifest::load(&p).ok())
        .filter(|m| m.kind() == Kind::Text)
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(found.iter().any(|m| m.path.ends_with(DEVICE)), "the device's text model is committed");
    found
}

/// Issue 16, done-when 2: the tokenizer here gives the ids the Python `tokenizers` package gave
/// (`scripts/text_models.py`) for every sentence of SST-2 dev, with each model's tokenizer.
#[test]
fn tokenization_equals_pythons_on_every_dev_sentence() {
    let Some(dev) = sst2_dev() else { return };
    let text = std::fs::read_to_string(dev).unwrap();
    let sentences: Vec<&str> = text.lines().skip(1).filter_map(|l| l.split_once('\t').map(|(_, s)| s)).collect();
    assert_eq!(sentences.len(), 872);
    for m in text_manifests() {
        let reference = root().join(format!("models/reference/sst2-dev-tokens-{}.txt", m.name));
        let Ok(reference) = std::fs::read_to_string(&reference) else {
            eprintln!("SKIPPED: no {} for {}", reference.display(), m.name);
            continue;
        };
        let tok = TextTokenizer::load(m.text().unwrap()).unwrap();
        let want: Vec<&str> = reference.lines().collect();
        assert_eq!(want.len(), sentences.len(), "{}: one reference line a sentence", m.name);
        let mut longest = 0;
        for (i, (s, w)) in sentences.iter().zip(&want).enumerate() {
            let got = tok.encode(s).unwrap();
            let got: Vec<String> = got.ids.iter().map(|i| i.to_string()).collect();
            assert_eq!(got.join(" "), *w, "{}: dev sentence {} ({s:?})", m.name, i + 1);
            longest = longest.max(got.len());
        }
        eprintln!("{}: 872 dev sentences tokenized as Python does (longest {longest} tokens)", m.name);
    }
}

/// Issue 16, done-when 2: each text model's logits through tract equal ONNX Runtime's on the
/// committed sample (its token ids in, at each input's padding bucket here).
#[test]
fn text_logits_equal_onnxruntimes_on_the_committed_sample() {
    for m in text_manifests() {
        let sample = root().join(format!("models/reference/sst2-logits-{}.json", m.name));
        if !m.onnx.is_file() {
            eprintln!("SKIPPED: {} is not here (scripts/text_models.py makes it)", m.onnx.display());
            continue;
        }
        let Ok(sample) = std::fs::read_to_string(&sample) else {
            eprintln!("SKIPPED: no {}", sample.display());
            continue;
        };
        let sample: serde_json::Value = serde_json::from_str(&sample).unwrap();
        let model = Model::load(&m.path, &RunnerOptions::default()).unwrap();
        let mut worst = 0f32;
        let entries = sample["sentences"].as_array().unwrap();
        assert!(entries.len() >= 16, "{}: a sample of at least 16", m.name);
        for e in entries {
            let ids: Vec<i64> = e["input_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            let want: Vec<f32> = e["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let got = model.runner.run_tokens(&ids).unwrap();
            assert_eq!(got.len(), want.len());
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            worst = worst.max(diff);
            let argmax = |v: &[f32]| if v[1] > v[0] { 1 } else { 0 };
            if (want[1] - want[0]).abs() > 0.05 {
                assert_eq!(argmax(&got), argmax(&want), "{}: line {}: {got:?} vs {want:?}", m.name, e["line"]);
            }
        }
        assert!(worst < 2e-3, "{}: logits differ from ONNX Runtime's by up to {worst}", m.name);
        eprintln!("{}: {} sentences, logits within {worst:.2e} of ONNX Runtime's", m.name, entries.len());
    }
}

/// Issue 16, item 4 and bad input: `classify --text` and `--lines` (a file and standard input)
/// answer every line once, named FILE:LINE with its token count; an empty line, invalid UTF-8
/// and an over-long line are errors naming their line, and the others are still answered. An
/// image cascade refuses `--text` as a bad command line.
#[test]
fn classify_answers_every_line_once_and_names_each_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 0.9);
    let o = bin()
        .args(["classify", "--json", "--config"])
        .arg(&cfg)
        .args(["--text", "a gorgeous , witty , seductive movie .", "--text", "dull and lifeless ."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_lines(&o);
    assert_eq!((v[0]["input"].as_str(), v[0]["class_name"].as_str()), (Some("text:1"), Some("positive")), "{v:#?}");
    assert_eq!(v[1]["class_name"], "negative", "{v:#?}");
    let tokenize = v[0]["stages"].as_array().unwrap().iter().find(|s| s["name"] == "tokenize").unwrap().clone();
    assert_eq!(tokenize["tokens"], 10, "[CLS] + 8 words and marks + [SEP]: {tokenize}");
    assert!(v[0]["macs"].as_u64().unwrap() > 0);

    let mut lines = b"the best film of the year .\n\nterrible .\r\n".to_vec();
    lines.extend_from_slice(b"caf\xe9 au lait\n");
    lines.extend_from_slice(format!("{}\n", "very long ".repeat(7000)).as_bytes());
    lines.extend_from_slice(&format!("{}\n", "good ".repeat(300)).into_bytes());
    lines.extend_from_slice(b"the end");
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, &lines).unwrap();
    for from_stdin in [false, true] {
        let mut cmd = bin();
        cmd.args(["classify", "--json", "--config"]).arg(&cfg).arg("--lines");
        let o = if from_stdin {
            let mut child =
                cmd.arg("-").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), &lines).unwrap();
            child.wait_with_output().unwrap()
        } else {
            cmd.arg(&file).output().unwrap()
        };
        assert_eq!(o.status.code(), Some(3), "some inputs failed: {}", stderr(&o));
        let v = json_lines(&o);
        let name = if from_stdin { "stdin".to_string() } else { file.display().to_string() };
        let answers: Vec<&serde_json::Value> = v.iter().filter(|l| l.get("input").is_some()).collect();
        assert_eq!(answers.len(), 7, "one line each: {v:#?}");
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a["input"], format!("{name}:{}", i + 1), "{a}");
        }
        let error = |i: usize| answers[i]["error"].as_str().unwrap_or_default().to_owned();
        assert!(error(1).contains("empty"), "{}", error(1));
        assert!(error(3).contains("not UTF-8"), "{}", error(3));
        assert!(error(4).contains("longer than 65536 bytes"), "{}", error(4));
        for ok in [0, 2, 5, 6] {
            assert!(answers[ok].get("class").is_some(), "line {} answered: {}", ok + 1, answers[ok]);
        }
        // 300 words are truncated to the model's 128 tokens, and the span says how many went.
        let t = answers[5]["stages"].as_array().unwrap().iter().find(|s| s["name"] == "tokenize").unwrap().clone();
        assert_eq!(t["tokens"], 128, "{t}");
        assert_eq!(t["truncated"], 302 - 128, "{t}");
    }

    let o = bin().args(["classify", "--text", "a fine film"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("need a text cascade"), "{}", stderr(&o));
}

/// Issue 16, item 3: a cascade whose stages take different kinds is refused at load, naming both.
#[test]
fn a_cascade_of_image_and_text_stages_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mixed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[stage]]\nmodel = \"{}\"\nthreshold = 0.5\n\n[[stage]]\nmodel = \"{}\"\n",
            root().join("models/efficientnet-lite0-int8.toml").display(),
            root().join(DEVICE).display()
        ),
    )
    .unwrap();
    let o = bin().args(["classify", "--config"]).arg(&cfg).arg("photos/coffee.png").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("must take the same kind of input") && e.contains("takes image") && e.contains("takes text"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

/// Issue 16, item 4: `eval --data FILE.tsv` in both column orders reports both models and the
/// cascade; a bad label, a missing column and a bad header are errors naming the line; a TSV
/// for an image cascade is refused naming what it takes.
#[test]
fn eval_reads_a_tsv_either_way_round_and_names_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 0.9);
    let rows = [
        (1, "a gorgeous , witty , seductive movie ."),
        (0, "dull and lifeless ."),
        (1, "one of the year 's best ."),
        (0, "the plot is a mess ."),
    ];
    let a = dir.path().join("a.tsv");
    let b = dir.path().join("b.tsv");
    let mut ta = String::from("label\tsentence\n");
    let mut tb = String::from("sentence\tlabel\n");
    for (l, s) in rows {
        ta += &format!("{l}\t{s}\n");
        tb += &format!("{s}\t{}\n", if l == 1 { "positive" } else { "negative" });
    }
    std::fs::write(&a, ta).unwrap();
    std::fs::write(&b, tb).unwrap();
    let mut reports = vec![];
    for data in [&a, &b] {
        let o = bin().args(["eval", "--json", "--config"]).arg(&cfg).arg("--data").arg(data).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["n"], 4, "{r:#}");
        assert_eq!(r["models"].as_array().unwrap().len(), 2, "{r:#}");
        assert_eq!(r["payload"], "text", "{r:#}");
        assert!(r["cascade"]["top1"].as_f64().unwrap() >= 0.75, "{r:#}");
        reports.push(r);
    }
    assert_eq!(reports[0]["cascade"], reports[1]["cascade"], "the same sentences, the same figures");
    for (body, line, want) in [
        ("label\tsentence\n1\tfine\n7\tbad label\n", 3, "label 7 is out of range"),
        ("label\tsentence\n1\tfine\nno tab here\n", 3, "1 tab-separated column(s)"),
        ("label\tsentence\nsure\tfine\n", 2, "label 'sure' is neither"),
        ("file,label\n", 1, "header is 'file,label'"),
    ] {
        let bad = dir.path().join("bad.tsv");
        std::fs::write(&bad, body).unwrap();
        let o = bin().args(["eval", "--config"]).arg(&cfg).arg("--data").arg(&bad).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{body:?}");
        let e = stderr(&o);
        assert!(e.contains(&format!("{} line {line}: {want}", bad.display())), "{body:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let o = bin().args(["eval", "--data"]).arg(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("take image input") && stderr(&o).contains("folder of images"), "{}", stderr(&o));
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 16, done-when 3: a text cascade end to end over a PTY pair joined by socat, the host a
/// process of its own serving the text model over the framed link, the device `run --lines`:
/// every line answered exactly once (the unsure ones by the host, as text payloads), the bad
/// lines failed by name, one results log line each.
#[test]
fn a_text_cascade_runs_end_to_end_over_a_pty_link() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 0.99);
    let (host_end, device_end) = (dir.path().join("host-tty"), dir.path().join("device-tty"));
    let socat = Command::new("socat")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", host_end.display()))
        .arg(format!("pty,raw,echo=0,link={}", device_end.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat runs (apt-get install socat)");
    let _socat = Killed(socat);
    let start = Instant::now();
    while !(host_end.exists() && device_end.exists()) {
        assert!(start.elapsed() < Duration::from_secs(10), "socat made no PTYs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg_s = cfg.display().to_string();
    let _host = HostProc::start(&["--config", &cfg_s, "--link", &format!("serial:{}", host_end.display())], &[]);
    let reviews = std::fs::read_to_string(root().join("texts/reviews.txt")).unwrap();
    let mut lines = reviews.clone().into_bytes();
    lines.extend_from_slice(b"\n\xff\xfe\n");
    let file = dir.path().join("reviews.txt");
    std::fs::write(&file, &lines).unwrap();
    let log = dir.path().join("results.jsonl");
    let o = bin()
        .args(["run", "--json", "--config", &cfg_s, "--link", &format!("serial:{}", device_end.display())])
        .arg("--log")
        .arg(&log)
        .arg("--lines")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "two bad lines: {}", stderr(&o));
    let v = json_lines(&o);
    let answers: Vec<&serde_json::Value> = v.iter().filter(|l| l.get("input").is_some()).collect();
    let n = reviews.lines().count();
    assert_eq!(answers.len(), n + 2, "{v:#?}");
    let mut names: Vec<&str> = answers.iter().map(|a| a["input"].as_str().unwrap()).collect();
    names.dedup();
    assert_eq!(names.len(), n + 2, "each line once");
    let forwarded: Vec<&&serde_json::Value> = answers.iter().filter(|a| a["forwarded"] == true).collect();
    assert!(!forwarded.is_empty(), "at threshold 0.99 some reviews go to the host: {v:#?}");
    for a in &forwarded {
        assert_eq!(a["degraded"], false, "{a}");
        assert_eq!(a["link"]["encoding"], "text", "{a}");
    }
    assert!(answers[n]["error"].as_str().unwrap().contains("empty"));
    assert!(answers[n + 1]["error"].as_str().unwrap().contains("not UTF-8"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), n + 2, "one log line each:\n{logged}");
}
