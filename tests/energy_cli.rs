//! Energy end to end through the binary, on fake board trees: the check (constant
//! 5 W on VDD_IN gives every stage 5 W x its time), values changing under a writer thread
//! during the run, the fallback to a labeled estimate, `boards` and `bench`.

mod common;

use common::energy::*;
use common::{root, HostProc};
use std::path::Path;
use std::process::{Command, Output};

fn edgecascade(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgecascade"));
    c.args(args).current_dir(root()).env("RUST_LOG", "warn").env_remove("EDGECASCADE_SYSFS_ROOT");
    c.env_remove("EDGECASCADE_BOARD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn stages(answer: &serde_json::Value) -> &Vec<serde_json::Value> {
    answer["stages"].as_array().expect("a stages list")
}

#[test]
fn classify_on_constant_five_watts_reports_five_watts_times_each_stage() {
    let tree = tempfile::tempdir().unwrap();
    orin_nano(tree.path(), 5000, 1000);
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(
        &["classify", "--board", "jetson-orin-nano", "--sysfs-root", t, "--json", "photos/chelsea.png"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2, "one answer and the summary");
    let mut checked = 0;
    for s in stages(&lines[0]) {
        let (ms, mj) = (s["ms"].as_f64().unwrap(), s["mj"].as_f64().expect("mj"));
        assert!(s["name"].as_str().is_some());
        assert_eq!(s["source"], "ina3221:VDD_IN", "{s}");
        assert!(s["interpolated"].is_boolean() && s["mj_above_idle"].is_number(), "{s}");
        if ms > 20.0 {
            assert!((mj - 5.0 * ms).abs() <= 0.1 * 5.0 * ms, "{s}: expected 5 W x {ms} ms");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no stage longer than 20 ms: {}", lines[0]);
    let summary = &lines[1];
    assert_eq!(summary["energy_source"], "ina3221:VDD_IN");
    let mean_mj = summary["mean_mj"].as_f64().unwrap();
    let mean_ms: f64 = summary["mean_span_ms"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((mean_mj - 5.0 * mean_ms).abs() <= 0.1 * 5.0 * mean_ms, "{summary}");
}

#[test]
fn the_environment_variables_stand_for_the_flags() {
    let tree = tempfile::tempdir().unwrap();
    jetson_nano(tree.path(), [2500, 100, 900]);
    let o = edgecascade(
        &["classify", "--json", "photos/camera.png"],
        &[("EDGECASCADE_SYSFS_ROOT", tree.path()), ("EDGECASCADE_BOARD", Path::new("jetson-nano"))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    for s in stages(&lines[0]) {
        assert_eq!(s["source"], "ina3221x:POM_5V_IN", "{s}");
        let (ms, mj) = (s["ms"].as_f64().unwrap(), s["mj"].as_f64().unwrap());
        assert!((mj - 2.5 * ms).abs() <= 1e-6 * (1.0 + mj), "{s}");
    }
}

#[test]
fn values_changing_during_the_run_stay_between_their_bounds() {
    let tree = tempfile::tempdir().unwrap();
    let h = orin_nano(tree.path(), 5000, 1000);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let o = std::thread::scope(|s| {
        s.spawn(|| {
            let curr = h.join("curr1_input");
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                replace(&curr, if i.is_multiple_of(2) { "2000\n" } else { "1000\n" });
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(7));
            }
        });
        let t = tree.path().to_str().unwrap();
        let o = edgecascade(&["classify", "--board", "jetson-orin-nano", "--sysfs-root", t, "--json", "photos"], &[]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        o
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("estimate"), "the sensor must not have failed: {}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 6);
    for a in &lines[..5] {
        for s in stages(a) {
            let (ms, mj) = (s["ms"].as_f64().unwrap(), s["mj"].as_f64().unwrap());
            assert_eq!(s["source"], "ina3221:VDD_IN");
            // Between 5 W and 10 W: never garbage, never a torn read counted as something else.
            assert!(mj >= 5.0 * ms * (1.0 - 1e-9) && mj <= 10.0 * ms * (1.0 + 1e-9), "{s}");
        }
    }
}

#[test]
fn an_unreadable_sensor_warns_and_the_run_goes_on_with_an_estimate() {
    let tree = tempfile::tempdir().unwrap();
    let h = orin_nano(tree.path(), 5000, 1000);
    // Root reads anything, so a folder stands in for a file the user may not read.
    std::fs::remove_file(h.join("curr1_input")).unwrap();
    std::fs::create_dir(h.join("curr1_input")).unwrap();
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(
        &["classify", "--board", "jetson-orin-nano", "--sysfs-root", t, "--json", "photos/camera.png"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("WARN") && err.contains("hwmon3/curr1_input"), "the warning names the file: {err}");
    let lines = json_lines(&o);
    for s in stages(&lines[0]) {
        assert!(s["source"].as_str().unwrap().starts_with("estimate"), "{s}");
        assert!(s["mj"].as_f64().unwrap() > 0.0);
    }
    assert!(lines[1]["energy_source"].as_str().unwrap().starts_with("estimate"));
}

#[test]
fn text_output_shows_energy_and_its_source() {
    let tree = tempfile::tempdir().unwrap();
    orin_nano(tree.path(), 5000, 1000);
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(&["classify", "--board", "jetson-orin-nano", "--sysfs-root", t, "photos/camera.png"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().next().unwrap().contains(" mJ"), "{out}");
    assert!(out.contains("energy per input:") && out.contains("(ina3221:VDD_IN)"), "{out}");
}

#[test]
fn boards_lists_profiles_and_reads_the_detected_sensor() {
    let tree = tempfile::tempdir().unwrap();
    orin_nano(tree.path(), 5000, 1000);
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(&["boards", "--sysfs-root", t, "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let names: Vec<&str> = v["profiles"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for n in ["rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "jetson-agx-orin", "x86-rapl", "generic"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(v["board"], "jetson-orin-nano");
    assert!(v["reason"].as_str().unwrap().contains("device-tree"), "{v}");
    assert_eq!(v["sensor"]["source"], "ina3221:VDD_IN");
    assert_eq!(v["sensor"]["estimate"], false);
    assert!((v["watts"].as_f64().unwrap() - 5.0).abs() < 1e-9, "{v}");

    let text = edgecascade(&["boards", "--sysfs-root", t], &[]);
    assert!(stdout(&text).contains("live reading: 5.00 W"), "{}", stdout(&text));

    let bad = edgecascade(&["boards", "--board", "rpi3"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("no board profile named 'rpi3'") && stderr(&bad).contains("rpi5"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn bench_runs_the_protocol_and_checks_accuracy() {
    let tree = tempfile::tempdir().unwrap();
    orin_nano(tree.path(), 5000, 1000);
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(
        &[
            "bench",
            "--board",
            "jetson-orin-nano",
            "--sysfs-root",
            t,
            "--runs",
            "2",
            "--min-seconds",
            "0",
            "--min-inferences",
            "6",
            "--min-top1",
            "0.8",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["bench"], true);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert!(r["inferences"].as_u64().unwrap() >= 6, "{r}");
        let (mj, s) = (r["mj"].as_f64().unwrap(), r["seconds"].as_f64().unwrap());
        assert!((mj - 5.0 * s * 1e3).abs() <= 0.1 * 5.0 * s * 1e3, "{r}");
        assert_eq!(r["source"], "ina3221:VDD_IN");
        assert_eq!(r["top1"], 1.0, "{r}");
    }
    let per: Vec<f64> = runs.iter().map(|r| r["mj_per_inference"].as_f64().unwrap()).collect();
    let median = v["median_mj_per_inference"].as_f64().unwrap();
    assert!((median - (per[0] + per[1]) / 2.0).abs() < 1e-9, "median of two runs");
    assert_eq!(v["accuracy_ok"], true);
    let stages = v["stages"].as_array().unwrap();
    let infer0 = stages.iter().find(|s| s["name"] == "infer" && s["stage"] == 0).expect("infer of stage 0");
    assert_eq!(infer0["count"].as_u64(), Some(12));
    assert!(infer0["p95_ms"].as_f64().unwrap() >= infer0["p50_ms"].as_f64().unwrap());
    assert!(infer0["mean_mj"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_fails_when_the_accuracy_target_is_missed() {
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("photos/camera.png"), data.path().join("camera.png")).unwrap();
    // Labeled as class 0 (tench): the cascade answers 872 (tripod).
    std::fs::write(data.path().join("labels.csv"), "file,label\ncamera.png,0\n").unwrap();
    let d = data.path().to_str().unwrap();
    let o = edgecascade(
        &["bench", "--data", d, "--runs", "1", "--min-seconds", "0", "--min-inferences", "1", "--min-top1", "0.5"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("below the target"), "{}", stderr(&o));
    assert!(stdout(&o).contains("MISSES"), "{}", stdout(&o));
}

#[test]
fn bench_reports_warm_up_full_latency_memory_and_the_machine_and_warns_when_throttled() {
    let tree = tempfile::tempdir().unwrap();
    // A Pi 4 at 82.3 °C, capped at 1.5 GHz, the firmware reporting under-voltage and
    // throttling now (and since boot).
    pi4_thermal(tree.path(), 82_300, 1_500_000, "50005");
    proc_status(tree.path(), 204_800);
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(
        &[
            "bench",
            "--board",
            "rpi4",
            "--sysfs-root",
            t,
            "--runs",
            "1",
            "--min-seconds",
            "0",
            "--min-inferences",
            "3",
            "--warmup",
            "1",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // The keys other tools read are still there.
    for key in ["bench", "board", "source", "runs", "median_mj_per_inference", "latency", "stages", "top1"] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert!(v["latency"]["p95_ms"].as_f64().unwrap() >= v["latency"]["p50_ms"].as_f64().unwrap());
    // Each model: its load, first (cold) inference and warm-up.
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{v}");
    for (i, m) in models.iter().enumerate() {
        assert_eq!(m["stage"], i);
        assert!(m["load_ms"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["first_inference_ms"].as_f64().unwrap() > 0.0, "{m}");
        assert_eq!(m["warmup"]["count"], 1, "{m}");
        assert!(m["warmup"]["ms"].as_f64().unwrap() > 0.0, "{m}");
    }
    // Latency in full, for the whole input and each span, and the warm-up left out.
    let l = &v["latency_ms"];
    let f = |x: &serde_json::Value, k: &str| x[k].as_f64().unwrap_or_else(|| panic!("{k} in {x}"));
    assert!(f(l, "min") <= f(l, "p50") && f(l, "p50") <= f(l, "p90") && f(l, "p90") <= f(l, "p99"), "{l}");
    assert!(f(l, "p99") <= f(l, "max") && f(l, "min") <= f(l, "mean") && f(l, "mean") <= f(l, "max"), "{l}");
    assert!(f(l, "std") >= 0.0 && f(l, "min") > 0.0, "{l}");
    assert!((f(l, "p50") - f(&v["latency"], "p50_ms")).abs() < 1e-9, "{v}");
    let infer0 = v["stages"].as_array().unwrap().iter().find(|s| s["name"] == "infer" && s["stage"] == 0).unwrap();
    assert_eq!(infer0["count"], 3, "the warm-up is not counted: {infer0}");
    assert!(f(&infer0["latency_ms"], "max") >= f(infer0, "p95_ms"), "{infer0}");
    // Peak memory read through the re-rooted /proc.
    assert_eq!(v["peak_rss_mb"], 200.0);
    assert_eq!(v["peak_rss_source"], "/proc/self/status VmHWM");
    // The machine, before and after, as the fake tree says.
    for when in ["before", "after"] {
        let s = &v["thermal"][when];
        assert_eq!(s["temperatures"][0]["type"], "cpu-thermal", "{s}");
        assert_eq!(s["temperatures"][0]["celsius"], 82.3, "{s}");
        assert_eq!(s["cpufreq"].as_array().unwrap().len(), 4, "{s}");
        assert_eq!((f(&s["cpufreq"][0], "cur_mhz"), f(&s["cpufreq"][0], "max_mhz")), (1500.0, 1800.0));
        assert_eq!(s["throttled"]["raw"], "0x50005", "{s}");
        assert_eq!(s["throttled"]["now"], serde_json::json!(["under-voltage", "throttled"]));
        assert_eq!(s["not_exposed"], serde_json::json!([]), "{s}");
    }
    assert_eq!(v["runs"][0]["thermal"]["after"]["throttled"]["raw"], "0x50005");
    // Throttled: the firmware's bits now, and the board's 80 °C passed.
    assert_eq!(v["throttled"], true);
    assert_eq!(v["runs"][0]["throttled"], true);
    let warnings: Vec<&str> = v["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("run 1: the firmware reports under-voltage, throttled now"), "{warnings:?}");
    assert!(warnings[1].contains("throttling temperature 80 °C"), "{warnings:?}");
    assert!(stderr(&o).contains("under-voltage, throttled now"), "a warning on stderr: {}", stderr(&o));
}

#[test]
fn bench_text_says_what_the_machine_does_not_expose() {
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path().to_str().unwrap();
    let o = edgecascade(
        &[
            "bench",
            "--board",
            "generic",
            "--sysfs-root",
            t,
            "--runs",
            "1",
            "--min-seconds",
            "0",
            "--min-inferences",
            "1",
            "--warmup",
            "0",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "(stage 1): loaded in ",
        "warm-up 0 inferences",
        "machine before run 1: thermal zones, cpufreq, get_throttled not exposed",
        "machine after run 1: thermal zones, cpufreq, get_throttled not exposed",
        "MiB resident (getrusage ru_maxrss)",
        "p90 ms",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(!text.contains("WARNING"), "{text}");
}

#[test]
fn host_with_a_sensor_reports_its_energy_per_request() {
    let tree = tempfile::tempdir().unwrap();
    orin_nano(tree.path(), 5000, 1000);
    let t = tree.path().to_str().unwrap();
    let mut host =
        HostProc::start(&["--listen", "tcp:127.0.0.1:0", "--board", "jetson-orin-nano", "--sysfs-root", t], &[]);
    let addr = format!("tcp:{}", host.tcp);
    let o = edgecascade(&["run", "--json", "--threshold", "1", "--link", &addr, "photos/coffee.png"], &[]);
    host.kill();
    assert!(o.status.success(), "{}", stderr(&o));
    let a = &json_lines(&o)[0];
    let (ms, mj) = (a["link"]["host_ms"].as_f64().unwrap(), a["link"]["host_mj"].as_f64().expect("host_mj"));
    assert!(ms > 20.0, "{a}");
    assert!((mj - 5.0 * ms).abs() <= 0.1 * 5.0 * ms, "host: {mj} mJ over {ms} ms at 5 W");
}

#[test]
fn boards_lists_an_ina226_and_reads_it_live_with_meter() {
    let tree = tempfile::tempdir().unwrap();
    rpi4_with_ina226(tree.path(), 5100, 600);
    let t = tree.path().to_str().unwrap();
    let spec = "ina226:/sys/class/hwmon/hwmon2";
    let o = edgecascade(&["boards", "--sysfs-root", t, "--meter", spec, "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["board"], "rpi4", "{v}");
    assert!(v["sensor"]["source"].as_str().unwrap().starts_with("meter: INA226 on /sys/class/hwmon/hwmon2"), "{v}");
    assert!((v["watts"].as_f64().unwrap() - 3.06).abs() < 1e-9, "{v}");
    assert_eq!(v["meters"][0]["spec"], spec, "{v}");
    let o = edgecascade(&["boards", "--sysfs-root", t], &[]);
    assert!(
        stdout(&o).contains("external meters found (use with --meter):") && stdout(&o).contains(spec),
        "{}",
        stdout(&o)
    );
    // A meter asked for that cannot be read is said so; the live reading is then the estimate's.
    let o = edgecascade(&["boards", "--sysfs-root", t, "--meter", "ina226:/sys/class/hwmon/hwmon7"], &[]);
    assert!(stdout(&o).contains("hwmon7") && stdout(&o).contains("does not exist"), "{}", stdout(&o));
}
