//! What `run` and `demo` share, the device's side: the cascade, the link to the host, the
//! board, the results log, and the pipeline whose last stage is the host.

use super::{runner_opts, CascadeArgs, EnergyArgs, UsageError};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgecascade::config::CascadeConfig;
use edgecascade::link::{Encoding, LinkAddr, Shaping};
use edgecascade::model::manifest::{Kind, Manifest};
use edgecascade::offload::oip::OipRemote;
use edgecascade::offload::{ConnectError, Remote, RemoteConfig, RemoteStage};
use edgecascade::run::audit::{AdaptPlan, Auditor};
use edgecascade::run::pipeline::Pipeline;
use edgecascade::run::results_log::{self, ResultsLog};
use std::path::PathBuf;
use std::time::Duration;

/// What `run` and `demo` share: the cascade, the link, the board, the results log.
#[derive(Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub cascade: CascadeArgs,
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Answer damaged images (a JPEG cut short, corrupt data) as far as they decode, marked
    /// `damaged`, instead of reporting them as errors.
    #[arg(long)]
    pub accept_damaged: bool,
    /// One JSON object per input per line, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// The results log.
#[derive(Args)]
pub struct LogArgs {
    /// Append one JSON line per input to this file (time, run id, sequence number, answer),
    /// synced to the disk before the next input.
    #[arg(long = "log", value_name = "FILE")]
    path: Option<PathBuf>,
    /// Start a new log file when it would pass this many MB, more than 0 (FILE.1, FILE.2, ...
    /// keep the older ones).
    #[arg(long, value_name = "MB", requires = "path", value_parser = super::positive)]
    log_max_mb: Option<f64>,
    /// With --log-max-mb: how many older files to keep.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "log_max_mb")]
    log_keep: usize,
}

impl LogArgs {
    /// Opens the log (closing a torn last line, continuing its sequence numbers); also what it
    /// found in it.
    pub fn open(&self) -> Result<Option<(ResultsLog, results_log::Found)>> {
        let Some(p) = &self.path else { return Ok(None) };
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

/// The live audit of the device's answers, and the threshold adapted from it.
#[derive(Args)]
pub struct AuditArgs {
    /// Send this fraction of the inputs the device answered itself, in [0, 1], to the host as
    /// well, marked as audits, after their answers are written (off the latency path); the
    /// results log records the host's answer for each (`report` estimates the live
    /// disagreement rate from them).
    #[arg(long, value_name = "R", value_parser = super::fraction, allow_negative_numbers = true)]
    audit_rate: Option<f64>,
    /// The seed of the audit's random draw (default: from the clock, logged).
    #[arg(long, value_name = "N", requires = "audit_rate")]
    audit_seed: Option<u64>,
    /// Move the first stage's threshold online from the audits (adaptive conformal inference)
    /// to hold the device's disagreement with the host at the target, within the bounds of
    /// the config's [adapt] table; every change is logged. Needs --audit-rate above 0.
    #[arg(long, requires = "audit_rate")]
    adapt: bool,
    /// With --adapt: the disagreement rate to hold the device's answers to, in (0, 1)
    /// (default: the config's [adapt] target).
    #[arg(long, value_name = "E", requires = "adapt", value_parser = super::fraction_open)]
    adapt_target: Option<f64>,
    /// With --adapt: the threshold's step per audit, more than 0 (default: the config's
    /// [adapt] gamma, else 0.05).
    #[arg(long, value_name = "G", requires = "adapt", value_parser = super::positive)]
    adapt_gamma: Option<f64>,
}

impl AuditArgs {
    /// The auditor of this run, if auditing; a bad combination is a usage error.
    pub fn auditor(&self, config: &CascadeConfig) -> Result<Option<Auditor>> {
        let Some(rate) = self.audit_rate else { return Ok(None) };
        if self.adapt && rate <= 0.0 {
            bail!(UsageError("--adapt moves the threshold from the audits: it needs --audit-rate above 0".into()));
        }
        let seed = self.audit_seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ std::process::id() as u64
        });
        log::info!("audit: {rate} of the device's answers sent to the host as well (seed {seed})");
        let auditor = Auditor::new(rate, seed);
        if !self.adapt {
            return Ok(Some(auditor));
        }
        let first = &config.stages[0].policy;
        let start = first.threshold.unwrap_or(0.0) as f64;
        let plan = AdaptPlan::resolve(start, first.metric, config.adapt.as_ref(), self.adapt_target, self.adapt_gamma)
            .map_err(UsageError)?;
        log::info!(
            "adapt: threshold of stage 0 from {} within {}..{}, step {}, target disagreement {}",
            plan.start,
            plan.lo,
            plan.hi,
            plan.gamma,
            plan.target
        );
        Ok(Some(auditor.adapting(plan)))
    }
}

