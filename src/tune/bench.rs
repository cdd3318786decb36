//! `edgecascade bench`, after MLPerf Tiny's energy protocol: several runs (5 by default),
//! each lasting at least a minimum time and a minimum number of inferences, cycling over a
//! labeled set held in memory, after each model's load, first (cold) inference and warm-up,
//! which the statistics leave out. Reports the median energy per inference over the runs;
//! latency per span and per inference (mean, standard deviation, min, max, nearest-rank
//! percentiles); the top-1 accuracy, checked against a target when one is given; the process's
//! peak memory; and the machine's state before and after each run (temperatures, CPU
//! frequency, the firmware's throttling flags, through `machine::Probe`), with a warning when
//! the CPU throttled. The statistics are pure functions.

use crate::energy::EnergyContext;
use crate::machine::{self, Probe, Snapshot};
use crate::model::{preprocess, Model};
use crate::run::pipeline::Pipeline;
use crate::run::spans::Spans;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The protocol's knobs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub runs: usize,
    pub min_duration: Duration,
    pub min_inferences: usize,
    /// Top-1 the cascade must reach on the labeled inputs.
    pub min_top1: Option<f64>,
    /// Warm-up inferences per model after its first (cold) one, before the runs.
    pub warmup: usize,
    /// What counts as throttling between the machine's state before and after a run.
    pub limits: machine::Limits,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            runs: 5,
            min_duration: Duration::from_secs(10),
            min_inferences: 10,
            min_top1: None,
            warmup: 3,
            limits: machine::Limits::default(),
        }
    }
}

/// One input, read once before the runs.
#[derive(Clone, Debug)]
pub struct BenchInput {
    pub name: String,
    pub bytes: Vec<u8>,
    pub label: Option<usize>,
}

/// One run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run: usize,
    /// Inferences answered (`inferences` - `failed`).
    pub n: usize,
    pub inferences: usize,
    pub failed: usize,
    pub seconds: f64,
    /// Energy over the whole run, in millijoules.
    pub mj: f64,
    pub mj_per_inference: f64,
    pub mj_above_idle_per_inference: f64,
    /// Where the energy figures came from (`source`, its first name, is the same).
    pub energy_source: String,
    pub source: String,
    pub top1: Option<f64>,
    /// The machine's state just before and just after the run (outside its timed window).
    pub thermal: Thermal,
    /// Whether the CPU throttled during the run (`warnings` says why).
    pub throttled: bool,
    pub warnings: Vec<String>,
}

/// The machine's state before and after.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Thermal {
    pub before: Snapshot,
    pub after: Snapshot,
}

/// A sample of times in ms: mean, standard deviation (the sample's, n - 1; 0 below two
/// values), extremes and nearest-rank percentiles (`percentile`). All 0 for no values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// One model's start: loading, its first inference, the warm-up after it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStart {
    /// The model's name.
    pub name: String,
    /// The cascade stage it serves (0 = the first).
    pub stage: usize,
    pub load_ms: f64,
    /// The first inference after loading (cold): the model's run alone, in ms; None when no
    /// input could be run.
    pub first_inference_ms: Option<f64>,
    pub warmup: Warmup,
}

/// Warm-up inferences after the first: how many and their total time (the model's runs), left
/// out of every statistic.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Warmup {
    pub count: usize,
    pub ms: f64,
}

/// Latency percentiles, in ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub mean_ms: f64,
}

/// One span name (and cascade stage) over every inference that ran it.
#[derive(Clone, Debug, Serialize)]
pub struct StageStats {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    pub count: usize,
    #[serde(flatten)]
    pub latency: Latency,
    /// Mean millijoules per occurrence.
    pub mean_mj: Option<f64>,
    pub latency_ms: Summary,
}

