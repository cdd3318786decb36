//! `bench`: energy per inference and latency per stage, MLPerf Tiny style.

use super::{runner_opts, CascadeArgs, EnergyArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgecascade::run::pipeline::Pipeline;
use edgecascade::tune::{bench, dataset};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    cascade: CascadeArgs,
    #[command(flatten)]
    energy: EnergyArgs,
    /// Labeled folder (images and labels.csv) cycled through (default: photos/).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Runs; the median energy per inference over them is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Minimum seconds per run.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = super::non_negative)]
    min_seconds: f64,
    /// Minimum inferences per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    min_inferences: u32,
    /// Warm-up inferences of each model after its first (cold) one, before the runs; neither
    /// counts in the statistics.
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: u32,
    /// Top-1 accuracy (0 to 1) the cascade must reach on the data; below it the command fails.
    #[arg(long, value_name = "FRACTION", value_parser = super::fraction)]
    min_top1: Option<f64>,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `bench`; returns the number of inferences that failed.
pub fn run(a: BenchArgs) -> Result<usize> {
    let (args, energy_args, data, json) = (&a.cascade, &a.energy, a.data.as_deref(), a.json);
    let options = &bench::BenchOptions {
        runs: a.runs as usize,
        min_duration: Duration::try_from_secs_f64(a.min_seconds).unwrap_or(Duration::MAX),
        min_inferences: a.min_inferences as usize,
        min_top1: a.min_top1,
        warmup: a.warmup as usize,
        limits: edgecascade::machine::Limits::default(),
    };
    let mut pipeline = Pipeline::local(args.resolve()?, runner_opts())?;
    let dir = data.map_or_else(|| PathBuf::from("photos"), Path::to_owned);
    if data.is_none() && !dir.is_dir() {
        bail!("no photos/ folder here: run from the repository's root, or pass --data DIR");
    }
    let mut inputs = Vec::new();
    for item in dataset::read_labels(&dir, pipeline.models[0].classes.len())? {
        let bytes = std::fs::read(&item.path).with_context(|| format!("cannot read {}", item.path.display()))?;
        inputs.push(bench::BenchInput { name: item.path.display().to_string(), bytes, label: Some(item.label) });
    }
    let resolved = energy_args.resolve()?;
    let board = &resolved.detection.board;
    let options = &bench::BenchOptions {
        limits: edgecascade::machine::Limits {
            soft_limit_c: board.thermal.as_ref().map(|t| t.throttle.celsius),
            ..options.limits
        },
        ..options.clone()
    };
    let ctx = energy_args.start_resolved(&resolved)?;
    let mut probe = edgecascade::machine::SysProbe(resolved.root.clone());
    log::info!(
        "bench: {} runs of at least {:?} and {} inferences over {} images of {}",
        options.runs,
        options.min_duration,
        options.min_inferences,
        inputs.len(),
        dir.display()
    );
    let mut report = bench::run(&mut pipeline, &ctx, &mut probe, &inputs, options, &mut |r| {
        log::info!("bench run {}: {} inferences, {:.1} mJ per inference", r.run, r.inferences, r.mj_per_inference)
    });
    report.cpu = edgecascade::model::runner::cpu_features();
    report.threads = edgecascade::model::runner::threads();
    super::print(json, &report, bench::report_text)?;
    if report.accuracy_ok == Some(false) {
        bail!(
            "top-1 {:.1}% is below the target {:.1}%",
            report.top1.unwrap_or(0.0) * 100.0,
            options.min_top1.unwrap_or(0.0) * 100.0
        );
    }
    Ok(report.failed)
}
