//! The `edgecascade` command: parses the command line, loads the configuration and models,
//! dispatches to a subcommand and turns errors into messages and exit codes (1: the command
//! could not run; 3: it ran, but some inputs failed and were reported; 4: it ran and answered
//! every input, but some locally, marked degraded, because the host could not answer them).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use edgecascade::board;
use edgecascade::config::{CascadeConfig, Overrides, DEFAULT_CONFIG};
use edgecascade::core::policy::Metric;
use edgecascade::energy::{self, EnergyContext};
use edgecascade::host::batch::BatchConfig;
use edgecascade::host::oip::{self as oip_server, OipConfig};
use edgecascade::host::{self, Host};
use edgecascade::link::{Encoding, LinkAddr, LinkError, SerialStream, Shaping};
use edgecascade::model::manifest::Manifest;
use edgecascade::model::runner::{ForcedKernels, KernelOptions, RunnerOptions};
use edgecascade::model::Model;
use edgecascade::offload::oip::OipRemote;
use edgecascade::offload::{Backoff, ConnectError, Remote, RemoteConfig, RemoteStage};
use edgecascade::run::inputs;
use edgecascade::run::pipeline::Pipeline;
use edgecascade::run::results_log::{self, ResultsLog};
use edgecascade::run::session::{self, Sink, Summary};
use edgecascade::tune::dataset;
use edgecascade::tune::eval;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "edgecascade", version, about = "Early-exit model cascades for edge devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for each model's matrix products (default: every core for the commands that
    /// answer one input at a time; 1 for eval and calibrate, which spread images over cores).
    #[arg(long, global = true)]
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

/// A number in (0, 1].
fn fraction_open(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction in (0, 1] (e.g. 0.85 for 85%)"))
    }
}

/// A number in [0, 1].
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction in [0, 1]"))
    }
}

/// A whole number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

/// A number above 0.
fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be more than 0"))
    }
}

fn parse_kernels(s: &str) -> Result<ForcedKernels, String> {
    ForcedKernels::parse(s).map_err(|e| e.to_string())
}

/// How every model of this run is loaded (set once from the command line in `main`).
static RUNNER: std::sync::OnceLock<RunnerOptions> = std::sync::OnceLock::new();

