//! `calibrate`: chooses the threshold from labeled data and writes a new config.

use super::{runner_opts, CascadeArgs, EnergyArgs};
use anyhow::{bail, Result};
use clap::Args;
use edgecascade::core::calibrate::Target;
use edgecascade::tune::{self, CalibrateOptions, LinkAssumptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Cascade configuration to calibrate (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder with images and a labels.csv (header `file,label`, label = class index).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The cheapest point at least this accurate (0..1). Default: the best single model's accuracy.
    #[arg(long, group = "target")]
    #[arg(value_parser = super::fraction_open)]
    target_accuracy: Option<f64>,
    /// The most accurate point within this many MACs per input.
    #[arg(long, group = "target")]
    #[arg(value_parser = super::positive)]
    budget_macs: Option<f64>,
    /// The most accurate point within this many device millijoules per input.
    #[arg(long, group = "target")]
    #[arg(value_parser = super::positive)]
    budget_mj: Option<f64>,
    /// The most accurate point within this many milliseconds per input.
    #[arg(long, group = "target")]
    #[arg(value_parser = super::positive)]
    budget_ms: Option<f64>,
    /// The most accurate point forwarding at most this fraction of inputs.
    #[arg(long, group = "target")]
    #[arg(value_parser = super::fraction)]
    max_forward: Option<f64>,
    /// The config to write (default: calibrated.toml, or the next free calibrated-N.toml).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
    /// Where logits are cached (default: ~/.cache/edgecascade).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Link speed used to price offloads, in baud (10 bits a byte).
    #[arg(long, default_value_t = 921_600)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    link_baud: u64,
    /// The device's board: its sensor (or estimate) measures each stage's energy as classify
    /// does; its link energy and idle power price the link.
    #[command(flatten)]
    energy: EnergyArgs,
    #[command(flatten)]
    payload: super::PayloadArgs,
    /// Images decoded and run at once (default: every core).
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    jobs: Option<usize>,
    /// The result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `calibrate`; an unmet target is an error (exit 1) after the closest point is shown.
pub fn run(a: CalibrateArgs) -> Result<usize> {
    let target = a
        .target_accuracy
        .map(Target::Accuracy)
        .or(a.budget_macs.map(Target::Macs))
        .or(a.budget_mj.map(Target::Mj))
        .or(a.budget_ms.map(Target::Ms))
        .or(a.max_forward.map(Target::MaxForward));
    let o = CalibrateOptions {
        data: a.data,
        target,
        out: a.out,
        force: a.force,
        cache_dir: a.cache.unwrap_or_else(edgecascade::tune::cache::default_dir),
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        link: LinkAssumptions { baud: a.link_baud, ..Default::default() },
        payload: a.payload.spec(),
        board: a.energy.resolve()?.detection.board,
        energy: Some(a.energy.start()?),
        runner: runner_opts().clone(),
    };
    let c = tune::calibrate(CascadeArgs::plain(a.config).resolve()?, o)?;
    super::print(a.json, &c, tune::summary_text)?;
    if !c.met {
        bail!("no threshold meets the target {}; the closest point is shown above", c.target);
    }
    Ok(0)
}
