//! `run`: the device. Every stage but the last here, the last on the host over a link; inputs
//! from files, a watched folder or an MJPEG stream.

use super::device::{device_pipeline, DeviceArgs};
use super::{finish, Outcome, UsageError};
use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use edgecascade::link::LinkAddr;
use edgecascade::run::inputs;
use edgecascade::run::session::{self, Sink};
use edgecascade::tune::dataset;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
#[command(group(ArgGroup::new("inputs").required(true).args(["paths", "watch", "lines"])))]
pub struct RunArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The host: `serial:/dev/ttyUSB0?baud=921600`, `tcp:HOST:PORT` or
    /// `oip+http://HOST:PORT/v2/models/NAME`.
    #[arg(long = "link", value_name = "LINK")]
    addr: LinkAddr,
    /// Image files or folders; `-` (alone) reads a stream of JPEG frames (MJPEG) on standard
    /// input. These, or --watch DIR.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Classify each new image written into this folder.
    #[arg(long, value_name = "DIR", conflicts_with = "paths")]
    watch: Option<PathBuf>,
    /// A text cascade's inputs: one text a line of FILE (`-`: standard input), each named
    /// FILE:LINE.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["paths", "watch"])]
    lines: Option<PathBuf>,
    // The options of --watch conflict with paths rather than require --watch: one of the two is
    // required (the group "inputs"), and clap lets a conflict excuse a missing requirement.
    /// With --watch: stop after this many inputs (at least 1).
    #[arg(long, value_name = "N", conflicts_with = "paths", value_parser = super::at_least_one)]
    max_inputs: Option<usize>,
    /// With --watch: stop after this many seconds without a new image.
    #[arg(long, value_name = "SECS", conflicts_with = "paths", value_parser = super::non_negative)]
    idle_exit: Option<f64>,
    /// With --watch: take a file no writer was seen closing (files there at start, or
    /// everywhere without inotify) once unchanged for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, conflicts_with = "paths", value_parser = super::non_negative)]
    settle: f64,
}

pub fn run(a: RunArgs) -> Result<Outcome> {
    let DeviceArgs { cascade: args, link, energy, log, audit, accept_damaged, json } = &a.device;
    let json = *json;
    let watch = a.watch.map(|dir| {
        let opts = inputs::WatchOptions {
            max: a.max_inputs,
            idle: a.idle_exit.map(Duration::from_secs_f64),
            settle: Duration::from_secs_f64(a.settle),
        };
        (dir, opts)
    });
    let paths = &a.paths;
    if paths.len() > 1 && paths.iter().any(|p| p == Path::new("-")) {
        bail!(UsageError("`-` (MJPEG on standard input) is the only input when given: no paths beside it".into()));
    }
    let log = log.open()?;
    let inputs: Box<dyn inputs::Source> = match watch {
        None if a.lines.is_some() => super::text_lines(a.lines.as_deref().expect("checked"))?,
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
            bail!(UsageError("give image files or folders, `-` for MJPEG on standard input, or --watch DIR".into()))
        }
        None => Box::new(inputs::Files::new(dataset::collect_inputs(paths)?)),
    };
    let config = args.resolve()?;
    super::check_text_inputs(a.lines.is_some(), &config)?;
    let auditor = audit.auditor(&config)?;
    let remote = link.remote(a.addr, &config)?;
    let mut pipeline = device_pipeline(args, remote, link.start_degraded)?;
    pipeline.energy = Some(energy.start()?);
    pipeline.accept_damaged = *accept_damaged;
    let mut out = std::io::stdout().lock();
    let mut sink = Sink { out: &mut out, json, log: log.map(|(l, _)| l), labels: None, audit: auditor };
    let summary = session::drive(&mut pipeline, inputs, &mut sink)?;
    finish(&mut sink, &summary)
}
