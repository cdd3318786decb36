//! The command layer: one module per subcommand, each its arguments (clap), what it loads and
//! what it prints, over the library. The only code that uses `anyhow`; it maps environment
//! variables and flags to the options the library takes as values, and how a command ended to
//! its exit code (1: could not run; 2: bad command line, from clap or a [`UsageError`] found
//! after parsing; 3: some inputs failed; 4: every input answered, some locally, marked degraded,
//! because the host could not answer).

pub mod bench;
pub mod boards;
pub mod calibrate;
pub mod classify;
pub mod demo;
pub mod device;
pub mod eval;
pub mod host;
pub mod report;
pub mod run;

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args};
use edgecascade::board;
use edgecascade::config::{CascadeConfig, Overrides, DEFAULT_CONFIG};
use edgecascade::core::policy::Metric;
use edgecascade::energy::{EnergyContext, MeterSpec};
use edgecascade::link::Encoding;
use edgecascade::model::runner::{self, ForcedKernels, KernelOptions, RunnerOptions};
use edgecascade::offload::payload::PayloadSpec;
use edgecascade::run::session::{self, Sink, Summary};
use std::path::PathBuf;
use std::process::ExitCode;

/// How every model of this process runs: threads and the int8 path (global flags).
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub struct RunnerArgs {
    /// Threads for each model's matrix products, at least 1 (default: every core for the
    /// commands that answer one input at a time, and for calibrate's timing of each stage; 1
    /// for eval, which spreads images over the cores, as calibrate does for its logits).
    #[arg(long, global = true, value_name = "N", value_parser = at_least_one)]
    threads: Option<usize>,
    /// Force the int8 rewrite's kernels instead of measuring which is fastest here: a kernel
    /// name for every kind of product that has one (plain, avx2, avx512vnni, avxvnni, avx512,
    /// neon, neon-dot, tract), or matrix=NAME / depthwise=NAME, comma-separated.
    #[arg(long, global = true, value_name = "NAME", env = "EDGECASCADE_INT8_KERNEL", value_parser = parse_kernels)]
    int8_kernel: Option<ForcedKernels>,
    /// How QDQ (int8) models run: `int8`, the integer rewrite (default), or `float`, tract's own
    /// path (float products between quantize and dequantize steps), for comparison.
    #[arg(long, global = true, value_enum, value_name = "PATH", env = "EDGECASCADE_INT8", default_value = "int8")]
    qdq: QdqPath,
    /// Where the int8 kernels measured fastest here are remembered, per model and CPU
    /// (default: ~/.cache/edgecascade).
    #[arg(long, global = true, value_name = "DIR")]
    kernel_cache: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum QdqPath {
    Int8,
    Float,
}

fn parse_kernels(s: &str) -> Result<ForcedKernels, String> {
    ForcedKernels::parse(s).map_err(|e| e.to_string())
}

/// How every model of this run is loaded (set once from the command line, `RunnerArgs::apply`).
static RUNNER: std::sync::OnceLock<RunnerOptions> = std::sync::OnceLock::new();

pub fn runner_opts() -> &'static RunnerOptions {
    RUNNER.get_or_init(RunnerOptions::default)
}

impl RunnerArgs {
    /// Sets tract's threads (by default every core, or 1 for commands that spread their inputs
    /// over the cores, `per_input_cores`) and the options every model is loaded with.
    pub fn apply(&self, per_input_cores: bool) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = runner::set_threads(self.threads.unwrap_or(if per_input_cores { 1 } else { cores }));
        log::info!("tract: {threads} thread(s); CPU {}", runner::cpu_features());
        let _ = RUNNER.set(RunnerOptions {
            int8_rewrite: self.qdq == QdqPath::Int8,
            kernels: KernelOptions {
                forced: self.int8_kernel.clone().unwrap_or_default(),
                cache_dir: Some(self.kernel_cache.clone().unwrap_or_else(edgecascade::tune::cache::default_dir)),
            },
        });
    }
}

/// How much the log says on standard error (global flags); RUST_LOG, when set, decides instead.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub struct Verbosity {
    /// Only warnings and errors on standard error (RUST_LOG, when set, overrides it).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More on standard error: -v debug messages, -vv trace (RUST_LOG, when set, overrides it).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
}

impl Verbosity {
    /// The log's filter: RUST_LOG if set, else warnings from everything and edgecascade's own
    /// messages from info (default), warn (`--quiet`), debug (`-v`) or trace (`-vv`) up.
    pub fn filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "warn,edgecascade=info",
            (false, 1) => "warn,edgecascade=debug",
            (false, _) => "warn,edgecascade=trace",
        }
    }

    pub fn init_logger(&self) {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(self.filter()))
            .format_timestamp(None)
            .init();
    }
}

