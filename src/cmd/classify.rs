//! `classify`: every stage in this process, over files and folders.

use super::{finish, runner_opts, CascadeArgs, EnergyArgs, Outcome};
use anyhow::Result;
use clap::Args;
use edgecascade::run::inputs;
use edgecascade::run::pipeline::Pipeline;
use edgecascade::run::session::{self, Sink};
use edgecascade::tune::dataset;
use std::path::PathBuf;

#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    cascade: CascadeArgs,
    #[command(flatten)]
    energy: EnergyArgs,
    /// Image files, or folders of images.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Answer damaged images (a JPEG cut short, corrupt data) as far as they decode, marked
    /// `damaged`, instead of reporting them as errors.
    #[arg(long)]
    accept_damaged: bool,
    /// One JSON object per input per line, then a summary object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ClassifyArgs) -> Result<Outcome> {
    let files = dataset::collect_inputs(&a.paths)?;
    let mut pipeline = Pipeline::local(a.cascade.resolve()?, runner_opts())?;
    pipeline.energy = Some(a.energy.start()?);
    pipeline.accept_damaged = a.accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json: a.json, log: None, labels: None, audit: None };
    let summary = session::drive(&mut pipeline, inputs::Files::new(files), &mut sink)?;
    finish(&mut sink, &summary)
}
