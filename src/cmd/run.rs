//! `run`: the device. Every stage but the last here, the last on the host over a link; inputs
//! from files, a watched folder or an MJPEG stream.

use super::device::{device_pipeline, DeviceArgs};
use super::{finish, Outcome};
use anyhow::{bail, Result};
use clap::Args;
use edgecascade::link::LinkAddr;
use edgecascade::run::inputs;
use edgecascade::run::session::{self, Sink};
use edgecascade::tune::dataset;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The host: `serial:/dev/ttyUSB0?baud=921600`, `tcp:HOST:PORT` or
    /// `oip+http://HOST:PORT/v2/models/NAME`.
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
}

pub fn run(a: RunArgs) -> Result<Outcome> {
    let DeviceArgs { cascade: args, link, energy, log, accept_damaged, json } = &a.device;
    let json = *json;
    let watch = a.watch.map(|dir| {
        let opts = inputs::WatchOptions {
            max: a.max_inputs,
            idle: a.idle_exit.map(Duration::from_secs_f64),
            settle: Duration::from_secs_f64(a.settle.max(0.0)),
        };
        (dir, opts)
    });
    let paths = &a.paths;
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
    let remote = link.remote(a.addr, &args.resolve()?)?;
    let mut pipeline = device_pipeline(args, remote, link.start_degraded)?;
    pipeline.energy = Some(energy.start()?);
    pipeline.accept_damaged = *accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json, log: log.map(|(l, _)| l), labels: None };
    let summary = session::drive(&mut pipeline, inputs, &mut sink)?;
    finish(&mut sink, &summary)
}
