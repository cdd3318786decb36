//! `host`: serves the cascade's last stage (the large model) to devices over a serial link, TCP
//! and/or the Open Inference Protocol v2.

use super::{runner_opts, CascadeArgs, EnergyArgs, UsageError};
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use edgecascade::host::batch::BatchConfig;
use edgecascade::host::oip::{self as oip_server, OipConfig};
use edgecascade::host::Host;
use edgecascade::link::{LinkAddr, LinkError};
use edgecascade::model::Model;
use edgecascade::offload::Backoff;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The host's model, links and limits.
#[derive(Args)]
#[command(group(ArgGroup::new("serve").required(true).multiple(true).args(["link", "listen", "oip_listen"])))]
pub struct HostArgs {
    /// Cascade configuration whose last stage is served (default: ./cascade.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve this model manifest instead of the config's last stage.
    #[arg(long, value_name = "MANIFEST")]
    model: Option<PathBuf>,
    /// A serial link to serve, `serial:/dev/ttyUSB0?baud=921600` (at least one of --link,
    /// --listen and --oip-listen).
    #[arg(long, value_name = "LINK", conflicts_with = "listen", value_parser = serial_link)]
    link: Option<LinkAddr>,
    /// Listen for devices over TCP, `tcp:ADDR:PORT`, or a bare PORT for tcp:127.0.0.1:PORT
    /// (loopback unless you name another address).
    #[arg(long, value_name = "tcp:ADDR:PORT", value_parser = tcp_listen)]
    listen: Option<LinkAddr>,
    /// Serve the Open Inference Protocol v2 over HTTP on ADDR:PORT (a bare port: loopback),
    /// for Triton's clients, KServe and devices with an `oip+http://` link.
    #[arg(long, value_name = "ADDR:PORT")]
    oip_listen: Option<String>,
    /// Devices served at once over TCP, and OIP requests served at once (past it a request
    /// waits up to 1 s, then gets 503; OIP connections between requests take no slot).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = super::at_least_one)]
    max_devices: usize,
    /// Dynamic batching: run up to N queued requests (from every device and the OIP endpoint)
    /// through the model at once; 1 turns batching off.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch_max: u32,
    /// With --batch-max: how long the first request of a batch waits for others.
    #[arg(long, value_name = "MS", default_value_t = 5.0, value_parser = super::non_negative)]
    batch_wait_ms: f64,
    /// With --batch-max: batches run at once (model instances; default: one per core).
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
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

/// `--link`: a serial link (TCP devices come through --listen).
fn serial_link(s: &str) -> Result<LinkAddr, String> {
    match s.parse::<LinkAddr>().map_err(|e| e.to_string())? {
        addr @ LinkAddr::Serial { .. } => Ok(addr),
        other => Err(format!("--link takes serial:PATH?baud=B (use --listen tcp:ADDR:PORT for TCP), not {other}")),
    }
}

/// `--listen`: `tcp:ADDR:PORT`, or a bare port, which listens on loopback.
fn tcp_listen(s: &str) -> Result<LinkAddr, String> {
    if let Ok(port) = s.trim().parse::<u16>() {
        return Ok(LinkAddr::Tcp { addr: format!("127.0.0.1:{port}") });
    }
    match s.parse::<LinkAddr>().map_err(|e| e.to_string())? {
        addr @ LinkAddr::Tcp { .. } => Ok(addr),
        other => Err(format!("--listen takes tcp:ADDR:PORT or a bare PORT, not {other}")),
    }
}

/// The host model's manifest: `--model`, or the config's last stage.
fn host_manifest(config: Option<PathBuf>, model: Option<&Path>) -> Result<PathBuf> {
    Ok(match model {
        Some(m) => m.to_owned(),
        None => CascadeArgs::plain(config).resolve()?.stages.last().expect("a config has a stage").model.clone(),
    })
}

/// Runs `host` until killed.
pub fn run(args: HostArgs) -> Result<()> {
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
            edgecascade::host::serve_tcp(host, listener, args.max_devices, stop)?;
            Ok(())
        }
        (_, Some(other)) => bail!(UsageError(format!("--listen takes tcp:ADDR:PORT, not {other}"))),
        (Some(addr @ LinkAddr::Serial { path, .. }), None) => serve_serial(&host, addr, path, &name, &stop),
        (Some(other), None) => bail!(UsageError(format!(
            "--link takes serial:PATH?baud=B (use --listen tcp:ADDR:PORT for TCP), not {other}"
        ))),
        (None, None) => match oip {
            Some(t) => Ok(t.join().map_err(|_| anyhow::anyhow!("the OIP endpoint failed"))??),
            None => {
                bail!(UsageError("give --link serial:PATH, --listen tcp:ADDR:PORT or --oip-listen ADDR:PORT".into()))
            }
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
                log::info!(
                    "{addr}: {} requests ({} audits), {} answered, {} errors",
                    stats.requests,
                    stats.audits,
                    stats.answered,
                    stats.errors
                );
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
