//! `edgecascade bench`, after MLPerf Tiny's energy protocol: several runs (5 by default),
//! each lasting at least a minimum time and a minimum number of inferences, cycling over a
//! labeled set held in memory. Reports the median energy per inference over the runs, p50
//! and p95 latency per stage and per inference, and the top-1 accuracy, checked against a
//! target when one is given. The statistics are pure functions.

use crate::energy::EnergyContext;
use crate::run::pipeline::Pipeline;
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
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions { runs: 5, min_duration: Duration::from_secs(10), min_inferences: 10, min_top1: None }
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
    pub inferences: usize,
    pub failed: usize,
    pub seconds: f64,
    /// Energy over the whole run, in millijoules.
    pub mj: f64,
    pub mj_per_inference: f64,
    pub mj_above_idle_per_inference: f64,
    pub source: String,
    pub top1: Option<f64>,
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

/// Runs the protocol; `on_run` sees each run as it ends (for progress output).
pub fn run(
    pipeline: &mut Pipeline,
    energy: &EnergyContext,
    inputs: &[BenchInput],
    o: &BenchOptions,
    on_run: &mut dyn FnMut(&RunReport),
) -> BenchReport {
    let mut runs = Vec::new();
    let mut totals: Vec<f64> = Vec::new();
    let mut per_span: BTreeMap<(String, Option<usize>), SpanTally> = BTreeMap::new();
    let (mut correct, mut scored, mut failed_all) = (0usize, 0usize, 0usize);
    let mut next = 0usize;
    for run_no in 1..=o.runs.max(1) {
        let (mut n, mut failed, mut run_correct, mut run_scored) = (0usize, 0usize, 0usize, 0usize);
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
        let e = energy.attribute(start, end);
        let per = |mj: f64| if n > 0 { mj / n as f64 } else { 0.0 };
        let r = RunReport {
            run: run_no,
            inferences: n,
            failed,
            seconds: (end - start).as_secs_f64(),
            mj: e.mj,
            mj_per_inference: per(e.mj),
            mj_above_idle_per_inference: per(e.mj_above_idle),
            source: e.source,
            top1: (run_scored > 0).then(|| run_correct as f64 / run_scored as f64),
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
        })
        .collect();
    let per_inf: Vec<f64> = runs.iter().map(|r| r.mj_per_inference).collect();
    let above: Vec<f64> = runs.iter().map(|r| r.mj_above_idle_per_inference).collect();
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
        source: runs.last().map_or_else(|| energy.source(), |r| r.source.clone()),
        baseline_w: energy.baseline_w(),
        inferences: runs.iter().map(|r| r.inferences).sum(),
        failed: failed_all,
        median_mj_per_inference: median(&per_inf),
        median_mj_above_idle_per_inference: median(&above),
        latency: latency(&totals),
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
    t += &format!("latency per inference: p50 {:.1} ms, p95 {:.1} ms\n", r.latency.p50_ms, r.latency.p95_ms);
    t += &format!("{:<12} {:>5} {:>7} {:>10} {:>10} {:>10}\n", "span", "stage", "count", "p50 ms", "p95 ms", "mean mJ");
    for s in &r.stages {
        t += &format!(
            "{:<12} {:>5} {:>7} {:>10.2} {:>10.2} {:>10}\n",
            s.name,
            s.stage.map_or("-".to_owned(), |x| (x + 1).to_string()),
            s.count,
            s.latency.p50_ms,
            s.latency.p95_ms,
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
mod tests {
    use super::*;

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
}
