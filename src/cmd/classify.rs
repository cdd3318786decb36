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
    /// Image files, or folders of images (for a text cascade: files each holding one text).
    #[arg(required_unless_present_any = ["text", "lines"], conflicts_with_all = ["text", "lines"])]
    paths: Vec<PathBuf>,
    /// A text to classify, with a text cascade (`--config cascades/sst2.toml`); repeat for more.
    #[arg(long, value_name = "TEXT", conflicts_with = "lines")]
    text: Vec<String>,
    /// A file of texts, one input a line (`-`: standard input), with a text cascade. Each line
    /// gets one answer, named FILE:LINE; an empty or invalid (not UTF-8) line an error.
    #[arg(long, value_name = "FILE")]
    lines: Option<PathBuf>,
    /// Answer damaged images (a JPEG cut short, corrupt data) as far as they decode, marked
    /// `damaged`, instead of reporting them as errors.
    #[arg(long)]
    accept_damaged: bool,
    /// One JSON object per input per line, then a summary object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ClassifyArgs) -> Result<Outcome> {
    let source: Box<dyn inputs::Source> = if let Some(path) = &a.lines {
        super::text_lines(path)?
    } else if !a.text.is_empty() {
        let texts: Vec<inputs::Input> =
            a.text.iter().enumerate().map(|(i, t)| (format!("text:{}", i + 1), Ok(t.clone().into_bytes()))).collect();
        Box::new(texts.into_iter())
    } else {
        Box::new(inputs::Files::new(dataset::collect_inputs(&a.paths)?))
    };
    let config = a.cascade.resolve()?;
    super::check_text_inputs(a.lines.is_some() || !a.text.is_empty(), &config)?;
    let mut pipeline = Pipeline::local(config, runner_opts())?;
    pipeline.energy = Some(a.energy.start()?);
    pipeline.accept_damaged = a.accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json: a.json, log: None, labels: None, audit: None };
    let summary = session::drive(&mut pipeline, source, &mut sink)?;
    finish(&mut sink, &summary)
}
