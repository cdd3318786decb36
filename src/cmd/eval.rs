//! `eval`: each model's and the cascade's top-1 and cost on a labeled folder.

use super::{runner_opts, CascadeArgs};
use anyhow::{Context, Result};
use clap::Args;
use edgecascade::model::Model;
use edgecascade::run::pipeline::Pipeline;
use edgecascade::tune::{dataset, eval};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    cascade: CascadeArgs,
    /// Folder with images and a labels.csv (header `file,label`, label = class index), or
    /// for a text cascade a TSV file of labeled sentences (GLUE's `label<TAB>sentence`, or
    /// `sentence<TAB>label`, by the header).
    #[arg(long, value_name = "DIR|FILE.tsv")]
    data: PathBuf,
    /// Also evaluate these model manifests alone, for comparison.
    #[arg(long = "compare", value_name = "MANIFEST")]
    compare: Vec<PathBuf>,
    /// Write every model's and the cascade's answer per image to this CSV file.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// Images evaluated at once (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    jobs: Option<usize>,
    #[command(flatten)]
    payload: super::PayloadArgs,
    /// The result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `eval`; returns the number of images that failed.
pub fn run(a: EvalArgs) -> Result<usize> {
    let (args, data, jobs) = (&a.cascade, a.data.as_path(), a.jobs);
    let cascade = Pipeline::local(args.resolve()?, runner_opts())?;
    let extra = a.compare.iter().map(|p| Model::load(p, runner_opts())).collect::<Result<Vec<_>, _>>()?;
    let models: Vec<&Model> = cascade.models.iter().chain(extra.iter()).collect();
    let items = dataset::read_data(data, models[0])?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    log::info!("evaluating {} models on {} inputs of {}", models.len(), items.len(), data.display());
    // The last stage of a cascade runs on the host: it sees the payload the link carries.
    let host = (cascade.models.len() > 1).then(|| eval::HostView {
        stage: cascade.models.len() - 1,
        payload: a.payload.spec().for_kind(cascade.kind()),
    });
    let (records, failures) = eval::collect(&models, &items, jobs, host);
    for e in &failures {
        eprintln!("error: {e}");
    }
    let failed = failures.len();
    let names: Vec<String> = models.iter().map(|m| m.name().to_owned()).collect();
    let fixed: Vec<u64> = models.iter().map(|m| m.runner.macs()).collect();
    let macs = eval::mean_macs(&records, &fixed);
    let mut report = eval::score(&records, failed, &names, &macs, &cascade.policies, cascade.config.ensemble);
    report.payload = host.map(|h| h.payload.to_string());
    if let Some(path) = a.predictions.as_deref() {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        eval::write_predictions(
            &mut f,
            &eval::predictions(&records, &names, &cascade.policies, cascade.config.ensemble),
        )?;
        f.flush()?;
    }
    super::print(a.json, &report, |r| eval::report_text(r, data))?;
    Ok(failed)
}
