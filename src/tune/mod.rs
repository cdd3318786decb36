//! The engines of `calibrate` and `report`: the I/O around the pure `calibrate` and `cost`
//! modules. `calibrate` loads every stage's model, gets their logits on a labeled folder
//! (from the cache when it holds), fits temperatures, prices the stages, sweeps every way of
//! deciding, picks the threshold for the target, and writes the config, the curves (CSV, JSON)
//! and the plot (SVG). `report` reads a results log and compares it with the calibration.

pub mod bench;
pub mod cache;
pub mod dataset;
pub mod eval;
pub mod guaranteed;
pub mod report;
mod summary;
#[cfg(test)]
mod tests;
pub mod timing;

use crate::board::Board;
use crate::config::{CalibrationInfo, CascadeConfig};
use crate::core::calibrate::{self, Curve, Merit, Point, Target};
use crate::core::cost::{Cost, CostModel, Figure, HostStage, Link, LocalStage};
use crate::core::plot;
use crate::core::policy::Metric;
use crate::energy::EnergyContext;
use crate::link::{self, InferRequest, InferResponse, Message};
use crate::model::runner::RunnerOptions;
use crate::model::Model;
use crate::model::ModelError;
use crate::offload::payload::PayloadSpec;
use crate::run::pipeline::Pipeline;
use crate::tune::dataset::{DatasetError, Labeled};
use crate::tune::eval::{Record, VsLast};
use guaranteed::{Guarantee, GuaranteeOptions, Reference, TargetCheck};
use serde::Serialize;
use timing::Timing;

pub use report::{report, report_against, report_text, AuditReport, Report};
use std::path::{Path, PathBuf};
pub use summary::summary_text;

/// Why `calibrate` or `report` could not run: a message naming the file or argument and what
/// is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

type Result<T, E = TuneError> = std::result::Result<T, E>;

/// `Err(TuneError::Invalid(..))` from a format string.
macro_rules! invalid {
    ($($t:tt)*) => { return Err(TuneError::Invalid(format!($($t)*))) };
}

/// Maps an I/O error to one naming what was done to which file.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TuneError {
    let path = path.to_owned();
    move |source| TuneError::Io { what, path, source }
}

/// How calibration prices the link to the host: a UART at `baud` (10 bits a byte) with a
/// turnaround of `rtt_ms`; its energy per byte comes from the board profile.
#[derive(Clone, Debug)]
pub struct LinkAssumptions {
    pub baud: u64,
    pub rtt_ms: f64,
}

impl Default for LinkAssumptions {
    fn default() -> Self {
        LinkAssumptions { baud: 921_600, rtt_ms: 1.0 }
    }
}

/// A board profile's figure as a cost-model figure, keeping its source and naming the board.
fn board_figure(value: f64, source: &str, board: &Board) -> Figure {
    let source = source.replacen("measurement:", "measured:", 1);
    let (kind, rest) = source.split_once(':').unwrap_or(("estimate", source.as_str()));
    Figure { value, source: format!("{kind}:{rest} (board profile {})", board.name) }
}

pub struct CalibrateOptions {
    pub data: PathBuf,
    pub target: Option<Target>,
    pub out: Option<PathBuf>,
    pub force: bool,
    pub cache_dir: PathBuf,
    pub jobs: usize,
    pub link: LinkAssumptions,
    /// What the device sends the host: the host stage is scored and priced on it.
    pub payload: PayloadSpec,
    /// The device's board profile: its link energy and idle power price the link.
    pub board: Board,
    /// Each span's energy while the stages are timed (as `classify` measures it).
    pub energy: Option<EnergyContext>,
    /// How the models are loaded.
    pub runner: RunnerOptions,
    /// `--max-drop E --delta D`: the guaranteed mode (instead of `target`).
    pub guarantee: Option<GuaranteeOptions>,
    /// `--agreement`: no labels; the last stage's answers are the reference.
    pub agreement: bool,
    /// `--from-log`: a results log whose host answers are the reference (with `agreement`).
    pub from_log: Option<PathBuf>,
}