/// A bad command line found after parsing (a combination of values clap cannot check, a value
/// a library rejects as given on the command line): exit 2, as for clap's own errors. Return it
/// with `bail!(UsageError(...))` or wrap an error in it; context may be added around it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code of a command that failed, with its message on standard error: 2 for a bad
/// command line (a [`UsageError`] anywhere in the chain), 1 for anything else.
pub fn error_exit(e: &anyhow::Error, subcommand: &str) -> ExitCode {
    eprintln!("edgecascade: error: {}", error_text(e));
    if e.chain().any(|c| c.is::<UsageError>()) {
        let help = if subcommand.is_empty() { "--help".to_owned() } else { format!("edgecascade {subcommand} --help") };
        eprintln!("\nFor more information, try '{help}'.");
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// An error and its causes, `: `-separated, each cause once: a library error whose message
/// already includes its source (`cannot read X: No such file...`) does not repeat it.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

/// The cascade to run: its config and command-line overrides.
#[derive(Args)]
pub struct CascadeArgs {
    /// Cascade configuration (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Exit threshold for every stage but the last, in [0, 1] (every metric lies in 0..1).
    #[arg(long, value_name = "T", value_parser = threshold, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Confidence metric for every stage but the last: max-softmax (the top probability),
    /// margin (top-1 minus top-2) or entropy (normalised; lower is surer).
    #[arg(long, value_name = "METRIC", value_parser = metric_parser())]
    pub metric: Option<Metric>,
    /// Decide on the mean probabilities of every stage that ran.
    #[arg(long)]
    pub ensemble: bool,
}

impl CascadeArgs {
    /// The config at `path` (default ./cascade.toml) without overrides.
    pub fn plain(config: Option<PathBuf>) -> CascadeArgs {
        CascadeArgs { config, threshold: None, metric: None, ensemble: false }
    }

    pub fn resolve(&self) -> Result<CascadeConfig> {
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            bail!("no {DEFAULT_CONFIG} in the current folder: run from the repository's root or pass --config FILE");
        }
        let overrides =
            Overrides { threshold: self.threshold, metric: self.metric, ensemble: self.ensemble.then_some(true) };
        // The config is checked as it loads; what then fails came from the command line.
        Ok(CascadeConfig::load(&path)?.with_overrides(&overrides).map_err(|e| UsageError(e.to_string()))?)
    }
}

/// `--metric`'s values, listed in the help and in clap's error for any other.
fn metric_parser() -> impl TypedValueParser<Value = Metric> {
    PossibleValuesParser::new(Metric::ALL.map(Metric::as_str))
        .map(|s| s.parse::<Metric>().expect("a listed metric name parses"))
}

/// A threshold: a number in [0, 1].
fn threshold(s: &str) -> Result<f32, String> {
    fraction(s).map(|v| v as f32)
}

/// What a forwarded input carries to the host. `run` and `demo` send it; `eval` and
/// `calibrate` give the host stage the same payload, so they measure the cascade that runs.
#[derive(Args)]
pub struct PayloadArgs {
    /// What a forwarded input carries to the host: the host model's centre crop as JPEG
    /// (crop-jpeg), the input's own bytes (original) or the crop as raw RGB (crop-raw). `eval`
    /// and `calibrate` score and price the host stage on that payload.
    #[arg(long, value_name = "ENCODING", default_value = "crop-jpeg", ignore_case = true, value_parser = encoding_parser())]
    encoding: Encoding,
    /// JPEG quality of a crop-jpeg payload.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
}

impl PayloadArgs {
    pub fn spec(&self) -> PayloadSpec {
        PayloadSpec { encoding: self.encoding, jpeg_quality: self.jpeg_quality }
    }
}

/// `--text` and `--lines` need a text cascade: a bad command line otherwise (exit 2), found
/// before any model is loaded.
pub fn check_text_inputs(given: bool, config: &edgecascade::config::CascadeConfig) -> Result<()> {
    use edgecascade::model::manifest::Kind;
    if given && device::config_kind(config) != Kind::Text {
        bail!(UsageError(format!(
            "--text and --lines need a text cascade; {} takes images (try --config cascades/sst2.toml)",
            config.path.display()
        )));
    }
    Ok(())
}

/// The inputs of `--lines PATH`: one text a line, from the file or (`-`) standard input.
pub fn text_lines(path: &std::path::Path) -> anyhow::Result<Box<dyn edgecascade::run::inputs::Source>> {
    use edgecascade::run::inputs::Lines;
    if path.as_os_str() == "-" {
        return Ok(Box::new(Lines::new(std::io::BufReader::new(std::io::stdin()), "stdin")));
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(Lines::new(std::io::BufReader::new(f), path.display().to_string())))
}

/// `--encoding`'s values, listed in the help and in clap's error for any other (the spellings
/// without the dash or with an underscore are accepted as before).
fn encoding_parser() -> impl TypedValueParser<Value = Encoding> {
    PossibleValuesParser::new([
        PossibleValue::new("crop-jpeg").aliases(["cropjpeg", "crop_jpeg"]),
        PossibleValue::new("original"),
        PossibleValue::new("crop-raw").aliases(["cropraw", "crop_raw"]),
    ])
    .map(|s| s.parse::<Encoding>().expect("a listed encoding parses"))
}

/// Which board this is and where its sensors are: the energy figure of each stage.
#[derive(Args)]
pub struct EnergyArgs {
    /// Board profile to use instead of detecting it (`edgecascade boards` lists them; or set
    /// EDGECASCADE_BOARD).
    #[arg(long, value_name = "NAME")]
    board: Option<String>,
    /// Read every /sys and /proc path under DIR, a copied or recorded tree (or set
    /// EDGECASCADE_SYSFS_ROOT).
    #[arg(long, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    /// Folder of board profiles (NAME.toml) adding to or replacing the built-in ones.
    #[arg(long, value_name = "DIR")]
    boards: Option<PathBuf>,
    /// An external power meter in the board's supply, read instead of its sensor (or of the
    /// estimate): ina2xx:/sys/class/hwmon/hwmonN (also ina219:, ina226:, ina260:),
    /// um25c:/dev/rfcomm0 (also um24c:, um34c:).
    #[arg(long, value_name = "KIND:PATH", value_parser = parse_meter)]
    pub meter: Option<MeterSpec>,
}

fn parse_meter(s: &str) -> Result<MeterSpec, String> {
    s.parse::<MeterSpec>().map_err(|e| e.to_string())
}

impl EnergyArgs {
    pub fn resolve(&self) -> Result<board::Resolved> {
        // The environment's stand-ins for the flags are read here, not in the library.
        let env_board = std::env::var(board::BOARD_ENV).ok();
        let forced = match (&self.board, &env_board) {
            (Some(name), _) => Some((name.as_str(), "--board")),
            (None, Some(name)) => Some((name.as_str(), board::BOARD_ENV)),
            (None, None) => None,
        };
        let sysfs_root = self
            .sysfs_root
            .clone()
            .or_else(|| std::env::var_os(board::SYSFS_ROOT_ENV).filter(|dir| !dir.is_empty()).map(PathBuf::from));
        Ok(board::resolve(self.boards.as_deref(), forced, sysfs_root.as_deref())?)
    }

    /// Chooses the board, opens its sensor (or the estimate) and measures the idle baseline.
    /// With `--meter`, the meter instead of the board's sensor (an error when it cannot be read).
    pub fn start(&self) -> Result<EnergyContext> {
        self.start_resolved(&self.resolve()?)
    }

    /// As `start`, on a board and root already resolved.
    pub fn start_resolved(&self, r: &board::Resolved) -> Result<EnergyContext> {
        match &self.meter {
            Some(spec) => Ok(EnergyContext::start_meter(&r.detection.board, &r.root, spec)?),
            None => Ok(EnergyContext::start(&r.detection.board, &r.root)),
        }
    }
}

/// A number in (0, 1].
pub fn fraction_open(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction in (0, 1] (e.g. 0.85 for 85%)"))
    }
}

