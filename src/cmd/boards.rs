//! `boards`: the board profiles, the board detected here, its power sensor (or `--meter`), a
//! live reading, the external meters found, and the CPU.

use super::EnergyArgs;
use anyhow::Result;
use clap::Args;
use edgecascade::energy::survey;

#[derive(Args)]
pub struct BoardsArgs {
    #[command(flatten)]
    energy: EnergyArgs,
    /// The survey as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BoardsArgs) -> Result<()> {
    let mut s = survey::survey(&a.energy.resolve()?, a.energy.meter.as_ref());
    s.cpu = edgecascade::model::runner::cpu_features();
    super::print(a.json, &s, survey::survey_text)
}