/// The chosen point and everything printed about it.
#[derive(Serialize)]
pub struct Calibration {
    pub data: String,
    pub n: usize,
    /// Images that could not be read or decoded (`errors`, its first name, is the same).
    pub failed: usize,
    pub errors: usize,
    pub cache: String,
    pub temperatures: Vec<f64>,
    /// Each model alone (`name`, `top1`, `macs`), as `models` in `eval`.
    pub models: Vec<Single>,
    /// The same as `models`, under its first name.
    pub singles: Vec<Single>,
    pub target: String,
    /// True when the reference is the last stage's answer (`--agreement`), not labels: every
    /// `top1` is then the agreement with the last stage.
    pub agreement: bool,
    /// The guaranteed mode's outcome (`--max-drop`).
    pub guarantee: Option<Guarantee>,
    /// False when no point met the target: the closest one is reported, and nothing is written.
    pub met: bool,
    pub chosen: Chosen,
    pub merit: Option<Merit>,
    pub out: Option<String>,
    pub curves_csv: String,
    pub curves_json: String,
    pub plot: String,
    /// The deployed cascade: every stage but the last on the device, the last on the host
    /// over the link, priced on the payload (`payload`).
    pub cost_model: CostModel,
    /// The same stages all in this process, as `classify` and `bench` run them.
    pub cost_model_in_process: CostModel,
    /// How the stages' ms and mJ were measured.
    pub timing: Timing,
    /// What the host stage was scored and priced on, e.g. `crop-jpeg q90`.
    pub payload: String,
}

#[derive(Clone, Serialize)]
pub struct Single {
    pub name: String,
    pub top1: f64,
    /// 95% Clopper-Pearson interval of `top1`.
    pub top1_ci: [f64; 2],
    pub macs: f64,
}

#[derive(Serialize)]
pub struct Chosen {
    pub curve: String,
    pub metric: Metric,
    pub ensemble: bool,
    pub temperatures: Vec<f64>,
    pub point: Point,
    /// The chosen point's cost per input with every stage in this process (`classify`).
    pub in_process: Cost,
    /// 99% interval of the forward rate in a run as large as the calibration set.
    pub forwarded_interval: (f64, f64),
    /// 95% Clopper-Pearson interval of the point's top-1 on the calibration images.
    pub top1_ci: [f64; 2],
    /// 95% Clopper-Pearson interval of the fraction forwarded on them.
    pub forwarded_ci: [f64; 2],
    /// The point against the last stage alone, paired (Tango's 95% interval).
    pub vs_last: VsLast,
    /// With an accuracy target: how sure the choice is.
    pub target_check: Option<TargetCheck>,
    /// 1 - cascade MACs / the last model's MACs.
    pub compute_saved_vs_large: f64,
    /// 1 - cascade device energy / device energy when every input is offloaded.
    pub device_energy_saved_vs_offload_all: Option<f64>,
}

/// Every file `calibrate` writes: the config (only when the target is met) and, beside it, the
/// curves (CSV, JSON) and the plot. When the target is not met, the side files go beside the
/// config that would have been written, under the first free `NAME-unmet.*`,
/// `NAME-unmet-2.*`, ...: never over earlier files.
struct Outputs {
    config: PathBuf,
}

impl Outputs {
    /// `--out`, or the first free `calibrated.toml`, `calibrated-2.toml`, … in the current
    /// folder; checked before anything is computed: its folder must exist, and neither it nor
    /// its side files may exist unless `force`.
    fn choose(out: Option<&Path>, force: bool) -> Result<Outputs> {
        let o = match out {
            Some(p) => Outputs { config: p.to_owned() },
            None => (1..)
                .map(|i| if i == 1 { "calibrated.toml".into() } else { format!("calibrated-{i}.toml") })
                .map(|name: String| Outputs { config: PathBuf::from(name) })
                .find(|o| o.met_files().iter().all(|p| !p.exists()))
                .expect("a free name"),
        };
        let dir = o.config.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            invalid!("--out {}: the folder {} does not exist", o.config.display(), dir.display());
        }
        if !force {
            if let Some(p) = o.met_files().iter().find(|p| p.exists()) {
                invalid!("{} exists; pass --force to overwrite it, or another --out", p.display());
            }
        }
        Ok(o)
    }

    /// The curves' CSV and JSON and the plot beside `stem`.
    fn side_of(stem: &Path) -> [PathBuf; 3] {
        [stem.with_extension("curves.csv"), stem.with_extension("curves.json"), stem.with_extension("svg")]
    }

    fn met_files(&self) -> [PathBuf; 4] {
        let [a, b, c] = Self::side_of(&self.config);
        [self.config.clone(), a, b, c]
    }

    /// The side files: beside the config when the target is met, else the first free unmet set.
    fn side(&self, met: bool) -> [PathBuf; 3] {
        if met {
            return Self::side_of(&self.config);
        }
        let name = self.config.file_stem().map_or("calibrated".into(), |s| s.to_string_lossy().into_owned());
        (1..)
            .map(|i| {
                let stem = if i == 1 { format!("{name}-unmet.toml") } else { format!("{name}-unmet-{i}.toml") };
                Self::side_of(&self.config.with_file_name(stem))
            })
            .find(|files| files.iter().all(|p| !p.exists()))
            .expect("a free name")
    }
}