/// How the device uses its link.
#[derive(Args)]
pub struct LinkArgs {
    #[command(flatten)]
    payload: super::PayloadArgs,
    /// Pace the link to rehearse a slower one, e.g. `baud=115200,latency=20ms,loss=0.001`.
    #[arg(long, value_name = "SPEC")]
    pub shape: Option<Shaping>,
    /// Milliseconds to wait for the host's answer before sending again (at least 1).
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    reply_timeout_ms: u64,
    /// Sends per request before answering locally, degraded (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    tries: u32,
    /// The host's pre-shared key, when it needs one (or set EDGECASCADE_TOKEN).
    #[arg(long, env = "EDGECASCADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run even when the link does not work at start (no such device, not a terminal, nothing
    /// listening, no answer to the handshake): answer locally, marked degraded, until the host
    /// answers. Without it that is an error at start.
    #[arg(long)]
    pub start_degraded: bool,
}

impl LinkArgs {
    /// The remote stage's settings for a cascade whose models take `kind` (a text cascade's
    /// inputs travel as text, whatever `--encoding` says).
    pub fn remote_config(&self, addr: LinkAddr, ensemble: bool, kind: Kind) -> RemoteConfig {
        let mut c = RemoteConfig::new(addr);
        let p = self.payload.spec();
        let mut encodings = vec![p.encoding];
        encodings.extend(
            [Encoding::CropJpeg, Encoding::Original, Encoding::CropRaw].into_iter().filter(|e| *e != p.encoding),
        );
        if kind == Kind::Text {
            encodings = vec![Encoding::Text];
        }
        c.encodings = encodings;
        c.jpeg_quality = p.jpeg_quality;
        c.shaping = self.shape.clone();
        c.reply_timeout = Duration::from_millis(self.reply_timeout_ms);
        c.tries = self.tries;
        c.want_probs = ensemble;
        c.token = self.token.clone().filter(|t| !t.is_empty());
        c
    }

    /// The remote last stage for `addr`: the framed link, or an OIP v2 server, which takes
    /// tensors made as the config's last stage's manifest says.
    pub fn remote(&self, addr: LinkAddr, config: &CascadeConfig) -> Result<Box<dyn RemoteStage>> {
        let mut c = self.remote_config(addr, config.ensemble, config_kind(config));
        Ok(match &c.addr {
            LinkAddr::Oip { .. } => {
                let last = &config.stages.last().expect("a config has a stage").model;
                let m = Manifest::load(last)
                    .with_context(|| format!("the OIP link needs the host model's manifest {}", last.display()))?;
                c.tensor_spec = m.image().ok().cloned();
                Box::new(OipRemote::new(c).map_err(anyhow::Error::msg)?)
            }
            _ => Box::new(Remote::new(c)),
        })
    }
}

/// What a config's models take, as its first stage's manifest says (image when it cannot be
/// read: loading the models then names the problem).
pub fn config_kind(config: &CascadeConfig) -> Kind {
    config.stages.first().and_then(|s| Manifest::load(&s.model).ok()).map_or(Kind::Image, |m| m.kind())
}

/// The device pipeline over `remote`: every stage but the last loaded here. A link that does
/// not work at start is an error unless `start_degraded`.
pub fn device_pipeline(args: &CascadeArgs, mut remote: Box<dyn RemoteStage>, start_degraded: bool) -> Result<Pipeline> {
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
