//! `demo`, the main job: a host serving the large model and a device running the small one in
//! this process, joined by a real serial link (a pseudo-terminal pair).

use super::device::{device_pipeline, DeviceArgs};
use super::{finish, runner_opts, Outcome};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgecascade::host::Host;
use edgecascade::link::{LinkAddr, SerialStream};
use edgecascade::model::manifest::Kind;
use edgecascade::model::Model;
use edgecascade::offload::Remote;
use edgecascade::run::inputs;
use edgecascade::run::session::{self, Sink};
use edgecascade::tune::dataset;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// A labeled folder (images and labels.csv) instead of the demo photos, or for a text
    /// cascade a TSV of labeled sentences (`label<TAB>sentence`); adds accuracy.
    #[arg(long, value_name = "DIR|FILE.tsv")]
    data: Option<PathBuf>,
    /// A text cascade's inputs: one text a line of FILE (`-`: standard input), instead of the
    /// demo reviews (texts/reviews.txt).
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    lines: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<Outcome> {
    let DeviceArgs { cascade: args, link, energy, log, audit, accept_damaged, json } = &a.device;
    let data = a.data.as_deref();
    let json = *json;
    let config = args.resolve()?;
    super::check_text_inputs(a.lines.is_some(), &config)?;
    let auditor = audit.auditor(&config)?;
    let host_manifest = config.stages.last().expect("a config has a stage").model.clone();
    let text = super::device::config_kind(&config) == Kind::Text;
    let (inputs, labels): (Box<dyn inputs::Source>, _) = match data {
        Some(tsv) if dataset::is_text_data(tsv) => {
            let items = dataset::read_tsv(tsv, usize::MAX, &[])?;
            let named: Vec<inputs::Input> =
                items.iter().map(|i| (i.name(), i.bytes().map_err(|e| e.to_string()))).collect();
            let labels: HashMap<String, usize> = items
                .iter()
                .map(|i| {
                    (
                        Path::new(&i.name()).file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned()),
                        i.label,
                    )
                })
                .collect();
            (Box::new(named.into_iter()), Some(labels))
        }
        Some(dir) => {
            let items = dataset::read_labels(dir, usize::MAX)?;
            let labels: HashMap<String, usize> = items
                .iter()
                .map(|i| (i.path.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned()), i.label))
                .collect();
            (Box::new(inputs::Files::new(items.into_iter().map(|i| i.path).collect())), Some(labels))
        }
        None if a.lines.is_some() => (super::text_lines(a.lines.as_deref().expect("checked"))?, None),
        None if text => (super::text_lines(Path::new("texts/reviews.txt"))?, None),
        None => {
            let photos = PathBuf::from("photos");
            if !photos.is_dir() {
                bail!("no photos/ folder here: run the demo from the repository's root, or pass --data DIR");
            }
            (Box::new(inputs::Files::new(dataset::collect_inputs(&[photos])?)), None)
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
    let remote = Remote::with_opener(
        link.remote_config(addr, args.ensemble || config.ensemble, super::device::config_kind(&config)),
        move || {
            let port = device_end.lock().map_err(|_| std::io::Error::other("poisoned"))?;
            Ok(edgecascade::link::Stream::try_clone_box(&*port)?)
        },
    );
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
            let log = log.open()?.map(|(l, _)| l);
            let mut sink = Sink { out: &mut out, json, log, labels, audit: auditor };
            let summary = session::drive(&mut pipeline, inputs, &mut sink)?;
            finish(&mut sink, &summary)
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stats = host_thread.join().map_err(|_| anyhow::anyhow!("the host thread panicked"))?;
        log::info!(
            "host: {} requests ({} audits), {} answered, {} errors",
            stats.requests,
            stats.audits,
            stats.answered,
            stats.errors
        );
        result
    })
}