pub fn calibrate(config: CascadeConfig, o: CalibrateOptions) -> Result<Calibration> {
    if config.stages.len() < 2 {
        invalid!("{}: a cascade of one stage has no threshold to calibrate", config.path.display());
    }
    // Before minutes of inference on a board: where the results go.
    let outputs = Outputs::choose(o.out.as_deref(), o.force)?;
    let mut pipeline = Pipeline::local(config.clone(), &o.runner)?;
    let last = config.stages.len() - 1;
    let (items, reference) =
        guaranteed::inputs(&o.data, o.agreement, o.from_log.as_deref(), &pipeline.models[0], last)?;
    let payload = o.payload.for_kind(pipeline.kind());
    let files: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
    let refs: Vec<&Model> = pipeline.models.iter().collect();
    let host = eval::HostView { stage: refs.len() - 1, payload };
    let build = || {
        log::info!("computing the logits of {} models on {} inputs", refs.len(), items.len());
        let (records, failures) = eval::collect(&refs, &items, o.jobs, Some(host));
        failures.iter().for_each(|e| log::warn!("{e}"));
        (records, failures.len())
    };
    let (mut records, errors, cache) = if let Reference::Log(log) = &reference {
        let (records, errors) = build();
        (records, errors, format!("computed on the inputs of the results log {} (not cached)", log.display()))
    } else {
        let labeled = reference == Reference::Labels;
        let (records, errors, provenance) =
            cache::load_or_build(&o.cache_dir, &o.data, &files, labeled, &refs, payload, build)
                .map_err(io("logit cache in", &o.cache_dir))?;
        let cache = match &provenance {
            cache::Provenance::Cached(p) => format!("read from {}", p.display()),
            cache::Provenance::Built { path, why } => format!("computed ({why}), stored in {}", path.display()),
        };
        (records, errors, cache)
    };
    guaranteed::set_reference(&mut records, &reference, last)?;
    let n = records.len();
    if n < 20 {
        invalid!(
            "{}: {n} usable {} are too few to fit a temperature or choose a threshold (at least 20)",
            o.data.display(),
            if reference.agreement() { "images" } else { "labeled images" }
        );
    }
    // Each stage's ms and mJ as classify measures them, on a sample of the images.
    pipeline.energy = o.energy;
    let timed: Vec<(String, Vec<u8>)> = timing::sample(files.len())
        .into_iter()
        .filter_map(|i| items[i].bytes().ok().map(|b| (files[i].display().to_string(), b)))
        .collect();
    log::info!("timing every stage on {} inputs, one at a time", timed.len());
    let timing = timing::measure(&mut pipeline, &timed, payload).map_err(TuneError::Invalid)?;
    let models = &pipeline.models;
    let stages = models.len();
    let labels: Vec<usize> = records.iter().map(|r| r.label).collect();
    // Without labels the last stage's answers are the labels: fitting its temperature to its
    // own answers would only drive it to the bound, so it stays 1.
    let temperatures: Vec<f64> = (0..stages)
        .map(|i| {
            if reference.agreement() && i == stages - 1 {
                return 1.0;
            }
            let logits: Vec<&[f32]> = records.iter().map(|r| r.logits[i].as_slice()).collect();
            calibrate::fit_temperature(&logits, &labels)
        })
        .collect();
    // A text model's MACs depend on each input's length: every figure prices it at its mean.
    let macs = eval::mean_macs(&records, &models.iter().map(|m| m.runner.macs()).collect::<Vec<_>>());
    let cost_model = cost_model(models, &macs, &records, &o.data, &items, &o.link, payload, &timing, &o.board)?;
    let cost_model_in_process = CostModel { local: local_stages(&macs, &timing), remote: None };
    let ones = vec![1.0; stages];
    let mut curves: Vec<Curve> = Vec::new();
    if o.guarantee.is_some() {
        curves = guaranteed::curves(&records, stages, &cost_model);
    } else {
        for metric in Metric::ALL {
            for ensemble in [false, true] {
                for temps in [&ones, &temperatures] {
                    curves.push(calibrate::sweep(&records, metric, ensemble, temps, &cost_model, &[]));
                }
            }
        }
    }
    let singles: Vec<Single> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let k = records.iter().filter(|r| crate::core::policy::argmax(&r.logits[i]) == r.label).count();
            Single {
                name: m.name().to_owned(),
                top1: k as f64 / n as f64,
                top1_ci: eval::rate_ci(k, n),
                macs: macs[i] as f64,
            }
        })
        .collect();
    let best_single = singles.iter().map(|s| s.top1).fold(0.0, f64::max);
    let target = o.target.unwrap_or(Target::Accuracy(best_single));
    let (met, (ci, pi), guarantee) = match o.guarantee {
        Some(g) => {
            let (guarantee, chosen) = guaranteed::certify(&curves, n, g, &reference);
            (guarantee.certified, chosen, Some(guarantee))
        }
        None => match calibrate::choose(&curves, target) {
            Ok(c) => (true, c, None),
            Err(c) => (false, c, None),
        },
    };
    let curve = &curves[ci];
    let point = curve.points[pi].clone();
    let forwarded_k = (point.forwarded * n as f64).round() as usize;
    let (top1_ci, forwarded_ci, vs_last) = guaranteed::intervals(&point, n);
    let target_check = match (&guarantee, target) {
        (None, Target::Accuracy(a)) => Some(guaranteed::target_check(a, &point, n)),
        _ => None,
    };
    let large = singles.last().expect("two stages").macs;
    let offload_all = cost_model.offload_everything();
    let chosen = Chosen {
        curve: curve.label(),
        metric: curve.metric,
        ensemble: curve.ensemble,
        temperatures: curve.temperatures.clone(),
        forwarded_interval: calibrate::forward_interval(forwarded_k, n, n),
        top1_ci,
        forwarded_ci,
        vs_last,
        target_check,
        compute_saved_vs_large: 1.0 - point.cost.macs / large,
        in_process: cost_model_in_process.expected(&point.reach),
        device_energy_saved_vs_offload_all: offload_all.map(|c| 1.0 - point.cost.device_mj / c.device_mj),
        point,
    };
    let single_triples: Vec<(String, f64, f64)> = singles.iter().map(|s| (s.name.clone(), s.top1, s.macs)).collect();
    let merit = calibrate::merit(&curves, &single_triples);
    let target_text = match (&guarantee, target) {
        (Some(g), _) if g.mode == "agreement" => {
            format!("agreement with the last stage >= {} with probability >= {}", 1.0 - g.max_drop, 1.0 - g.delta)
        }
        (Some(g), _) => {
            format!("accuracy drop vs the last stage <= {} with probability >= {}", g.max_drop, 1.0 - g.delta)
        }
        (None, Target::Accuracy(a)) if reference.agreement() => format!("agreement with the last stage >= {a:.4}"),
        (None, Target::Accuracy(a)) => format!("accuracy >= {a:.4}"),
        (None, Target::Macs(m)) => format!("MACs per input <= {m:.0}"),
        (None, Target::Mj(e)) => format!("device mJ per input <= {e}"),
        (None, Target::Ms(t)) => format!("ms per input <= {t}"),
        (None, Target::MaxForward(f)) => format!("forwarded <= {f}"),
    };

    // Outputs: the config (only when the target was met), the curves and the plot.
    let out = met.then(|| outputs.config.clone());
    let [csv_path, json_path, svg_path] = outputs.side(met);
    std::fs::write(&csv_path, curves_csv(&curves)).map_err(io("cannot write", &csv_path))?;
    let json = serde_json::to_string(&curves).map_err(|e| TuneError::Invalid(format!("the curves as JSON: {e}")))?;
    std::fs::write(&json_path, json).map_err(io("cannot write", &json_path))?;
    let svg = plot_svg(&curves, &singles, &chosen, &o.data);
    std::fs::write(&svg_path, svg).map_err(io("cannot write", &svg_path))?;
    if let Some(out) = &out {
        let mut cfg = config.clone();
        cfg.ensemble = chosen.ensemble;
        let last = cfg.stages.len() - 1;
        for (i, s) in cfg.stages.iter_mut().enumerate() {
            s.policy.metric = chosen.metric;
            s.policy.temperature = chosen.temperatures[i] as f32;
            s.policy.threshold = (i < last).then_some(chosen.point.threshold);
        }
        cfg.calibration = Some(CalibrationInfo {
            data: o.data.display().to_string(),
            n,
            forwarded: forwarded_k,
            top1: chosen.point.top1,
            macs_per_input: chosen.point.cost.macs,
            large_model_macs: large,
            stage_macs: singles.iter().map(|s| s.macs).collect(),
            target: target_text.clone(),
            reference: Some(if reference.agreement() { "agreement" } else { "labels" }.into()),
            max_drop: guarantee.as_ref().map(|g| g.max_drop),
            delta: guarantee.as_ref().map(|g| g.delta),
            p_value: guarantee.as_ref().and_then(|g| g.p_value),
            guarantee: guarantee.as_ref().map(|g| g.statement.clone()),
        });
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let header = format!(
            "Written by `edgecascade calibrate` from {} on {} ({n} images), target {target_text}.",
            config.path.display(),
            o.data.display()
        );
        std::fs::write(out, cfg.to_toml(dir, &header)).map_err(io("cannot write", out))?;
    }
    Ok(Calibration {
        data: o.data.display().to_string(),
        n,
        failed: errors,
        errors,
        models: singles.clone(),
        cache,
        temperatures,
        singles,
        target: target_text,
        agreement: reference.agreement(),
        guarantee,
        met,
        chosen,
        merit,
        out: out.map(|p| p.display().to_string()),
        curves_csv: csv_path.display().to_string(),
        curves_json: json_path.display().to_string(),
        plot: svg_path.display().to_string(),
        cost_model,
        cost_model_in_process,
        timing,
        payload: payload.to_string(),
    })
}

