//! The `edgecascade` command: parses the command line, loads the configuration and models,
//! dispatches to a subcommand and turns errors into messages and exit codes (1: the command
//! could not run; 3: it ran, but some inputs failed and were reported).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use edgecascade::config::{CascadeConfig, Overrides, DEFAULT_CONFIG};
use edgecascade::dataset;
use edgecascade::eval;
use edgecascade::local::{Answer, LocalCascade};
use edgecascade::model::Model;
use edgecascade::policy::Metric;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "edgecascade", version, about = "Early-exit model cascades for edge devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with the cascade, printing each answer.
    Classify {
        #[command(flatten)]
        cascade: CascadeArgs,
        /// Image files, or folders of images.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// One JSON object per input per line, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Measure each model's and the cascade's top-1 accuracy and cost on a labeled folder.
    Eval {
        #[command(flatten)]
        cascade: CascadeArgs,
        /// Folder with images and a labels.csv (header `file,label`, label = class index).
        #[arg(long)]
        data: PathBuf,
        /// Also evaluate these model manifests alone, for comparison.
        #[arg(long = "compare", value_name = "MANIFEST")]
        compare: Vec<PathBuf>,
        /// Write every model's and the cascade's answer per image to this CSV file.
        #[arg(long, value_name = "FILE")]
        predictions: Option<PathBuf>,
        /// Images evaluated at once (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CascadeArgs {
    /// Cascade configuration (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Exit threshold for every stage but the last.
    #[arg(long)]
    threshold: Option<f32>,
    /// Confidence metric for every stage but the last.
    #[arg(long)]
    metric: Option<Metric>,
    /// Decide on the mean probabilities of every stage that ran.
    #[arg(long)]
    ensemble: bool,
}

impl CascadeArgs {
    fn resolve(&self) -> Result<CascadeConfig> {
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            bail!("no {DEFAULT_CONFIG} in the current folder: run from the repository's root or pass --config FILE");
        }
        let overrides =
            Overrides { threshold: self.threshold, metric: self.metric, ensemble: self.ensemble.then_some(true) };
        Ok(CascadeConfig::load(&path)?.with_overrides(&overrides)?)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,edgecascade=info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify { cascade, paths, json } => classify(&cascade, &paths, json),
        Command::Eval { cascade, data, compare, predictions, jobs, json } => {
            run_eval(&cascade, &data, &compare, predictions.as_deref(), jobs, json)
        }
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("edgecascade: {failed} input(s) failed (reported above)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("edgecascade: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs `classify`; returns the number of inputs that failed.
fn classify(args: &CascadeArgs, paths: &[PathBuf], json: bool) -> Result<usize> {
    let inputs = dataset::collect_inputs(paths)?;
    let cascade = LocalCascade::load(args.resolve()?)?;
    let mut out = std::io::stdout().lock();
    let mut answers = Vec::new();
    let mut failed = 0;
    for path in &inputs {
        let name = path.display().to_string();
        let result =
            std::fs::read(path).map_err(|e| format!("cannot read: {e}")).and_then(|b| cascade.answer(&name, &b));
        match result {
            Ok(a) => {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&a)?)?;
                } else {
                    writeln!(out, "{}", answer_line(&a))?;
                }
                answers.push(a);
            }
            Err(e) => {
                failed += 1;
                if json {
                    writeln!(out, "{}", serde_json::json!({ "input": name, "error": e }))?;
                } else {
                    writeln!(out, "{name}: error: {e}")?;
                }
            }
        }
    }
    let names: Vec<&str> = cascade.models.iter().map(|m| m.name()).collect();
    let summary = summarise(&answers, failed, &names);
    if json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(out, "{}", summary_text(&summary))?;
    }
    Ok(failed)
}

fn answer_line(a: &Answer) -> String {
    let route = if a.degraded {
        format!("stage {} {} (DEGRADED: {})", a.stage + 1, a.model, a.degraded_reason.as_deref().unwrap_or(""))
    } else {
        format!("stage {} {}", a.stage + 1, a.model)
    };
    format!(
        "{:<28} {:>4} {:<30} {} {:.3}  {}  {:.1} ms",
        a.input,
        a.class,
        truncate(&a.label, 30),
        a.metric,
        a.confidence,
        route,
        a.ms
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('~')).collect()
    }
}