/// The whole benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub bench: bool,
    pub board: String,
    /// The CPU: its architecture, the features that pick the kernels, the int8 kernels that can
    /// run on it and tract's own choice (`runner::cpu_features`).
    pub cpu: String,
    /// Threads of each model's products.
    pub threads: usize,
    /// Per model run here: its name and the kernels its int8 products run on.
    pub kernels: Vec<(String, String)>,
    /// Inferences answered over every run.
    pub n: usize,
    /// Where the energy figures came from (`source`, its first name, is the same).
    pub energy_source: String,
    pub source: String,
    pub baseline_w: f64,
    pub runs: Vec<RunReport>,
    pub inferences: usize,
    pub failed: usize,
    pub median_mj_per_inference: f64,
    pub median_mj_above_idle_per_inference: f64,
    /// Latency of a whole inference (every span of it).
    pub latency: Latency,
    pub stages: Vec<StageStats>,
    pub top1: Option<f64>,
    pub accuracy_target: Option<f64>,
    /// Whether the accuracy target held (None without a target or labels).
    pub accuracy_ok: Option<bool>,
    /// Latency of a whole inference, in full.
    pub latency_ms: Summary,
    /// Each local model's load, first inference and warm-up.
    pub models: Vec<ModelStart>,
    /// The process's peak resident set at the end, in MiB, and where it was read.
    pub peak_rss_mb: Option<f64>,
    pub peak_rss_source: Option<String>,
    /// The machine before the first run and after the last.
    pub thermal: Thermal,
    /// Whether the CPU throttled during any run.
    pub throttled: bool,
    /// Every run's warnings, each prefixed `run N: `.
    pub warnings: Vec<String>,
}

/// The median (mean of the middle two for an even count); 0 for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`th percentile by nearest rank (the smallest value with at least p% at or below it).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Mean, sample standard deviation, extremes and nearest-rank p50/p90/p99 of `values`
/// (non-finite ones left out).
pub fn summary(values: &[f64]) -> Summary {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Summary::default();
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    Summary {
        mean,
        std: var.sqrt(),
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p99: percentile(&v, 99.0),
    }
}

fn latency(values: &[f64]) -> Latency {
    let mean = if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
    Latency { p50_ms: percentile(values, 50.0), p95_ms: percentile(values, 95.0), mean_ms: mean }
}

/// One span name's times and energy over a benchmark.
#[derive(Default)]
struct SpanTally {
    ms: Vec<f64>,
    mj: f64,
    /// Occurrences with an energy figure.
    measured: usize,
}

/// Each model's first inference and `count` more on the inputs that decode, timed by the
/// model's run (its `infer` span) and left out of every statistic.
pub fn warm_up(models: &[Model], inputs: &[BenchInput], count: usize) -> Vec<ModelStart> {
    let images: Vec<_> = inputs.iter().filter_map(|i| preprocess::decode(&i.bytes).ok()).take(count + 1).collect();
    let mut out = Vec::new();
    for (stage, m) in models.iter().enumerate() {
        let mut s = ModelStart {
            name: m.name().to_owned(),
            stage,
            load_ms: m.load_ms,
            first_inference_ms: None,
            warmup: Warmup::default(),
        };
        for k in 0..if images.is_empty() { 0 } else { count + 1 } {
            let mut spans = Spans::default();
            if let Err(e) = m.logits(&images[k % images.len()], stage, &mut spans) {
                log::warn!("warm-up of {}: {e}", m.name());
                continue;
            }
            let ms: f64 = spans.0.iter().filter(|s| s.name == "infer").map(|s| s.ms).sum();
            if s.first_inference_ms.is_none() {
                s.first_inference_ms = Some(ms);
            } else {
                s.warmup.count += 1;
                s.warmup.ms += ms;
            }
        }
        log::info!(
            "{}: loaded in {:.0} ms, first inference {:.1} ms, {} warm-up inferences in {:.1} ms",
            s.name,
            s.load_ms,
            s.first_inference_ms.unwrap_or(f64::NAN),
            s.warmup.count,
            s.warmup.ms
        );
        out.push(s);
    }
    out
}

