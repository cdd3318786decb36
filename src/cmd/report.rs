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
}

pub fn run(a: ReportArgs) -> Result<usize> {
    let path = a.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let calibration = if path.exists() { CascadeConfig::load(&path)?.calibration } else { None };
    let r = tune::report(&a.log, calibration.as_ref())?;
    super::print(a.json, &r, tune::report_text)?;
    Ok(0)
}
