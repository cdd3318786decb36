//! The bench statistics on known samples, and the protocol in-process over scripted models
//! (no model files loaded, no inference) with a scripted machine whose state changes during a
//! run.

use super::*;
use crate::board::{Boards, SysRoot};
use crate::config::CascadeConfig;
use crate::machine::state::{CpuFreq, Throttled, Zone};
use crate::machine::PeakRss;
use crate::testing;

#[test]
fn median_and_percentiles() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(median(&[]), 0.0);
    let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
    assert_eq!(percentile(&v, 50.0), 50.0);
    assert_eq!(percentile(&v, 95.0), 95.0);
    assert_eq!(percentile(&[7.0], 95.0), 7.0);
    assert_eq!(percentile(&[1.0, 2.0], 0.0), 1.0);
}

#[test]
fn summary_of_known_samples() {
    // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, sample variance 32/7.
    let s = summary(&[9.0, 2.0, 4.0, 4.0, 5.0, 4.0, 7.0, 5.0]);
    assert_eq!((s.mean, s.min, s.max), (5.0, 2.0, 9.0));
    assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{}", s.std);
    // Nearest rank over 8 values: p50 the 4th (4), p90 the 8th (ceil 7.2), p99 the 8th.
    assert_eq!((s.p50, s.p90, s.p99), (4.0, 9.0, 9.0));
    // 1..=10: p90 is the 9th value, p99 the 10th, p50 the 5th.
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    let s = summary(&v);
    assert_eq!((s.p50, s.p90, s.p99, s.mean), (5.0, 9.0, 10.0, 5.5));
    assert!((s.std - (110.0f64 / 12.0).sqrt()).abs() < 1e-12, "{}", s.std);
    // 1..=1000: p99 the 990th.
    let v: Vec<f64> = (1..=1000).map(f64::from).collect();
    assert_eq!(summary(&v).p99, 990.0);
    // One value: no spread. None: zeros. Non-finite values are left out.
    assert_eq!(summary(&[3.5]), Summary { mean: 3.5, std: 0.0, min: 3.5, max: 3.5, p50: 3.5, p90: 3.5, p99: 3.5 });
    assert_eq!(summary(&[]), Summary::default());
    assert_eq!(summary(&[f64::NAN, 1.0, f64::INFINITY, 3.0]).mean, 2.0);
}

/// Snapshots in turn (the last again once they run out), and a fixed peak.
struct ScriptedMachine(Vec<Snapshot>, usize);

impl Probe for ScriptedMachine {
    fn snapshot(&mut self) -> Snapshot {
        let s = self.0[self.1.min(self.0.len() - 1)].clone();
        self.1 += 1;
        s
    }

    fn peak_rss(&mut self) -> Option<PeakRss> {
        Some(PeakRss { mib: 42.0, source: "scripted" })
    }
}

fn pi(celsius: f64, mhz: f64, throttled: u32) -> Snapshot {
    Snapshot {
        temperatures: vec![Zone {
            zone: "thermal_zone0".into(),
            kind: Some("cpu-thermal".into()),
            celsius: Some(celsius),
        }],
        cpufreq: (0..4).map(|cpu| CpuFreq { cpu, cur_mhz: Some(mhz), max_mhz: Some(1800.0) }).collect(),
        throttled: Some(Throttled::from_bits(throttled)),
        ..Snapshot::default()
    }
}

