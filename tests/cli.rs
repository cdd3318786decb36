//! The `edgecascade` binary end to end, on the shipped models and demo photos, and on each
//! kind of bad input: every failure must name what was wrong, exit non-zero and not panic.

mod common;

use common::root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgecascade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgecascade"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_panic(o: &Output) {
    assert!(!stderr(o).contains("panicked"), "panic: {}", stderr(o));
}

/// The demo photos and their labels, from photos/labels.csv.
fn photo_labels() -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(root().join("photos/labels.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (f, c) = l.rsplit_once(',').unwrap();
            (f.to_owned(), c.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn classify_photos_json_answers_every_photo_correctly() {
    let o = edgecascade(&["classify", "--json", "photos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let labels = photo_labels();
    assert_eq!(lines.len(), labels.len() + 1, "one line per photo and a summary");
    for (file, label) in &labels {
        let a = lines
            .iter()
            .find(|v| v["input"].as_str().is_some_and(|i| i.ends_with(file.as_str())))
            .unwrap_or_else(|| panic!("no answer for {file}"));
        assert_eq!(a["class"].as_u64(), Some(*label as u64), "{file}: {a}");
        assert!(a["label"].as_str().is_some_and(|s| !s.is_empty()));
        let stage = a["stage"].as_u64().unwrap();
        assert_eq!(a["forwarded"].as_bool(), Some(stage > 0));
        let c = a["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        // A first-stage answer must have cleared the threshold; a forwarded one must not have.
        let names: Vec<&str> = a["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names[0], "decode");
        assert!(names.contains(&"infer"));
        assert_eq!(names.iter().filter(|n| **n == "infer").count() as u64, stage + 1);
        assert_eq!(names.iter().filter(|n| **n == "decide").count() as u64, stage + 1, "{names:?}");
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"], true);
    assert_eq!(summary["inputs"].as_u64(), Some(labels.len() as u64));
    assert_eq!(summary["failed"].as_u64(), Some(0));
}

#[test]
fn threshold_flag_moves_inputs_between_stages() {
    let all_local = edgecascade(&["classify", "--json", "--threshold", "0", "photos"]);
    let all_forwarded = edgecascade(&["classify", "--json", "--threshold", "1", "photos"]);
    let summary =
        |o: &Output| -> serde_json::Value { serde_json::from_str(stdout(o).lines().last().unwrap()).unwrap() };
    let n = photo_labels().len() as u64;
    assert_eq!(summary(&all_local)["forwarded_count"].as_u64(), Some(0));
    assert_eq!(summary(&all_forwarded)["forwarded_count"].as_u64(), Some(n));
    // Entropy: lower is surer, so threshold 1 keeps everything on the first stage.
    let entropy = edgecascade(&["classify", "--json", "--metric", "entropy", "--threshold", "1", "photos"]);
    assert_eq!(summary(&entropy)["forwarded_count"].as_u64(), Some(0));
}

#[test]
fn eval_on_the_labeled_photos() {
    let o = edgecascade(&["eval", "--json", "--data", "photos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let n = photo_labels().len() as u64;
    assert_eq!(v["n"].as_u64(), Some(n));
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "efficientnet-lite0-int8");
    assert_eq!(models[1]["name"], "efficientnet-lite2-fp32");
    // tract's cost model: Lite0 about 385 M MACs, Lite2 about 860 M.
    let macs0 = models[0]["macs"].as_f64().unwrap();
    let macs2 = models[1]["macs"].as_f64().unwrap();
    assert!((350e6..420e6).contains(&macs0), "{macs0}");
    assert!((800e6..920e6).contains(&macs2), "{macs2}");
    let c = &v["cascade"];
    let f = c["forwarded"].as_f64().unwrap();
    let macs = c["macs_per_input"].as_f64().unwrap();
    assert!((macs - (macs0 + f * macs2)).abs() < 1.0, "{macs} vs {f}");
    assert!(c["top1"].as_f64().unwrap() >= models[0]["top1"].as_f64().unwrap());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A one-stage config over a manifest written into `dir`, pointing at `onnx`.
fn one_stage(dir: &Path, onnx: &Path, size: u32) -> PathBuf {
    let classes = root().join("models/imagenet-classes.txt");
    let manifest = format!(
        "name = \"m\"\nonnx = \"{}\"\nclasses = \"{}\"\n[input]\nsize = {size}\nlayout = \"nchw\"\ncrop_fraction = 0.875\nresize = \"bicubic\"\nmean = [127.0, 127.0, 127.0]\nstd = [128.0, 128.0, 128.0]\n[output]\nkind = \"logits\"\n",
        onnx.display(),
        classes.display()
    );
    write(dir, "m.toml", manifest.as_bytes());
    write(dir, "cascade.toml", b"[[stage]]\nmodel = \"m.toml\"\n")
}

#[test]
fn missing_and_non_onnx_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let photo = root().join("photos/chelsea.png");
    let photo = photo.to_str().unwrap();
    let cfg = one_stage(dir.path(), &dir.path().join("absent.onnx"), 224);
    let o = edgecascade(&["classify", "--config", cfg.to_str().unwrap(), photo]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("absent.onnx") && stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let junk = write(dir.path(), "junk.onnx", b"this is not a protobuf at all \xff\xff\xff");
    let cfg = one_stage(dir.path(), &junk, 224);
    let o = edgecascade(&["classify", "--config", cfg.to_str().unwrap(), photo]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("junk.onnx") && stderr(&o).contains("not a valid ONNX model"), "{}", stderr(&o));
    assert_no_panic(&o);
}

#[test]
fn manifest_that_disagrees_with_the_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = root().join("models/efficientnet-lite0-fp32.onnx");
    let cfg = one_stage(dir.path(), &onnx, 260);
    let o = edgecascade(&["classify", "--config", cfg.to_str().unwrap(), "photos/chelsea.png"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("efficientnet-lite0-fp32.onnx") && e.contains("224") && e.contains("260"), "{e}");
    assert_no_panic(&o);
}

#[test]
fn one_bad_image_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("photos/chelsea.png"), dir.path().join("a.png")).unwrap();
    write(dir.path(), "b.jpg", b"\xff\xd8\xff\xe0 truncated jpeg");
    std::fs::copy(root().join("photos/coffee.png"), dir.path().join("c.png")).unwrap();
    let o = edgecascade(&["classify", "--json", "--threshold", "0", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["class"].is_u64() && lines[2]["class"].is_u64());
    assert!(lines[1]["input"].as_str().unwrap().ends_with("b.jpg"));
    assert!(lines[1]["error"].as_str().unwrap().contains("decode"), "{}", lines[1]);
    assert_eq!(lines[3]["failed"].as_u64(), Some(1));
    assert_eq!(lines[3]["answered"].as_u64(), Some(2));
    assert_no_panic(&o);
}

#[test]
fn folder_without_images_and_bad_labels_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", b"no images here");
    let o = edgecascade(&["classify", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no images") && stderr(&o).contains(dir.path().to_str().unwrap()), "{}", stderr(&o));

    std::fs::copy(root().join("photos/chelsea.png"), dir.path().join("a.png")).unwrap();
    write(dir.path(), "labels.csv", b"file,label\na.png,281\na.png,cat\n");
    let o = edgecascade(&["eval", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("labels.csv line 3") && e.contains("'cat'"), "{e}");
    assert_no_panic(&o);
}

#[test]
fn bad_config_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", b"[[stage]]\nmodel = \"x.toml\"\nthreshold = 0.5\n");
    let o = edgecascade(&["classify", "--config", cfg.to_str().unwrap(), "photos"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("c.toml") && stderr(&o).contains("last"), "{}", stderr(&o));
    // A threshold outside [0, 1] is a bad command line (exit 2, issue 19), no longer exit 1.
    let o = edgecascade(&["classify", "--threshold", "1.5", "photos"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("1.5"), "{}", stderr(&o));
    let o = edgecascade(&["classify", "--metric", "confidence", "photos"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("confidence"), "{}", stderr(&o));
}

/// Issue 18, item 1: a JPEG cut in half, or with bytes corrupted mid-file, is an error naming
/// the damage (exit 3), not a confident answer (before: exit 0, a wrong class, no warning);
/// with --accept-damaged it is answered and marked `damaged`. The other inputs are answered.
#[test]
fn damaged_jpegs_are_errors_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(root().join("photos/china.jpg")).unwrap();
    write(dir.path(), "cut.jpg", &whole[..whole.len() / 2]);
    let mut corrupt = whole.clone();
    for i in (whole.len() / 3..whole.len() / 3 + 200).step_by(7) {
        corrupt[i] ^= 0x5a;
    }
    write(dir.path(), "corrupt.jpg", &corrupt);
    write(dir.path(), "whole.jpg", &whole);
    let d = dir.path().to_str().unwrap();
    let o = edgecascade(&["classify", "--json", d]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by = |name: &str| lines.iter().find(|l| l["input"].as_str().is_some_and(|i| i.ends_with(name))).unwrap();
    assert!(
        by("cut.jpg")["error"].as_str().unwrap().contains("damaged image: Premature end of JPEG file"),
        "{lines:#?}"
    );
    assert!(by("corrupt.jpg")["error"].as_str().unwrap().contains("damaged image: Corrupt JPEG data"), "{lines:#?}");
    assert!(by("whole.jpg")["class"].is_u64() && by("whole.jpg").get("damaged").is_none());
    let o = edgecascade(&["classify", "--json", "--accept-damaged", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by = |name: &str| lines.iter().find(|l| l["input"].as_str().is_some_and(|i| i.ends_with(name))).unwrap();
    assert!(by("cut.jpg")["damaged"].as_str().unwrap().contains("Premature end"), "{lines:#?}");
    assert!(by("cut.jpg")["class"].is_u64());
}

/// Issue 18, item 5: a host listening beyond loopback without a token says so (it said
/// nothing); with a token, or on loopback, it does not.
#[test]
fn a_host_open_to_the_network_without_a_token_warns() {
    let serve = |args: &[&str]| -> String {
        let (ready, err) = host_ready(args);
        assert!(ready.contains("serving"), "{ready}");
        err
    };
    for flag in ["--listen", "--oip-listen"] {
        let any = if flag == "--listen" { "tcp:0.0.0.0:0" } else { "0.0.0.0:0" };
        let local = if flag == "--listen" { "tcp:127.0.0.1:0" } else { "127.0.0.1:0" };
        let err = serve(&[flag, any]);
        assert!(err.contains("beyond loopback without a token") && err.contains("--token"), "{flag}: {err}");
        assert!(!serve(&[flag, any, "--token", "s3cret"]).contains("without a token"));
        assert!(!serve(&[flag, local]).contains("without a token"));
    }
}

/// Issue 19, CLI: `--version` (and `-V`) says the version, the git commit built from (or
/// "unknown" outside a checkout) and the target triple.
#[test]
fn version_names_the_commit_and_the_target() {
    for flag in ["--version", "-V"] {
        let o = edgecascade(&[flag]);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o).trim().to_owned();
        let rest = line
            .strip_prefix(&format!("edgecascade {} (", env!("CARGO_PKG_VERSION")))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line}"));
        let (commit, target) = rest.split_once(", ").unwrap_or_else(|| panic!("{line}"));
        assert!(commit == "unknown" || (commit.len() >= 4 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{line}");
        if root().join(".git").exists() {
            let git = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root()).output();
            if let Some(g) = git.ok().filter(|g| g.status.success()) {
                assert_eq!(commit, String::from_utf8_lossy(&g.stdout).trim(), "{line}");
            }
        }
        let arch = if std::env::consts::ARCH == "arm" { "arm" } else { std::env::consts::ARCH };
        assert!(target.starts_with(arch) && target.contains(std::env::consts::OS), "{line}");
        assert!(target.split('-').count() >= 3 && !target.contains(' '), "{line}");
    }
}

/// Issue 19, CLI: `--quiet` leaves only warnings and errors on standard error, `-v` adds debug
/// messages; RUST_LOG, when set, decides instead.
#[test]
fn quiet_and_verbose_set_the_log_level_unless_rust_log_does() {
    let run = |flags: &[&str], rust_log: Option<&str>| -> String {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgecascade"));
        c.args(flags).args(["classify", "--threshold", "0", "photos/chelsea.png"]).current_dir(root());
        match rust_log {
            Some(v) => c.env("RUST_LOG", v),
            None => c.env_remove("RUST_LOG"),
        };
        let o = c.output().unwrap();
        assert!(o.status.success(), "{flags:?}: {}", stderr(&o));
        stderr(&o)
    };
    let default = run(&[], None);
    assert!(default.contains("INFO") && !default.contains("DEBUG"), "{default}");
    let quiet = run(&["--quiet"], None);
    assert!(!quiet.contains("INFO") && !quiet.contains("DEBUG"), "{quiet}");
    let verbose = run(&["-v"], None);
    assert!(verbose.contains("DEBUG") && !verbose.contains("TRACE"), "{verbose}");
    let overridden = run(&["-q"], Some("info"));
    assert!(overridden.contains("INFO"), "RUST_LOG wins: {overridden}");
}

/// Issue 19, CLI: an error names its cause once. Before, a missing file said "No such file or
/// directory (os error 2): No such file or directory (os error 2)".
#[test]
fn errors_name_their_cause_once() {
    for args in [
        &["classify", "/nonexistent.jpg"][..],
        &["eval", "--data", "/nonexistent"],
        &["classify", "--config", "/nonexistent.toml", "photos"],
        &["report", "/nonexistent.jsonl"],
    ] {
        let o = edgecascade(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("/nonexistent"), "{args:?}: {e}");
        assert!(e.matches("(os error 2)").count() <= 1, "{args:?}: {e}");
        assert!(e.matches("No such file").count() <= 1, "{args:?}: {e}");
    }
}

/// Issue 19, CLI: a bad command line exits 2 before anything runs, whether clap finds it (a
/// range, a flag that needs another) or the command does after parsing. Before, `--threshold
/// 2.0` and `run` without inputs exited 1, and `--threads 0`, `--tries 0` and `--max-inputs`
/// without `--watch` were accepted.
#[test]
fn bad_command_lines_exit_2() {
    // Nothing listens on port 1: a command line that got as far as the link would exit 1.
    let link = ["--link", "tcp:127.0.0.1:1"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["classify", "--threshold", "2.0", "photos/chelsea.png"], "2.0"),
        (vec!["classify", "--threshold", "-0.1", "photos/chelsea.png"], "-0.1"),
        ([&["run"][..], &link].concat(), "--watch"),
        (vec!["classify", "--threads", "0", "photos/chelsea.png"], "--threads"),
        (vec!["eval", "--threads", "0", "--data", "photos"], "--threads"),
        ([&["run", "--tries", "0"][..], &link, &["photos"]].concat(), "--tries"),
        ([&["run", "--max-inputs", "3"][..], &link, &["photos"]].concat(), "--max-inputs"),
        ([&["run", "--idle-exit", "3"][..], &link, &["photos"]].concat(), "--idle-exit"),
        ([&["run", "--reply-timeout-ms", "0"][..], &link, &["photos"]].concat(), "--reply-timeout-ms"),
        ([&["run", "--encoding", "png"][..], &link, &["photos"]].concat(), "png"),
        ([&["run"][..], &link, &["photos", "-"]].concat(), "`-`"),
        (vec!["bench", "--min-top1", "1.5"], "1.5"),
        (vec!["host", "--listen", "serial:/dev/ttyUSB0"], "--listen"),
        (vec!["host", "--link", "tcp:127.0.0.1:7000"], "--listen"),
        (vec!["host", "--listen", "0", "--max-devices", "0"], "--max-devices"),
        (vec!["classify", "--quiet", "--verbose", "photos/chelsea.png"], "--verbose"),
    ];
    for (args, named) in &cases {
        let o = edgecascade(args);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{args:?} should name {named}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}: nothing runs: {}", stdout(&o));
    }
}

/// Issue 19, CLI: `host` without anything to serve names each way to serve (it named --link
/// only).
#[test]
fn host_without_a_link_names_all_three_options() {
    let o = edgecascade(&["host"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for flag in ["--link", "--listen", "--oip-listen"] {
        assert!(stderr(&o).contains(flag), "{flag}: {}", stderr(&o));
    }
}

/// Issue 19, CLI: `--listen` takes a bare port as `--oip-listen` does, listening on loopback
/// (the README promised it; only `--oip-listen` accepted one).
#[test]
fn host_listen_takes_a_bare_port_on_loopback() {
    let (ready, err) = host_ready(&["--listen", "0"]);
    assert!(ready.contains("serving") && ready.contains("on tcp:127.0.0.1:"), "{ready}{err}");
}

/// Starts `host ARGS`, reads its first ready line, stops it: the line and its standard error.
fn host_ready(args: &[&str]) -> (String, String) {
    use std::io::BufRead;
    let mut child = common::bin()
        .arg("host")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    (ready, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The option and argument entries of a clap help text, each with its help (empty if none):
/// an entry starts two to six spaces in (six: a long option without a short one) with `-`, `<`
/// or `[`; its help follows two or more spaces later on the same line, or on the lines below
/// indented deeper.
fn help_entries(help: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut in_section = false;
    for line in help.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            // Options:, Arguments: or a heading of their own; not Commands: (checked apart).
            in_section = line.ends_with(':') && !line.starts_with("Commands");
            continue;
        }
        if !in_section {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if (2..=6).contains(&indent) && text.starts_with(['-', '<', '[']) {
            let (spec, help) = text.split_once("  ").unwrap_or((text, ""));
            entries.push((spec.trim().to_owned(), help.trim().to_owned()));
        } else if indent > 2 && !text.is_empty() {
            if let Some(last) = entries.last_mut() {
                last.1 = format!("{} {text}", last.1).trim().to_owned();
            }
        }
    }
    entries
}

/// The help of an entry without clap's own additions (default, possible values, environment).
fn own_help(help: &str) -> String {
    let mut h = help.to_owned();
    for marker in ["[default:", "[possible values:", "[env:", "[aliases:", "[short aliases:"] {
        while let Some(i) = h.find(marker) {
            let end = h[i..].find(']').map_or(h.len(), |j| i + j + 1);
            h.replace_range(i..end, "");
        }
    }
    h.trim().to_owned()
}

/// Issue 19, CLI: every subcommand, option and argument has help text, in `-h` and `--help`,
/// and every option with a fixed set of values lists them. Before, `--json`, `calibrate
/// --jobs` and `eval` had none and `--metric` did not list its values.
#[test]
fn every_subcommand_and_option_has_help_text() {
    let top = edgecascade(&["--help"]);
    assert!(top.status.success());
    let top = stdout(&top);
    let commands: Vec<(String, String)> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.len() - l.trim_start().len() == 2)
        .map(|l| {
            let (name, help) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (name.to_owned(), help.trim().to_owned())
        })
        .filter(|(name, _)| name != "help")
        .collect();
    let names: Vec<&str> = commands.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["classify", "demo", "host", "run", "calibrate", "report", "boards", "bench", "eval"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    for (name, help) in &commands {
        assert!(!help.is_empty(), "subcommand {name} has no help: {top}");
    }
    let mut seen = 0;
    for args in std::iter::once(vec![]).chain(names.iter().map(|n| vec![*n])) {
        for flag in ["-h", "--help"] {
            let o = edgecascade(&[&args[..], &[flag]].concat());
            assert!(o.status.success(), "{args:?} {flag}: {}", stderr(&o));
            let text = stdout(&o);
            let entries = help_entries(&text);
            assert!(entries.iter().any(|(s, _)| s.contains("--help")), "{args:?} {flag}: {text}");
            for (spec, help) in &entries {
                assert!(!own_help(help).is_empty(), "{args:?} {flag}: `{spec}` has no help text:\n{text}");
                seen += 1;
            }
            if args == ["classify"] || args == ["run"] {
                let (_, metric) = entries.iter().find(|(s, _)| s.starts_with("--metric")).expect("--metric");
                for m in ["max-softmax", "margin", "entropy"] {
                    assert!(metric.contains(m), "--metric should list {m}: {metric}");
                }
                let (_, qdq) = entries.iter().find(|(s, _)| s.starts_with("--qdq")).expect("--qdq");
                assert!(qdq.contains("int8") && qdq.contains("float"), "{qdq}");
            }
            if args == ["run"] {
                let (_, enc) = entries.iter().find(|(s, _)| s.starts_with("--encoding")).expect("--encoding");
                for e in ["crop-jpeg", "original", "crop-raw"] {
                    assert!(enc.contains(e), "--encoding should list {e}: {enc}");
                }
            }
        }
    }
    assert!(seen > 100, "only {seen} entries found: the help's format changed?");
}