/// Every stage run in this process, priced by the timing pass: MACs from tract, ms and mJ as
/// `classify` measures them.
fn local_stages(macs: &[u64], timing: &Timing) -> Vec<LocalStage> {
    macs.iter().zip(&timing.stages).map(|(&macs, t)| LocalStage { macs, ms: t.ms.clone(), mj: t.mj.clone() }).collect()
}

/// Prices the deployed cascade: the device's stages and its encoding of the payload from the
/// timing pass; the host's time from the last stage's on this machine; the link from the
/// payloads the device would send (measured on the data), the link assumptions and the board
/// profile's UART energy per byte and idle power while the device waits.
#[allow(clippy::too_many_arguments)]
fn cost_model(
    models: &[Model],
    macs: &[u64],
    records: &[Record],
    data: &Path,
    items: &[Labeled],
    link: &LinkAssumptions,
    payload: PayloadSpec,
    timing: &Timing,
    board: &Board,
) -> Result<CostModel> {
    let last = models.len() - 1;
    let mut local = local_stages(macs, timing);
    let host = local.pop().expect("two stages");
    // The payload, on up to 100 of the inputs.
    let (size, crop_fraction) = match &models[last].manifest.takes {
        crate::model::manifest::Takes::Image(i) => (i.size, i.crop_fraction),
        crate::model::manifest::Takes::Text(_) => (0, 1.0),
    };
    let mut bytes = Vec::new();
    for item in items.iter().take(100) {
        let raw = item.bytes().map_err(|e| TuneError::Invalid(format!("{}: {e}", item.path.display())))?;
        let Ok((input, _)) = crate::model::Decoded::read(models[0].kind(), &raw) else { continue };
        let body =
            crate::offload::payload::encode(payload.encoding, &raw, &input, size, crop_fraction, payload.jpeg_quality)
                .map_err(TuneError::Invalid)?;
        let request = InferRequest {
            seq: bytes.len() as u64 + 1,
            encoding: payload.encoding,
            payload: body,
            device_probs: None,
            want_probs: false,
        };
        bytes.push(link::encode(&Message::Infer(request)).len() as f64);
    }
    let up = bytes.iter().sum::<f64>() / bytes.len().max(1) as f64;
    // Replies as the host would frame them: the last model's top-5 on the same images.
    let replies: Vec<f64> = records
        .iter()
        .take(100)
        .enumerate()
        .map(|(i, r)| {
            let top =
                crate::core::policy::top_k(&crate::core::policy::softmax(&r.logits[last], 1.0), crate::host::TOP_K);
            let ms = host.ms.value as f32;
            let answer = InferResponse {
                seq: i as u64 + 1,
                top: top.into_iter().map(|(c, p)| (c as u32, p)).collect(),
                probs: None,
                host_ms: ms,
                host_decode_ms: 1.0,
                host_infer_ms: ms,
                host_mj: None,
            };
            link::encode(&Message::Answer(answer)).len() as f64
        })
        .collect();
    let down = replies.iter().sum::<f64>() / replies.len().max(1) as f64;
    let host_ms = Figure { source: format!("{} (standing in for the host)", host.ms.source), ..host.ms };
    let remote = HostStage {
        macs: host.macs,
        host_ms,
        encode_ms: timing.encode.ms.clone(),
        encode_mj: timing.encode.mj.clone(),
        link: Link {
            bytes_up: Figure::measured(
                up,
                &format!("request frames of {payload} payloads on {} inputs of {}", bytes.len(), data.display()),
            ),
            bytes_down: Figure::measured(
                down,
                &format!("reply frames with the host model's top-5 on {} inputs", replies.len()),
            ),
            bytes_per_s: Figure::estimate(
                link.baud as f64 / 10.0,
                &format!("UART at {} baud, 10 bits a byte", link.baud),
            ),
            rtt_ms: Figure::estimate(link.rtt_ms, "link turnaround"),
            nj_per_byte: board_figure(board.link_energy.uart.nj_per_byte, &board.link_energy.uart.source, board),
        },
        device_wait_w: board_figure(board.power.idle.watts, &board.power.idle.source, board),
    };
    Ok(CostModel { local, remote: Some(remote) })
}