#[test]
fn warm_up_is_left_out_and_a_run_that_throttled_says_so() {
    const SMALL: &str = "efficientnet-lite0-int8";
    const LARGE: &str = "efficientnet-lite2-fp32";
    let sure = testing::solid(64, 48, [200, 40, 40]);
    let unsure = testing::solid(64, 48, [40, 40, 200]);
    let (small, large) =
        (testing::manifest(SMALL).image().unwrap().clone(), testing::manifest(LARGE).image().unwrap().clone());
    let mut models = vec![
        testing::scripted_model(
            SMALL,
            vec![
                (preprocess::to_tensor(&sure, &small), testing::logits(1000, 5, 9.0)),
                (preprocess::to_tensor(&unsure, &small), vec![0.0; 1000]),
            ],
        ),
        testing::scripted_model(LARGE, vec![(preprocess::to_tensor(&unsure, &large), testing::logits(1000, 9, 9.0))]),
    ];
    models[0].load_ms = 12.5;
    let config = CascadeConfig::load(&testing::root().join("cascade.toml")).unwrap();
    let mut pipeline = Pipeline::assembled(config, models, None);
    let inputs = [("sure", &sure, 5), ("unsure", &unsure, 9)].map(|(name, img, label)| BenchInput {
        name: name.into(),
        bytes: testing::png(img),
        label: Some(label),
    });
    let empty = tempfile::tempdir().unwrap();
    let board = Boards::builtin().get("rpi4").unwrap().clone();
    let energy = EnergyContext::start(&board, &SysRoot::at(empty.path()));
    // Run 1 stays cool; during run 2 the firmware caps the clock at 82 °C.
    let mut machine = ScriptedMachine(
        vec![pi(55.0, 1800.0, 0), pi(60.0, 1800.0, 0), pi(60.0, 1800.0, 0), pi(82.0, 1500.0, 0xe0008)],
        0,
    );
    let o = BenchOptions {
        runs: 2,
        min_duration: Duration::ZERO,
        min_inferences: 4,
        warmup: 2,
        limits: machine::Limits { freq_floor: 0.9, soft_limit_c: Some(80.0) },
        ..BenchOptions::default()
    };
    let r = run(&mut pipeline, &energy, &mut machine, &inputs, &o, &mut |_| {});
    assert_eq!(r.inferences, 8);
    assert_eq!(r.top1, Some(1.0));
    // Each model: its first inference and two more, none of them in the statistics.
    assert_eq!(r.models.len(), 2);
    assert_eq!((r.models[0].name.as_str(), r.models[0].stage, r.models[0].load_ms), (SMALL, 0, 12.5));
    assert!(r.models[0].first_inference_ms.is_some());
    assert_eq!(r.models[0].warmup.count, 2);
    // The large model answers only the unsure image: the sure one fails in it (twice of its
    // three warm-up inferences), and failures are not counted.
    assert!(r.models[1].first_inference_ms.is_some());
    assert_eq!(r.models[1].warmup.count, 0);
    let infer0 = r.stages.iter().find(|s| s.name == "infer" && s.stage == Some(0)).unwrap();
    assert_eq!(infer0.count, 8, "only the runs' inferences");
    assert!(infer0.latency_ms.min <= infer0.latency_ms.p50 && infer0.latency_ms.p50 <= infer0.latency_ms.max);
    assert_eq!(infer0.latency_ms.p50, infer0.latency.p50_ms);
    assert!(r.latency_ms.max >= r.latency_ms.p99 && r.latency_ms.p99 >= r.latency_ms.p90);
    assert!((r.latency_ms.mean - r.latency.mean_ms).abs() < 1e-9);
    // The machine: run 1 clean, run 2 throttled, the report's before and after the ends.
    assert!(!r.runs[0].throttled && r.runs[0].warnings.is_empty(), "{:?}", r.runs[0].warnings);
    assert!(r.runs[1].throttled);
    assert_eq!(r.runs[1].thermal.after.hottest(), Some(82.0));
    assert!(r.throttled);
    assert_eq!(r.warnings.len(), 4, "{:#?}", r.warnings);
    assert!(r.warnings.iter().all(|w| w.starts_with("run 2: ")), "{:#?}", r.warnings);
    assert_eq!((r.thermal.before.hottest(), r.thermal.after.hottest()), (Some(55.0), Some(82.0)));
    assert_eq!((r.peak_rss_mb, r.peak_rss_source.as_deref()), (Some(42.0), Some("scripted")));
    let text = report_text(&r);
    for needle in [
        "efficientnet-lite0-int8 (stage 1): loaded in 12 ms; first inference ",
        "warm-up 2 inferences in ",
        "machine before run 1: cpu-thermal 55.0 °C; CPU 1800 MHz (max 1800 MHz); get_throttled 0x0",
        "machine after run 2: cpu-thermal 82.0 °C; CPU 1500 MHz",
        "WARNING: the CPU throttled: run 2: the CPU frequency fell from 1800 MHz to 1500 MHz",
        "peak memory: 42.0 MiB resident (scripted)",
        "p90 ms",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    let json = serde_json::to_value(&r).unwrap();
    for key in ["latency", "latency_ms", "models", "peak_rss_mb", "thermal", "throttled", "warnings", "stages"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    assert_eq!(json["thermal"]["after"]["throttled"]["raw"], "0xe0008");
    assert_eq!(json["runs"][1]["thermal"]["after"]["temperatures"][0]["type"], "cpu-thermal");
}