fn runner_opts() -> &'static RunnerOptions {
    RUNNER.get_or_init(RunnerOptions::default)
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with the cascade, printing each answer.
    Classify {
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
    },
    /// The main job: the host (large model) and the device (small model) joined by a real
    /// serial link (a pseudo-terminal pair), classifying the demo photos or a labeled folder.
    Demo {
        #[command(flatten)]
        device: DeviceArgs,
        /// A labeled folder (images and labels.csv) instead of the demo photos; adds accuracy.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Serve the cascade's last stage (the large model) to devices over a link, and/or over
    /// the Open Inference Protocol v2 (HTTP).
    Host {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Run the cascade on this device, offloading unsure inputs to a host over a link.
    Run {
        #[command(flatten)]
        device: DeviceArgs,
        /// The host: `serial:/dev/ttyUSB0?baud=921600` or `tcp:HOST:PORT`.
        #[arg(long = "link", value_name = "LINK")]
        addr: LinkAddr,
        /// Image files or folders; `-` reads a stream of JPEG frames (MJPEG) on standard input.
        paths: Vec<PathBuf>,
        /// Classify each new image written into this folder.
        #[arg(long, value_name = "DIR", conflicts_with = "paths")]
        watch: Option<PathBuf>,
        /// With --watch: stop after this many inputs.
        #[arg(long)]
        max_inputs: Option<usize>,
        /// With --watch: stop after this many seconds without a new image.
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
        /// With --watch: take a file no writer was seen closing (files there at start, or
        /// everywhere without inotify) once unchanged for this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        settle: f64,
    },
    /// Choose the threshold from labeled data: sweep every metric, with and without ensembling
    /// and temperature scaling, price each point, and write the chosen one into a new config.
    Calibrate {
        /// Cascade configuration to calibrate (default: ./cascade.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Folder with images and a labels.csv.
        #[arg(long)]
        data: PathBuf,
        /// The cheapest point at least this accurate (0..1). Default: the best single model's accuracy.
        #[arg(long, group = "target")]
        #[arg(value_parser = fraction_open)]
        target_accuracy: Option<f64>,
        /// The most accurate point within this many MACs per input.
        #[arg(long, group = "target")]
        #[arg(value_parser = positive)]
        budget_macs: Option<f64>,
        /// The most accurate point within this many device millijoules per input.
        #[arg(long, group = "target")]
        #[arg(value_parser = positive)]
        budget_mj: Option<f64>,
        /// The most accurate point within this many milliseconds per input.
        #[arg(long, group = "target")]
        #[arg(value_parser = positive)]
        budget_ms: Option<f64>,
        /// The most accurate point forwarding at most this fraction of inputs.
        #[arg(long, group = "target")]
        #[arg(value_parser = fraction)]
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
        /// The device's board (its power model and link energy price the device's side).
        #[command(flatten)]
        energy: EnergyArgs,
        /// Images decoded and run at once (default: every core).
        #[arg(long, value_parser = at_least_one)]
        jobs: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Compare a results log of `run` or `demo` with the calibration: forward rate, drift,
    /// compute saved, per-stage figures.
    Report {
        /// The results log (JSON lines, from --log).
        log: PathBuf,
        /// The config whose [calibration] predicted the run (default: ./cascade.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measure each model's and the cascade's top-1 accuracy and cost on a labeled folder.
    /// List the board profiles; show the board detected here, its power sensor and a live reading.
    Boards {
        #[command(flatten)]
        energy: EnergyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Energy per inference and latency per stage, MLPerf Tiny style: several runs, each at
    /// least a minimum time and number of inferences over a labeled folder, the local cascade.
    Bench {
        #[command(flatten)]
        cascade: CascadeArgs,
        #[command(flatten)]
        energy: EnergyArgs,
        /// Labeled folder (images and labels.csv) cycled through (default: photos/).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Runs; the median energy per inference over them is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// Minimum seconds per run.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        min_seconds: f64,
        /// Minimum inferences per run.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        min_inferences: u32,
        /// Top-1 accuracy (0 to 1) the cascade must reach on the data; below it the command fails.
        #[arg(long, value_name = "FRACTION")]
        min_top1: Option<f64>,
        #[arg(long)]
        json: bool,
    },
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

/// What `run` and `demo` share: the cascade, the link, the board, the results log.
#[derive(Args)]
struct DeviceArgs {
    #[command(flatten)]
    cascade: CascadeArgs,
    #[command(flatten)]
    link: LinkArgs,
    #[command(flatten)]
    energy: EnergyArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Answer damaged images (a JPEG cut short, corrupt data) as far as they decode, marked
    /// `damaged`, instead of reporting them as errors.
    #[arg(long)]
    accept_damaged: bool,
    #[arg(long)]
    json: bool,
}

/// The results log.
#[derive(Args)]
struct LogArgs {
    /// Append one JSON line per input to this file (time, run id, sequence number, answer),
    /// synced to the disk before the next input.
    #[arg(long = "log", value_name = "FILE")]
    path: Option<PathBuf>,
    /// Start a new log file when it would pass this many MB (FILE.1, FILE.2, ... keep the
    /// older ones).
    #[arg(long, value_name = "MB", requires = "path")]
    log_max_mb: Option<f64>,
    /// With --log-max-mb: how many older files to keep.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "log_max_mb")]
    log_keep: usize,
}

impl LogArgs {
    /// Opens the log (closing a torn last line, continuing its sequence numbers); also what it
    /// found in it.
    fn open(&self) -> Result<Option<(ResultsLog, results_log::Found)>> {
        let Some(p) = &self.path else { return Ok(None) };
        if self.log_max_mb.is_some_and(|m| m.is_nan() || m <= 0.0) {
            bail!("--log-max-mb must be more than 0");
        }
        let rotation =
            self.log_max_mb.map(|mb| results_log::Rotation { max_bytes: (mb * 1e6) as u64, keep: self.log_keep });
        let (log, found) = ResultsLog::open(p, &results_log::run_id(), rotation)
            .with_context(|| format!("cannot open the results log {}", p.display()))?;
        if found.torn {
            log::warn!(
                "the results log {} ended in a torn line (the last run was cut off mid-write); it goes on on a new line",
                p.display()
            );
        }
        Ok(Some((log, found)))
    }
}

/// The host's model, links and limits.
#[derive(Args)]
struct HostArgs {
    /// Cascade configuration whose last stage is served (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve this model manifest instead of the config's last stage.
    #[arg(long, value_name = "MANIFEST")]
    model: Option<PathBuf>,
    /// A serial link to serve, `serial:/dev/ttyUSB0?baud=921600`.
    #[arg(long, value_name = "LINK", conflicts_with = "listen", required_unless_present_any = ["listen", "oip_listen"])]
    link: Option<LinkAddr>,
    /// Listen for devices over TCP, `tcp:ADDR:PORT` (loopback unless you name another address).
    #[arg(long, value_name = "tcp:ADDR:PORT")]
    listen: Option<LinkAddr>,
    /// Serve the Open Inference Protocol v2 over HTTP on ADDR:PORT (a bare port: loopback),
    /// for Triton's clients, KServe and devices with an `oip+http://` link.
    #[arg(long, value_name = "ADDR:PORT")]
    oip_listen: Option<String>,
    /// Devices served at once over TCP, and OIP requests served at once (past it a request
    /// waits up to 1 s, then gets 503; OIP connections between requests take no slot).
    #[arg(long, default_value_t = 64)]
    max_devices: usize,
    /// Dynamic batching: run up to N queued requests (from every device and the OIP endpoint)
    /// through the model at once; 1 turns batching off.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch_max: u32,
    /// With --batch-max: how long the first request of a batch waits for others.
    #[arg(long, value_name = "MS", default_value_t = 5.0)]
    batch_wait_ms: f64,
    /// With --batch-max: batches run at once (model instances; default: one per core).
    #[arg(long, value_name = "N")]
    batch_workers: Option<usize>,
    /// With --batch-max: form batches of up to N even where the start-up timing finds they run
    /// no input faster than single runs (by default only sizes that pay are formed).
    #[arg(long)]
    batch_always: bool,
    /// A pre-shared key devices must present (TCP: in the handshake; OIP: `Authorization:
    /// Bearer`). Prefer the EDGECASCADE_TOKEN variable: arguments show in `ps`.
    #[arg(long, env = "EDGECASCADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The host's board: with a power sensor, each answer carries the host's energy.
    #[command(flatten)]
    energy: EnergyArgs,
}

/// How the device uses its link.
#[derive(Args)]
struct LinkArgs {
    /// Payload encoding to send: crop-jpeg, original or crop-raw.
    #[arg(long, default_value = "crop-jpeg")]
    encoding: Encoding,
    /// JPEG quality of a crop-jpeg payload.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
    /// Pace the link to rehearse a slower one, e.g. `baud=115200,latency=20ms,loss=0.001`.
    #[arg(long, value_name = "SPEC")]
    shape: Option<Shaping>,
    /// Milliseconds to wait for the host's answer before sending again.
    #[arg(long, default_value_t = 5000)]
    reply_timeout_ms: u64,
    /// Sends per request before answering locally, degraded.
    #[arg(long, default_value_t = 3)]
    tries: u32,
    /// The host's pre-shared key, when it needs one (or set EDGECASCADE_TOKEN).
    #[arg(long, env = "EDGECASCADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run even when the link does not work at start (no such device, not a terminal, nothing
    /// listening, no answer to the handshake): answer locally, marked degraded, until the host
    /// answers. Without it that is an error at start.
    #[arg(long)]
    start_degraded: bool,
}

impl LinkArgs {
    fn remote_config(&self, addr: LinkAddr, ensemble: bool) -> RemoteConfig {
        let mut c = RemoteConfig::new(addr);
        let mut encodings = vec![self.encoding];
        encodings.extend(
            [Encoding::CropJpeg, Encoding::Original, Encoding::CropRaw].into_iter().filter(|e| *e != self.encoding),
        );
        c.encodings = encodings;
        c.jpeg_quality = self.jpeg_quality;
        c.shaping = self.shape.clone();
        c.reply_timeout = Duration::from_millis(self.reply_timeout_ms);
        c.tries = self.tries;
        c.want_probs = ensemble;
        c.token = self.token.clone().filter(|t| !t.is_empty());
        c
    }

    /// The remote last stage for `addr`: the framed link, or an OIP v2 server, which takes
    /// tensors made as the config's last stage's manifest says.
    fn remote(&self, addr: LinkAddr, config: &CascadeConfig) -> Result<Box<dyn RemoteStage>> {
        let mut c = self.remote_config(addr, config.ensemble);
        Ok(match &c.addr {
            LinkAddr::Oip { .. } => {
                let last = &config.stages.last().expect("a config has a stage").model;
                c.tensor_spec = Some(
                    Manifest::load(last)
                        .with_context(|| format!("the OIP link needs the host model's manifest {}", last.display()))?
                        .input,
                );
                Box::new(OipRemote::new(c).map_err(anyhow::Error::msg)?)
            }
            _ => Box::new(Remote::new(c)),
        })
    }
}

/// Which board this is and where its sensors are: the energy figure of each stage.
#[derive(Args)]
struct EnergyArgs {
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
}

impl EnergyArgs {
    fn resolve(&self) -> Result<board::Resolved> {
        Ok(board::resolve(self.boards.as_deref(), self.board.as_deref(), self.sysfs_root.as_deref())?)
    }

    /// Chooses the board, opens its sensor (or the estimate) and measures the idle baseline.
    fn start(&self) -> Result<EnergyContext> {
        let r = self.resolve()?;
        Ok(EnergyContext::start(&r.detection.board, &r.root))
    }
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_image = matches!(cli.command, Command::Eval { .. } | Command::Calibrate { .. });
    let threads = edgecascade::model::runner::set_threads(cli.threads.unwrap_or(if per_image { 1 } else { cores }));
    log::info!("tract: {threads} thread(s); CPU {}", edgecascade::model::runner::cpu_features());
    let _ = RUNNER.set(RunnerOptions {
        int8_rewrite: cli.qdq == QdqPath::Int8,
        kernels: KernelOptions {
            forced: cli.int8_kernel.clone().unwrap_or_default(),
            cache_dir: Some(cli.kernel_cache.clone().unwrap_or_else(edgecascade::tune::cache::default_dir)),
        },
    });
    let result = match cli.command {
        Command::Classify { cascade, energy, paths, accept_damaged, json } => {
            classify(&cascade, &energy, &paths, accept_damaged, json)
        }
        Command::Demo { device, data } => demo(&device, data.as_deref()),
        Command::Host { host } => serve(&host).map(|()| Outcome::default()),
        Command::Run { device, addr, paths, watch, max_inputs, idle_exit, settle } => {
            let watch = watch.map(|dir| {
                let opts = inputs::WatchOptions {
                    max: max_inputs,
                    idle: idle_exit.map(Duration::from_secs_f64),
                    settle: Duration::from_secs_f64(settle.max(0.0)),
                };
                (dir, opts)
            });
            run_device(&device, addr, &paths, watch)
        }
        Command::Boards { energy, json } => run_boards(&energy, json).map(|()| Outcome::default()),
        Command::Bench { cascade, energy, data, runs, min_seconds, min_inferences, min_top1, json } => {
            let options = edgecascade::tune::bench::BenchOptions {
                runs: runs as usize,
                min_duration: Duration::try_from_secs_f64(min_seconds).unwrap_or(Duration::MAX),
                min_inferences: min_inferences as usize,
                min_top1,
            };
            run_bench(&cascade, &energy, data.as_deref(), &options, json).map(Outcome::failed)
        }
        Command::Calibrate {
            config,
            data,
            target_accuracy,
            budget_macs,
            budget_mj,
            budget_ms,
            max_forward,
            out,
            force,
            cache,
            link_baud,
            energy,
            jobs,
            json,
        } => {
            use edgecascade::core::calibrate::Target;
            let target = target_accuracy
                .map(Target::Accuracy)
                .or(budget_macs.map(Target::Macs))
                .or(budget_mj.map(Target::Mj))
                .or(budget_ms.map(Target::Ms))
                .or(max_forward.map(Target::MaxForward));
            let options = (|| -> Result<edgecascade::tune::CalibrateOptions> {
                Ok(edgecascade::tune::CalibrateOptions {
                    data,
                    target,
                    out,
                    force,
                    cache_dir: cache.unwrap_or_else(edgecascade::tune::cache::default_dir),
                    jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                    link: edgecascade::tune::LinkAssumptions { baud: link_baud, ..Default::default() },
                    jpeg_quality: 90,
                    board: energy.resolve()?.detection.board,
                    runner: runner_opts().clone(),
                })
            })();
            options.and_then(|o| run_calibrate(config, &o, json)).map(Outcome::failed)
        }
        Command::Report { log, config, json } => run_report(&log, config, json).map(Outcome::failed),
        Command::Eval { cascade, data, compare, predictions, jobs, json } => {
            run_eval(&cascade, &data, &compare, predictions.as_deref(), jobs, json).map(Outcome::failed)
        }
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("edgecascade: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs `classify`.
fn classify(
    args: &CascadeArgs,
    energy: &EnergyArgs,
    paths: &[PathBuf],
    accept_damaged: bool,
    json: bool,
) -> Result<Outcome> {
    let files = dataset::collect_inputs(paths)?;
    let mut pipeline = Pipeline::local(args.resolve()?, runner_opts())?;
    pipeline.energy = Some(energy.start()?);
    pipeline.accept_damaged = accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json, log: None, labels: None };
    let summary = session::drive(&mut pipeline, inputs::Files::new(files), &mut sink)?;
    finish(&mut sink, &summary)
}

/// Prints the summary; returns how the run ended.
fn finish(sink: &mut Sink, summary: &Summary) -> Result<Outcome> {
    if sink.json {
        writeln!(sink.out, "{}", serde_json::to_string(summary)?)?;
    } else {
        writeln!(sink.out, "{}", session::summary_text(summary))?;
    }
    Ok(Outcome { failed: summary.failed, degraded: summary.degraded })
}

/// How a command that ran ended: inputs that failed (exit 3), and inputs answered locally,
/// marked degraded, because the host could not answer them (exit 4 when none failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Outcome {
    failed: usize,
    degraded: usize,
}

impl Outcome {
    fn failed(failed: usize) -> Outcome {
        Outcome { failed, degraded: 0 }
    }

    /// The exit code, with a line on stderr saying why when it is not 0.
    fn exit_code(self) -> ExitCode {
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

/// The host model's manifest: `--model`, or the config's last stage.
fn host_manifest(config: Option<PathBuf>, model: Option<&Path>) -> Result<PathBuf> {
    Ok(match model {
        Some(m) => m.to_owned(),
        None => {
            let args = CascadeArgs { config, threshold: None, metric: None, ensemble: false };
            args.resolve()?.stages.last().expect("a config has a stage").model.clone()
        }
    })
}

/// Runs `host` until killed.
fn serve(args: &HostArgs) -> Result<()> {
    let batching = args.batch_max > 1;
    let manifest = host_manifest(args.config.clone(), args.model.as_deref())?;
    let model =
        if batching { Model::load_batched(&manifest, runner_opts())? } else { Model::load(&manifest, runner_opts())? };
    let mut host = Host::new(model).with_token(args.token.clone());
    if batching {
        let wait = Duration::try_from_secs_f64(args.batch_wait_ms.max(0.0) / 1e3).unwrap_or(Duration::from_millis(5));
        let mut cfg = BatchConfig::new(args.batch_max as usize, wait);
        cfg.workers = args.batch_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        cfg.only_if_faster = !args.batch_always;
        log::info!(
            "dynamic batching: up to {} requests per batch, waiting at most {wait:?}, {} worker(s)",
            args.batch_max,
            cfg.workers
        );
        host = host.with_batching(cfg);
    }
    host.energy = Some(args.energy.start()?);
    if host.token.is_some() {
        log::info!("devices must present the token (TCP handshake, OIP bearer)");
    }
    let host = Arc::new(host);
    let stop = Arc::new(AtomicBool::new(false));
    let name = host.model.name().to_owned();
    let oip = match &args.oip_listen {
        Some(addr) => {
            let listener = oip_server::bind(addr).map_err(anyhow::Error::msg)?;
            warn_if_open(&listener, "--oip-listen", host.token.is_some());
            let bound = listener.local_addr().map_or_else(|_| addr.clone(), |a| a.to_string());
            // The ready line: scripts and tests read the bound port from it (`--oip-listen 127.0.0.1:0`).
            println!("edgecascade host: serving {name} over OIP v2 on http://{bound}/v2/models/{name}");
            std::io::stdout().flush()?;
            let (host, stop) = (host.clone(), stop.clone());
            let cfg = OipConfig { max_conns: args.max_devices.max(1), ..OipConfig::default() };
            Some(std::thread::spawn(move || oip_server::serve(host, listener, cfg, stop)))
        }
        None => None,
    };
    match (&args.link, &args.listen) {
        (_, Some(LinkAddr::Tcp { addr })) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
            warn_if_open(&listener, "--listen", host.token.is_some());
            // The ready line: scripts and tests read the bound port from it (`--listen tcp:127.0.0.1:0`).
            println!("edgecascade host: serving {name} on tcp:{}", listener.local_addr()?);
            std::io::stdout().flush()?;
            host::serve_tcp(host, listener, args.max_devices, stop)?;
            Ok(())
        }
        (_, Some(other)) => bail!("--listen takes tcp:ADDR:PORT, not {other}"),
        (Some(addr @ LinkAddr::Serial { path, .. }), None) => serve_serial(&host, addr, path, &name, &stop),
        (Some(other), None) => {
            bail!("--link takes serial:PATH?baud=B (use --listen tcp:ADDR:PORT for TCP), not {other}")
        }
        (None, None) => match oip {
            Some(t) => Ok(t.join().map_err(|_| anyhow::anyhow!("the OIP endpoint failed"))??),
            None => bail!("give --link serial:PATH, --listen tcp:ADDR:PORT or --oip-listen ADDR:PORT"),
        },
    }
}

/// Warns, on standard error and in the log, when a host listens beyond loopback without a token:
/// anyone who can reach the port can then use the host's model (and its CPU).
fn warn_if_open(listener: &std::net::TcpListener, flag: &str, token: bool) {
    let Ok(addr) = listener.local_addr() else { return };
    if !token && !addr.ip().is_loopback() {
        log::warn!(
            "{flag} {addr} listens beyond loopback without a token: anyone who can reach this port can use the \
             host; pass --token (or set EDGECASCADE_TOKEN) and give the devices the same"
        );
    }
}

/// Serves a device on the serial port at `addr` (its device `path`) until killed. The ready
/// line is printed once the port is open. A device that does not exist (a USB adapter not
/// plugged in yet, or unplugged since) is waited for, and a port that fails is reopened, with
/// a backoff from 1 s doubling to 30 s; a path that is not a terminal, or that this user may
/// not open, is an error at start.
fn serve_serial(host: &Host, addr: &LinkAddr, path: &Path, name: &str, stop: &AtomicBool) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut ready = false;
    loop {
        let failure = match edgecascade::link::connect(addr, Duration::from_secs(2)) {
            Ok(mut port) => {
                if !ready {
                    // The ready line: scripts and tests wait for it.
                    println!("edgecascade host: serving {name} on {addr}");
                    std::io::stdout().flush()?;
                    ready = true;
                } else {
                    log::info!("{addr}: open again, serving");
                }
                port.set_read_timeout(Some(Duration::from_millis(250)))?;
                let start = std::time::Instant::now();
                let stats = host.serve(port, &addr.to_string(), stop);
                log::info!("{addr}: {} requests, {} answered, {} errors", stats.requests, stats.answered, stats.errors);
                // A port that fails at once again and again is reopened ever more slowly.
                if stats.requests > 0 || start.elapsed() > Duration::from_secs(30) {
                    backoff.succeeded();
                }
                None
            }
            Err(LinkError::Io(e))
                if !ready
                    && matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::PermissionDenied) =>
            {
                bail!("cannot serve {addr}: {e}")
            }
            Err(e) => Some(e),
        };
        let wait = backoff.failed();
        let missing = matches!(&failure, Some(LinkError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound);
        match failure {
            Some(_) if missing => log::warn!(
                "waiting for {} to appear (serial link {addr}: a USB adapter not plugged in yet?); looking again in {wait:?}",
                path.display()
            ),
            Some(e) => log::warn!("cannot open {addr}: {e}; trying again in {wait:?}"),
            None => {}
        }
        // A device that appears is taken at once, not after the whole wait.
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until && !(missing && path.exists()) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The device pipeline over `remote`: every stage but the last loaded here. A link that does
/// not work at start is an error unless `start_degraded`.
fn device_pipeline(args: &CascadeArgs, mut remote: Box<dyn RemoteStage>, start_degraded: bool) -> Result<Pipeline> {
    let config = args.resolve()?;
    if config.stages.len() < 2 {
        bail!("{}: offloading needs at least two stages (the last one runs on the host)", config.path.display());
    }
    let info = match remote.connect() {
        Ok(info) => Some(info),
        Err(ConnectError::Refused(e)) => bail!("{e}"),
        Err(ConnectError::Unreachable(e)) if start_degraded => {
            log::warn!("{e}; answering locally (degraded) until the host answers (--start-degraded)");
            None
        }
        Err(ConnectError::Unreachable(e)) => bail!(
            "{e}\n(the link must work at start; give --start-degraded to run anyway, answering locally, \
             marked degraded, until the host answers)"
        ),
    };
    let name = match &info {
        Some(i) => i.model.clone(),
        None => {
            let last = &config.stages.last().expect("two stages").model;
            Manifest::load(last).map_or_else(|_| "host".to_owned(), |m| m.name)
        }
    };
    let pipeline = Pipeline::offloading(config, remote, name, runner_opts())?;
    if let Some(i) = info {
        let local = pipeline.models[0].classes.len();
        if i.classes != local {
            bail!("the host's model {} has {} classes, the device's {local}", i.model, i.classes);
        }
    }
    Ok(pipeline)
}

/// Runs `run`.
fn run_device(
    device: &DeviceArgs,
    addr: LinkAddr,
    paths: &[PathBuf],
    watch: Option<(PathBuf, inputs::WatchOptions)>,
) -> Result<Outcome> {
    let DeviceArgs { cascade: args, link, energy, log, accept_damaged, json } = device;
    let json = *json;
    let log = log.open()?;
    let inputs: Box<dyn inputs::Source> = match watch {
        Some((dir, opts)) => {
            let mut w = inputs::Watch::new(dir, opts)?;
            // A run stopped between logging an input and filing it away: it is answered.
            if let Some(last) = log.as_ref().and_then(|(_, f)| f.last_input.as_deref()) {
                let p = Path::new(last);
                if p.is_file() {
                    log::info!("{last} is answered in the results log already: moving it to done/");
                    w.already_done(p);
                }
            }
            Box::new(w)
        }
        None if paths.len() == 1 && paths[0] == Path::new("-") => {
            Box::new(inputs::Mjpeg::new(std::io::stdin(), edgecascade::link::DEFAULT_MAX_FRAME as usize))
        }
        None if paths.is_empty() => {
            bail!("give image files or folders, `-` for MJPEG on standard input, or --watch DIR")
        }
        None => Box::new(inputs::Files::new(dataset::collect_inputs(paths)?)),
    };
    let remote = link.remote(addr, &args.resolve()?)?;
    let mut pipeline = device_pipeline(args, remote, link.start_degraded)?;
    pipeline.energy = Some(energy.start()?);
    pipeline.accept_damaged = *accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json, log: log.map(|(l, _)| l), labels: None };
    let summary = session::drive(&mut pipeline, inputs, &mut sink)?;
    finish(&mut sink, &summary)
}

/// Runs `demo`.
fn demo(device: &DeviceArgs, data: Option<&Path>) -> Result<Outcome> {
    let DeviceArgs { cascade: args, link, energy, log, accept_damaged, json } = device;
    let json = *json;
    let config = args.resolve()?;
    let host_manifest = config.stages.last().expect("a config has a stage").model.clone();
    let (files, labels) = match data {
        Some(dir) => {
            let items = dataset::read_labels(dir, usize::MAX)?;
            let labels: HashMap<String, usize> = items
                .iter()
                .map(|i| (i.path.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned()), i.label))
                .collect();
            (items.into_iter().map(|i| i.path).collect(), Some(labels))
        }
        None => {
            let photos = PathBuf::from("photos");
            if !photos.is_dir() {
                bail!("no photos/ folder here: run the demo from the repository's root, or pass --data DIR");
            }
            (dataset::collect_inputs(&[photos])?, None)
        }
    };
    // The serial link: a real pseudo-terminal pair, the host on one end, the device on the other.
    let (device_end, host_end) = serialport::TTYPort::pair().context("cannot open a pseudo-terminal pair")?;
    let pty = serialport::SerialPort::name(&host_end).unwrap_or_else(|| "pty".into());
    let (device_end, host_end) = (SerialStream::new(device_end)?, SerialStream::new(host_end)?);
    let host = Host::new(Model::load(&host_manifest, runner_opts())?);
    let stop = AtomicBool::new(false);
    let device_end = std::sync::Mutex::new(device_end);
    let addr = LinkAddr::Serial { path: PathBuf::from(&pty), baud: edgecascade::link::DEFAULT_BAUD };
    let remote = Remote::with_opener(link.remote_config(addr, args.ensemble || config.ensemble), move || {
        let port = device_end.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        Ok(edgecascade::link::Stream::try_clone_box(&*port)?)
    });
    let mut out = std::io::stdout().lock();
    std::thread::scope(|s| -> Result<Outcome> {
        let host_thread = s.spawn(|| {
            let mut port = host_end;
            if let Err(e) = edgecascade::link::Stream::set_read_timeout(&mut port, Some(Duration::from_millis(100))) {
                log::warn!("host: cannot set the PTY timeout: {e}");
            }
            host.serve(port, &pty, &stop)
        });
        let result = (|| -> Result<Outcome> {
            let mut pipeline = device_pipeline(args, Box::new(remote), link.start_degraded)?;
            pipeline.energy = Some(energy.start()?);
            pipeline.accept_damaged = *accept_damaged;
            if !json {
                writeln!(
                    out,
                    "demo: device runs {} here; host runs {} across a serial link ({}, {})\n",
                    pipeline.names[..pipeline.names.len() - 1].join(" -> "),
                    pipeline.names.last().expect("two stages"),
                    pty,
                    match &link.shape {
                        Some(s) if s.is_active() => format!("paced: {s}; link times are modelled"),
                        _ => "a PTY pair, not paced: --shape baud=921600 rehearses a real UART".into(),
                    }
                )?;
            }
            let mut sink = Sink { out: &mut out, json, log: log.open()?.map(|(l, _)| l), labels };
            let summary = session::drive(&mut pipeline, inputs::Files::new(files), &mut sink)?;
            finish(&mut sink, &summary)
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stats = host_thread.join().map_err(|_| anyhow::anyhow!("the host thread panicked"))?;
        log::info!("host: {} requests, {} answered, {} errors", stats.requests, stats.answered, stats.errors);
        result
    })
}

/// Runs `calibrate`; an unmet target is an error (exit 1) after the closest point is shown.
fn run_calibrate(config: Option<PathBuf>, o: &edgecascade::tune::CalibrateOptions, json: bool) -> Result<usize> {
    let args = CascadeArgs { config, threshold: None, metric: None, ensemble: false };
    let c = edgecascade::tune::calibrate(args.resolve()?, o)?;
    if json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!("{}", edgecascade::tune::summary_text(&c));
    }
    if !c.met {
        bail!("no threshold meets the target {}; the closest point is shown above", c.target);
    }
    Ok(0)
}

/// Runs `report`.
fn run_report(log: &Path, config: Option<PathBuf>, json: bool) -> Result<usize> {
    let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let calibration = if path.exists() { CascadeConfig::load(&path)?.calibration } else { None };
    let r = edgecascade::tune::report(log, calibration.as_ref())?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", edgecascade::tune::report_text(&r));
    }
    Ok(0)
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
    let cascade = Pipeline::local(args.resolve()?, runner_opts())?;
    let extra = compare.iter().map(|p| Model::load(p, runner_opts())).collect::<Result<Vec<_>, _>>()?;
    let models: Vec<&Model> = cascade.models.iter().chain(extra.iter()).collect();
    let items = dataset::read_labels(data, models[0].classes.len())?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    log::info!("evaluating {} models on {} images of {}", models.len(), items.len(), data.display());
    let (records, failures) = eval::collect(&models, &items, jobs);
    for e in &failures {
        eprintln!("error: {e}");
    }
    let failed = failures.len();
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

/// Runs `boards`: the profiles, the board chosen here, its sensor and a live reading.
fn run_boards(args: &EnergyArgs, json: bool) -> Result<()> {
    let mut survey = energy::survey::survey(&args.resolve()?);
    survey.cpu = edgecascade::model::runner::cpu_features();
    if json {
        println!("{}", serde_json::to_string(&survey)?);
    } else {
        println!("{}", energy::survey::survey_text(&survey));
    }
    Ok(())
}

/// Runs `bench`; returns the number of inferences that failed.
fn run_bench(
    args: &CascadeArgs,
    energy_args: &EnergyArgs,
    data: Option<&Path>,
    options: &edgecascade::tune::bench::BenchOptions,
    json: bool,
) -> Result<usize> {
    if options.min_top1.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        bail!("--min-top1 is a fraction between 0 and 1");
    }
    let mut pipeline = Pipeline::local(args.resolve()?, runner_opts())?;
    let dir = data.map_or_else(|| PathBuf::from("photos"), Path::to_owned);
    if data.is_none() && !dir.is_dir() {
        bail!("no photos/ folder here: run from the repository's root, or pass --data DIR");
    }
    let mut inputs = Vec::new();
    for item in dataset::read_labels(&dir, pipeline.models[0].classes.len())? {
        let bytes = std::fs::read(&item.path).with_context(|| format!("cannot read {}", item.path.display()))?;
        inputs.push(edgecascade::tune::bench::BenchInput {
            name: item.path.display().to_string(),
            bytes,
            label: Some(item.label),
        });
    }
    let ctx = energy_args.start()?;
    log::info!(
        "bench: {} runs of at least {:?} and {} inferences over {} images of {}",
        options.runs,
        options.min_duration,
        options.min_inferences,
        inputs.len(),
        dir.display()
    );
    let mut report = edgecascade::tune::bench::run(&mut pipeline, &ctx, &inputs, options, &mut |r| {
        log::info!("bench run {}: {} inferences, {:.1} mJ per inference", r.run, r.inferences, r.mj_per_inference)
    });
    report.cpu = edgecascade::model::runner::cpu_features();
    report.threads = edgecascade::model::runner::threads();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", edgecascade::tune::bench::report_text(&report));
    }
    if report.accuracy_ok == Some(false) {
        bail!(
            "top-1 {:.1}% is below the target {:.1}%",
            report.top1.unwrap_or(0.0) * 100.0,
            options.min_top1.unwrap_or(0.0) * 100.0
        );
    }
    Ok(report.failed)
}