fn curves_csv(curves: &[Curve]) -> String {
    let mut s = String::from(
        "curve,metric,ensemble,temperature_scaled,threshold,top1,forwarded,macs,device_macs,device_mj,ms,link_bytes\n",
    );
    for c in curves {
        let scaled = c.temperatures.iter().any(|&t| t != 1.0);
        for p in &c.points {
            s += &format!(
                "{},{},{},{},{},{},{},{:.0},{:.0},{:.3},{:.3},{:.1}\n",
                c.label().replace(", ", "+"),
                c.metric,
                c.ensemble,
                scaled,
                p.threshold,
                p.top1,
                p.forwarded,
                p.cost.macs,
                p.cost.device_macs,
                p.cost.device_mj,
                p.cost.ms,
                p.cost.link_bytes
            );
        }
    }
    s
}

fn plot_svg(curves: &[Curve], singles: &[Single], chosen: &Chosen, data: &Path) -> String {
    // Colour by metric; solid plain, dashed with temperature scaling, dotted with ensembling.
    let series: Vec<plot::Series> = curves
        .iter()
        .map(|c| {
            let mut pts: Vec<(f64, f64)> = c.points.iter().map(|p| (p.cost.macs / 1e6, p.top1)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let scaled = c.temperatures.iter().any(|&t| t != 1.0);
            plot::Series {
                label: c.label(),
                points: pts,
                colour: match c.metric {
                    Metric::MaxSoftmax => "#1f77b4",
                    Metric::Margin => "#ff7f0e",
                    Metric::Entropy => "#2ca02c",
                },
                dash: match (c.ensemble, scaled) {
                    (false, false) => "",
                    (false, true) => "8 4",
                    (true, false) => "2 3",
                    (true, true) => "8 3 2 3",
                },
            }
        })
        .collect();
    let markers: Vec<plot::Marker> =
        singles.iter().map(|s| plot::Marker { label: s.name.clone(), cost: s.macs / 1e6, accuracy: s.top1 }).collect();
    let m = plot::Marker {
        label: format!("chosen: {} at {:.3}", chosen.curve, chosen.point.threshold),
        cost: chosen.point.cost.macs / 1e6,
        accuracy: chosen.point.top1,
    };
    plot::svg(
        &format!("Cascade accuracy against compute on {}", data.display()),
        "M MACs per input (device + host)",
        &series,
        &markers,
        Some(&m),
    )
}