/// Runs the protocol: the models' warm-up, then the runs, each between two readings of the
/// machine's state; `on_run` sees each run as it ends (for progress output).
pub fn run(
    pipeline: &mut Pipeline,
    energy: &EnergyContext,
    probe: &mut dyn Probe,
    inputs: &[BenchInput],
    o: &BenchOptions,
    on_run: &mut dyn FnMut(&RunReport),
) -> BenchReport {
    let models = warm_up(&pipeline.models, inputs, o.warmup);
    let mut runs: Vec<RunReport> = Vec::new();
    let mut totals: Vec<f64> = Vec::new();
    let mut per_span: BTreeMap<(String, Option<usize>), SpanTally> = BTreeMap::new();
    let (mut correct, mut scored, mut failed_all) = (0usize, 0usize, 0usize);
    let mut next = 0usize;
    for run_no in 1..=o.runs.max(1) {
        let (mut n, mut failed, mut run_correct, mut run_scored) = (0usize, 0usize, 0usize, 0usize);
        let before = probe.snapshot();
        let start = Instant::now();
        while !inputs.is_empty() && (n < o.min_inferences.max(1) || start.elapsed() < o.min_duration) {
            let input = &inputs[next % inputs.len()];
            next += 1;
            n += 1;
            match pipeline.answer(&input.name, &input.bytes) {
                Ok(mut a) => {
                    energy.fill(&mut a.stages.0);
                    totals.push(a.stages.total_ms());
                    for s in &a.stages.0 {
                        let e = per_span.entry((s.name.to_owned(), s.stage)).or_default();
                        e.ms.push(s.ms);
                        if let Some(en) = &s.energy {
                            e.mj += en.mj;
                            e.measured += 1;
                        }
                    }
                    if let Some(l) = input.label {
                        run_scored += 1;
                        run_correct += (l == a.class) as usize;
                    }
                }
                Err(e) => {
                    log::warn!("{}: {e}", input.name);
                    failed += 1;
                    run_scored += input.label.is_some() as usize;
                }
            }
        }
        let end = Instant::now();
        let after = probe.snapshot();
        let warnings = machine::throttle_warnings(&before, &after, &o.limits);
        for w in &warnings {
            log::warn!("bench run {run_no}: {w}");
        }
        let e = energy.attribute(start, end);
        let per = |mj: f64| if n > 0 { mj / n as f64 } else { 0.0 };
        let r = RunReport {
            run: run_no,
            n: n - failed,
            inferences: n,
            failed,
            seconds: (end - start).as_secs_f64(),
            mj: e.mj,
            mj_per_inference: per(e.mj),
            mj_above_idle_per_inference: per(e.mj_above_idle),
            energy_source: e.source.clone(),
            source: e.source,
            top1: (run_scored > 0).then(|| run_correct as f64 / run_scored as f64),
            thermal: Thermal { before, after },
            throttled: !warnings.is_empty(),
            warnings,
        };
        on_run(&r);
        correct += run_correct;
        scored += run_scored;
        failed_all += failed;
        runs.push(r);
    }
    let top1 = (scored > 0).then(|| correct as f64 / scored as f64);
    let stages = per_span
        .into_iter()
        .map(|((name, stage), t)| StageStats {
            name,
            stage,
            count: t.ms.len(),
            latency: latency(&t.ms),
            mean_mj: (t.measured > 0).then(|| t.mj / t.measured as f64),
            latency_ms: summary(&t.ms),
        })
        .collect();
    let per_inf: Vec<f64> = runs.iter().map(|r| r.mj_per_inference).collect();
    let above: Vec<f64> = runs.iter().map(|r| r.mj_above_idle_per_inference).collect();
    let peak = probe.peak_rss();
    let thermal = Thermal {
        before: runs.first().map(|r| r.thermal.before.clone()).unwrap_or_default(),
        after: runs.last().map(|r| r.thermal.after.clone()).unwrap_or_default(),
    };
    let warnings = runs.iter().flat_map(|r| r.warnings.iter().map(move |w| format!("run {}: {w}", r.run))).collect();
    BenchReport {
        bench: true,
        board: energy.board.clone(),
        cpu: String::new(),
        threads: 1,
        kernels: pipeline
            .models
            .iter()
            .filter_map(|m| Some((m.name().to_owned(), m.runner.kernels()?.to_owned())))
            .collect(),
        n: runs.iter().map(|r| r.n).sum(),
        energy_source: runs.last().map_or_else(|| energy.source(), |r| r.source.clone()),
        source: runs.last().map_or_else(|| energy.source(), |r| r.source.clone()),
        baseline_w: energy.baseline_w(),
        inferences: runs.iter().map(|r| r.inferences).sum(),
        failed: failed_all,
        median_mj_per_inference: median(&per_inf),
        median_mj_above_idle_per_inference: median(&above),
        latency: latency(&totals),
        latency_ms: summary(&totals),
        models,
        peak_rss_mb: peak.as_ref().map(|p| p.mib),
        peak_rss_source: peak.map(|p| p.source.to_owned()),
        thermal,
        throttled: runs.iter().any(|r| r.throttled),
        warnings,
        stages,
        top1,
        accuracy_target: o.min_top1,
        accuracy_ok: o.min_top1.zip(top1).map(|(t, a)| a >= t),
        runs,
    }
}

