//! `report`: what a results log of `run` or `demo` shows, against the calibration.

use anyhow::Result;
use clap::Args;
use edgecascade::config::{CascadeConfig, DEFAULT_CONFIG};
use edgecascade::tune;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// The results log (JSON lines, from --log).
    log: PathBuf,
    /// The config whose [calibration] predicted the run (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
    /// E: the disagreement rate with the host the run was calibrated to (over all inputs), in
    /// (0, 1], to judge the live audit against (default: the config's [calibration] guarantee,
    /// `max_disagreement` or `max_drop`, when it has one).
    #[arg(long, value_name = "E", value_parser = super::fraction_open)]
    max_disagreement: Option<f64>,
}

pub fn run(a: ReportArgs) -> Result<usize> {
    let path = a.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let calibration = if path.exists() { CascadeConfig::load(&path)?.calibration } else { None };
    let e = a.max_disagreement.or_else(|| guarantee_e(&path));
    let r = tune::report_against(&a.log, calibration.as_ref(), e)?;
    super::print(a.json, &r, tune::report_text)?;
    Ok(0)
}

/// The E of the config's [calibration] guarantee, when it has one (`max_disagreement`, or
/// `max_drop`), read from the file as TOML.
fn guarantee_e(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    let c = v.get("calibration")?;
    ["max_disagreement", "max_drop"].iter().find_map(|k| c.get(*k).and_then(toml::Value::as_float))
}