/// A number in (0, 1), both ends excluded (a risk level or a probability of failure).
pub fn fraction_strict(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1): it must be above 0 and below 1 (e.g. 0.05)"))
    }
}

/// A number in [0, 1].
pub fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction in [0, 1]"))
    }
}

/// A whole number of at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

/// A number of at least 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be 0 or more"))
    }
}

/// A number above 0.
pub fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be more than 0"))
    }
}

/// How a command that ran ended: inputs that failed (exit 3), and inputs answered locally,
/// marked degraded, because the host could not answer them (exit 4 when none failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub failed: usize,
    pub degraded: usize,
}

impl Outcome {
    pub fn failed(failed: usize) -> Outcome {
        Outcome { failed, degraded: 0 }
    }

    /// The exit code, with a line on stderr saying why when it is not 0.
    pub fn exit_code(self) -> ExitCode {
        let degraded = match self.degraded {
            0 => String::new(),
            n => format!("{n} input(s) answered locally, marked degraded: the host could not answer them"),
        };
        if self.failed > 0 {
            let also = if degraded.is_empty() { String::new() } else { format!("; {degraded}") };
            eprintln!("edgecascade: {} input(s) failed (reported above){also}", self.failed);
            ExitCode::from(3)
        } else if self.degraded > 0 {
            eprintln!("edgecascade: {degraded} (warnings above)");
            ExitCode::from(4)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Prints a run's summary; returns how the run ended.
pub fn finish(sink: &mut Sink, summary: &Summary) -> Result<Outcome> {
    if sink.json {
        writeln!(sink.out, "{}", session::summary_json(summary)?)?;
    } else {
        writeln!(sink.out, "{}", session::summary_text(summary))?;
    }
    Ok(Outcome { failed: summary.failed, degraded: summary.degraded })
}

/// Prints `value` as JSON, or its text.
pub fn print<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", text(value));
    }
    Ok(())
}
