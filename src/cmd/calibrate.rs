//! `calibrate`: chooses the threshold from labeled data (or, with `--agreement`, from the last
//! stage's answers) for a target, or with a guarantee (`--max-drop`), and writes a new config.

use super::{runner_opts, CascadeArgs, EnergyArgs};
use anyhow::{bail, Result};
use clap::Args;
use edgecascade::core::calibrate::Target;
use edgecascade::tune::guaranteed::GuaranteeOptions;
use edgecascade::tune::{self, CalibrateOptions, LinkAssumptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Cascade configuration to calibrate (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder with images and a labels.csv (header `file,label`, label = class index) listing
    /// every image; with --agreement, any folder of images (labels.csv not read), or a results
    /// log of run/demo (as --from-log).
    #[arg(long, value_name = "DIR", required_unless_present = "from_log")]
    data: Option<PathBuf>,
    /// Guaranteed mode: the cheapest threshold such that, with probability at least 1 - --delta
    /// over the calibration images, the cascade's top-1 is at most this far below the last
    /// stage's alone (with --agreement: it disagrees with the last stage on at most this
    /// fraction of inputs). In (0, 1), e.g. 0.01 for 1 point.
    #[arg(long, group = "target", value_name = "E")]
    #[arg(value_parser = super::fraction_strict)]
    max_drop: Option<f64>,
    /// With --max-drop: the probability, over the calibration draw, that the guarantee fails.
    /// In (0, 1).
    #[arg(long, value_name = "D", default_value_t = 0.1, requires = "max_drop")]
    #[arg(value_parser = super::fraction_strict)]
    delta: f64,
    /// No labels: score every threshold by its agreement with the last stage's answer (the
    /// host's), computed here on every image of --data.
    #[arg(long)]
    agreement: bool,
    /// With --agreement: a results log of run/demo whose lines carry the host's answer for every
    /// input (offloaded, or audited as host_class); its inputs are run again here.
    #[arg(long, value_name = "FILE")]
    from_log: Option<PathBuf>,
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
    if a.from_log.is_some() && !a.agreement {
        bail!(super::UsageError(
            "--from-log calibrates against the host's answers in the log: pass --agreement with it".into()
        ));
    }
    let data = a.data.or(a.from_log.clone()).expect("clap requires --data or --from-log");
    let o = CalibrateOptions {
        data,
        guarantee: a.max_drop.map(|max_drop| GuaranteeOptions { max_drop, delta: a.delta }),
        agreement: a.agreement,
        from_log: a.from_log,
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
    if let (Some(g), false) = (&c.guarantee, c.met) {
        let needed = g.inputs_needed.map_or(String::new(), |k| format!("; about {k} images would be needed"));
        bail!(
            "nothing cheaper than forwarding every input is certified for --max-drop {} --delta {} on {} images{needed}",
            g.max_drop,
            g.delta,
            c.n
        );
    }
    if !c.met {
        bail!("no threshold meets the target {}; the closest point is shown above", c.target);
    }
    Ok(0)
}