/// Totals over a run's answers, printed after them.
#[derive(serde::Serialize)]
struct Summary {
    summary: bool,
    inputs: usize,
    answered: usize,
    failed: usize,
    answered_by: BTreeMap<String, usize>,
    forwarded: usize,
    degraded: usize,
    mean_macs: f64,
    mean_ms: f64,
    /// Mean milliseconds per input of each span name.
    mean_span_ms: BTreeMap<String, f64>,
}

fn summarise(answers: &[Answer], failed: usize, models: &[&str]) -> Summary {
    let n = answers.len().max(1) as f64;
    let mut answered_by: BTreeMap<String, usize> = models.iter().map(|m| (m.to_string(), 0)).collect();
    let mut spans: BTreeMap<String, f64> = BTreeMap::new();
    for a in answers {
        *answered_by.entry(a.model.clone()).or_default() += 1;
        for s in &a.stages.0 {
            *spans.entry(s.name.to_owned()).or_default() += s.ms / n;
        }
    }
    Summary {
        summary: true,
        inputs: answers.len() + failed,
        answered: answers.len(),
        failed,
        answered_by,
        forwarded: answers.iter().filter(|a| a.forwarded).count(),
        degraded: answers.iter().filter(|a| a.degraded).count(),
        mean_macs: answers.iter().map(|a| a.macs as f64).sum::<f64>() / n,
        mean_ms: answers.iter().map(|a| a.ms).sum::<f64>() / n,
        mean_span_ms: spans,
    }
}

fn summary_text(s: &Summary) -> String {
    let by: Vec<String> = s.answered_by.iter().map(|(m, k)| format!("{k} by {m}")).collect();
    let spans: Vec<String> = s.mean_span_ms.iter().map(|(n, ms)| format!("{n} {ms:.1} ms")).collect();
    format!(
        "\n{} inputs: {} answered ({}), {} failed; {} forwarded, {} degraded\nper input: {:.0} M MACs, {:.1} ms ({})",
        s.inputs,
        s.answered,
        by.join(", "),
        s.failed,
        s.forwarded,
        s.degraded,
        s.mean_macs / 1e6,
        s.mean_ms,
        spans.join(", ")
    )
}

/// Runs `eval`; returns the number of images that failed.
fn run_eval(
    args: &CascadeArgs,
    data: &std::path::Path,
    compare: &[PathBuf],
    predictions: Option<&std::path::Path>,
    jobs: Option<usize>,
    json: bool,
) -> Result<usize> {
    let cascade = LocalCascade::load(args.resolve()?)?;
    let extra = compare.iter().map(|p| Model::load(p)).collect::<Result<Vec<_>, _>>()?;
    let models: Vec<&Model> = cascade.models.iter().chain(extra.iter()).collect();
    let items = dataset::read_labels(data, models[0].classes.len())?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    log::info!("evaluating {} models on {} images of {}", models.len(), items.len(), data.display());
    let mut records = Vec::new();
    let mut failed = 0;
    for r in eval::collect(&models, &items, jobs) {
        match r {
            Ok(r) => records.push(r),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    let names: Vec<String> = models.iter().map(|m| m.name().to_owned()).collect();
    let macs: Vec<u64> = models.iter().map(|m| m.runner.macs()).collect();
    let report = eval::score(&records, failed, &names, &macs, &cascade.policies, cascade.config.ensemble);
    if let Some(path) = predictions {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        writeln!(f, "file,label,model,top1,maxprob")?;
        for p in eval::predictions(&records, &names, &cascade.policies, cascade.config.ensemble) {
            writeln!(f, "{},{},{},{},{}", p.file, p.label, p.model, p.top1, p.maxprob)?;
        }
        f.flush()?;
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} images ({} failed) from {}", report.n, report.errors, data.display());
        for m in &report.models {
            println!("  {:<28} top-1 {:>6.2}%  {:>6.0} M MACs", m.name, m.top1 * 100.0, m.macs as f64 / 1e6);
        }
        let c = &report.cascade;
        println!(
            "  {:<28} top-1 {:>6.2}%  {:>6.0} M MACs per input; forwarded {:.1}% ({}{}{})",
            "cascade",
            c.top1 * 100.0,
            c.macs_per_input / 1e6,
            c.forwarded * 100.0,
            c.metric,
            c.threshold.map_or(String::new(), |t| format!(" at {t}")),
            if c.ensemble { ", ensembled" } else { "" }
        );
    }
    Ok(failed)
}