/// The report as text.
pub fn report_text(r: &BenchReport) -> String {
    let mut t = format!("board {}; energy from {} (idle baseline {:.2} W)\n", r.board, r.source, r.baseline_w);
    if !r.cpu.is_empty() {
        t += &format!("CPU {}; {} thread(s)\n", r.cpu, r.threads);
    }
    for (model, kernels) in &r.kernels {
        t += &format!("{model}: int8 kernels {kernels}\n");
    }
    for m in &r.models {
        t += &format!(
            "{} (stage {}): loaded in {:.0} ms; first inference {}; warm-up {} inferences in {:.1} ms{} (not counted)\n",
            m.name,
            m.stage + 1,
            m.load_ms,
            m.first_inference_ms.map_or("not run".to_owned(), |x| format!("{x:.1} ms")),
            m.warmup.count,
            m.warmup.ms,
            if m.warmup.count > 0 { format!(", {:.1} ms each", m.warmup.ms / m.warmup.count as f64) } else { String::new() }
        );
    }
    t += &format!("machine before run 1: {}\n", r.thermal.before.summary());
    for run in &r.runs {
        t += &format!(
            "run {}: {} inferences in {:.1} s, {:.1} mJ per inference ({:.1} above idle){}\n",
            run.run,
            run.inferences,
            run.seconds,
            run.mj_per_inference,
            run.mj_above_idle_per_inference,
            run.top1.map_or(String::new(), |a| format!(", top-1 {:.1}%", a * 100.0))
        );
    }
    t += &format!(
        "median energy per inference: {:.1} mJ ({:.1} mJ above idle) over {} runs\n",
        r.median_mj_per_inference,
        r.median_mj_above_idle_per_inference,
        r.runs.len()
    );
    t += &format!("machine after run {}: {}\n", r.runs.len(), r.thermal.after.summary());
    for w in &r.warnings {
        t += &format!("WARNING: the CPU throttled: {w}\n");
    }
    if let (Some(mb), Some(source)) = (r.peak_rss_mb, &r.peak_rss_source) {
        t += &format!("peak memory: {mb:.1} MiB resident ({source})\n");
    }
    let l = &r.latency_ms;
    t += &format!(
        "latency per inference: p50 {:.1} ms, p95 {:.1} ms; mean {:.1} ms, std {:.1}, min {:.1}, max {:.1}, p90 {:.1}, p99 {:.1}\n",
        r.latency.p50_ms, r.latency.p95_ms, l.mean, l.std, l.min, l.max, l.p90, l.p99
    );
    t += &format!(
        "{:<12} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "span",
        "stage",
        "count",
        "mean ms",
        "std ms",
        "min ms",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "mean mJ"
    );
    for s in &r.stages {
        let l = &s.latency_ms;
        t += &format!(
            "{:<12} {:>5} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}\n",
            s.name,
            s.stage.map_or("-".to_owned(), |x| (x + 1).to_string()),
            s.count,
            l.mean,
            l.std,
            l.min,
            s.latency.p50_ms,
            l.p90,
            s.latency.p95_ms,
            l.p99,
            l.max,
            s.mean_mj.map_or("-".to_owned(), |m| format!("{m:.2}"))
        );
    }
    match (r.top1, r.accuracy_target) {
        (Some(a), Some(target)) => {
            t += &format!(
                "top-1 {:.1}%: {} the target {:.1}%",
                a * 100.0,
                if a >= target { "meets" } else { "MISSES" },
                target * 100.0
            )
        }
        (Some(a), None) => t += &format!("top-1 {:.1}% (no target given)", a * 100.0),
        (None, _) => t += "no labels: accuracy not checked",
    }
    t
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
