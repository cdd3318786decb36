//! The background sampler and the energy context. A thread reads the meter at the sensor's
//! own interval (clamped to `MIN_INTERVAL..=MAX_INTERVAL`) and records `(Instant, value)`:
//! watts, or cumulative joules for counters. When the meter fails (a file gone, unreadable,
//! garbage) it warns, naming the file, switches to its fallback (the estimate) and goes on:
//! the samples then form a new segment with its own source and baseline. `EnergyContext`
//! measures the idle baseline at start and attributes energy to spans through the pure
//! functions of `attribute`.

use super::attribute::{counter_integral, is_interpolated, power_integral};
use super::{clamp_interval, EnergyMeter, MeterError, MeterSpec, Reading, StageEnergy};
use crate::board::{Board, SensorKind, SysRoot};
use crate::run::spans::Span;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Samples older than this are dropped (a long `run` must not grow without bound).
const RETENTION: Duration = Duration::from_secs(600);

/// What a segment's values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Watts,
    /// Cumulative joules.
    Joules,
}

/// The samples of one meter, from the moment it took over.
#[derive(Clone, Debug)]
pub struct Segment {
    pub source: String,
    pub kind: Kind,
    pub interval: Duration,
    /// Power at idle, subtracted for `mj_above_idle`.
    pub baseline_w: f64,
    pub samples: Vec<(Instant, f64)>,
}

impl Segment {
    /// Joules over `[a, b]` (Instants), or None when the samples cannot say.
    fn joules(&self, a: Instant, b: Instant) -> Option<f64> {
        // Only the samples around [a, b]: one before, one after, and at least two in all.
        let n = self.samples.len();
        let i0 = self.samples.partition_point(|&(t, _)| t <= a).saturating_sub(1).min(n.saturating_sub(2));
        let i1 = (self.samples.partition_point(|&(t, _)| t < b) + 1).max(i0 + 2).min(n);
        let window = &self.samples[i0..i1];
        let origin = window.first()?.0.min(a);
        let secs = |t: Instant| t.duration_since(origin).as_secs_f64();
        let pts: Vec<(f64, f64)> = window.iter().map(|&(t, v)| (secs(t), v)).collect();
        match self.kind {
            Kind::Watts => power_integral(&pts, secs(a), secs(b)),
            Kind::Joules => counter_integral(&pts, secs(a), secs(b)),
        }
    }
}

struct State {
    meter: Box<dyn EnergyMeter>,
    /// Takes over when the meter fails, with its baseline.
    fallback: Option<(Box<dyn EnergyMeter>, f64)>,
    /// Baseline of the current meter, until a segment exists.
    baseline_w: f64,
    /// False until the current meter's first reading opens its segment.
    open: bool,
    segments: Vec<Segment>,
}

impl State {
    /// Reads the meter once and records the reading; on failure, warns and switches to the
    /// fallback (once).
    fn sample(&mut self) {
        match self.meter.read() {
            Ok(r) => {
                let t = Instant::now();
                let (kind, v) = match r {
                    Reading::Watts(w) => (Kind::Watts, w),
                    Reading::Joules(j) => (Kind::Joules, j),
                };
                if !self.open || self.segments.last().is_some_and(|s| s.kind != kind) {
                    self.segments.push(Segment {
                        source: self.meter.source().to_owned(),
                        kind,
                        interval: clamp_interval(self.meter.interval()),
                        baseline_w: self.baseline_w,
                        samples: Vec::new(),
                    });
                    self.open = true;
                }
                let seg = self.segments.last_mut().expect("a segment is open");
                seg.samples.push((t, v));
                if let Some(&(newest, _)) = seg.samples.last() {
                    let keep_from = seg.samples.partition_point(|&(ts, _)| ts + RETENTION < newest);
                    // Keep at least two samples, so counters can still be read.
                    let drop = keep_from.min(seg.samples.len().saturating_sub(2));
                    if drop > 0 {
                        seg.samples.drain(..drop);
                    }
                }
            }
            Err(e) => match self.fallback.take() {
                Some((meter, baseline)) => {
                    log::warn!("{e}; energy figures from now on are an estimate ({})", meter.source());
                    self.meter = meter;
                    self.baseline_w = baseline;
                    self.open = false;
                    self.sample();
                }
                None => log::debug!("energy meter {}: {e}", self.meter.source()),
            },
        }
    }
}

/// Reads a meter in a background thread; stops and joins on drop.
pub struct Sampler {
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while sampling leaves plain data behind: keep using it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sampler {
    /// Starts sampling `meter` (first reading at once). `fallback` (a meter and its baseline
    /// in watts) takes over if it fails; `baseline_w` is the meter's own until measured.
    pub fn start(
        meter: Box<dyn EnergyMeter>,
        baseline_w: f64,
        fallback: Option<(Box<dyn EnergyMeter>, f64)>,
    ) -> Sampler {
        let state = Arc::new(Mutex::new(State { meter, fallback, baseline_w, open: false, segments: Vec::new() }));
        lock(&state).sample();
        let (tx, rx) = mpsc::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("energy-sampler".into())
            .spawn(move || loop {
                let interval = clamp_interval(lock(&shared).meter.interval());
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => lock(&shared).sample(),
                    _ => break,
                }
            })
            .map_err(|e| log::warn!("cannot start the energy sampler thread: {e}; sampling on demand only"))
            .ok();
        Sampler { state, stop: Some(tx), thread }
    }

    /// Takes one reading now.
    pub fn sample_now(&self) {
        lock(&self.state).sample();
    }

    /// A copy of every segment so far.
    pub fn segments(&self) -> Vec<Segment> {
        lock(&self.state).segments.clone()
    }

    /// The current meter's source.
    pub fn source(&self) -> String {
        let s = lock(&self.state);
        s.segments.last().map_or_else(|| s.meter.source().to_owned(), |g| g.source.clone())
    }

    /// The current sampling interval.
    pub fn interval(&self) -> Duration {
        clamp_interval(lock(&self.state).meter.interval())
    }

    /// Sets the current segment's idle baseline.
    fn set_baseline(&self, watts: f64) {
        let mut s = lock(&self.state);
        s.baseline_w = watts;
        if let Some(seg) = s.segments.last_mut() {
            seg.baseline_w = watts;
        }
    }

    /// Energy over `[t0, t1]`: each segment covers from its first sample to the next
    /// segment's first sample; a span crossing a switch is split. Takes a reading first when
    /// the newest is older than `t1`, so the span's end is covered.
    pub fn attribute(&self, t0: Instant, t1: Instant) -> StageEnergy {
        let mut s = lock(&self.state);
        if s.segments.last().and_then(|g| g.samples.last()).is_none_or(|&(t, _)| t < t1) {
            s.sample();
        }
        attribute_segments(&s.segments, t0, t1)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Energy over `[t0, t1]` from the segments (pure: no reading, no clock).
pub fn attribute_segments(segments: &[Segment], t0: Instant, t1: Instant) -> StageEnergy {
    let t1 = t1.max(t0);
    let span_s = (t1 - t0).as_secs_f64();
    let (mut j, mut above) = (0.0, 0.0);
    let mut sources: Vec<&str> = Vec::new();
    let mut interpolated = false;
    for (i, seg) in segments.iter().enumerate() {
        let Some(&(first, _)) = seg.samples.first() else { continue };
        let lo = if i == 0 { t0 } else { first.max(t0) };
        let hi = segments.get(i + 1).and_then(|n| n.samples.first()).map_or(t1, |&(t, _)| t.min(t1));
        if hi <= lo {
            continue;
        }
        let part_s = (hi - lo).as_secs_f64();
        let part = match seg.joules(lo, hi) {
            Some(x) => x,
            None => {
                // A counter with one sample so far: its baseline is all there is.
                interpolated = true;
                seg.baseline_w * part_s
            }
        };
        j += part;
        above += part - seg.baseline_w * part_s;
        interpolated |= is_interpolated(span_s, seg.interval.as_secs_f64());
        if !sources.contains(&seg.source.as_str()) {
            sources.push(&seg.source);
        }
    }
    // An estimate anywhere in the span makes the whole figure an estimate.
    let source = match sources.iter().find(|s| s.starts_with("estimate")) {
        Some(e) if sources.len() > 1 => format!("{e} (partly {})", sources[0]),
        Some(e) => (*e).to_owned(),
        None => sources.join(" then "),
    };
    let source = if source.is_empty() { "estimate: no samples".to_owned() } else { source };
    StageEnergy { mj: j * 1e3, mj_above_idle: above * 1e3, source, interpolated }
}

/// How the idle baseline is had.
#[derive(Clone, Copy, Debug)]
pub enum Baseline {
    /// Measured over this long at start, before any work.
    Measure(Duration),
    /// Given, in watts (the estimate's idle power).
    Fixed(f64),
}

/// A running sampler with the idle baseline measured at start: attributes energy to spans.
pub struct EnergyContext {
    sampler: Sampler,
    /// The board profile the meter came from.
    pub board: String,
    baseline_w: f64,
}

impl EnergyContext {
    /// Opens the board's sensor under `root` (falling back to the estimate, with a warning
    /// naming what failed), starts sampling and measures the idle baseline. Never fails:
    /// without a sensor every figure is labeled an estimate.
    pub fn start(board: &Board, root: &SysRoot) -> EnergyContext {
        let idle = board.power.idle.watts;
        let ctx = match super::open(board, root) {
            Ok(meter) => EnergyContext::measured(board, root, meter),
            Err(e) => {
                if board.sensor.kind == SensorKind::None {
                    log::info!(
                        "board {} has no power sensor: energy figures are estimates from CPU time and its power model",
                        board.name
                    );
                } else {
                    log::warn!("{e}; energy figures are estimates from CPU time and the {} power model", board.name);
                }
                let why = (board.sensor.kind != SensorKind::None).then(|| format!("{} unavailable", board.sensor.kind));
                let meter = super::estimate_for(board, root, why.as_deref());
                EnergyContext::with_meter(board, meter, Baseline::Fixed(idle), None)
            }
        };
        log::info!(
            "energy: {} every {} ms; idle baseline {:.2} W",
            ctx.source(),
            ctx.interval().as_millis(),
            ctx.baseline_w
        );
        ctx
    }

    /// Opens the external meter `spec` names instead of the board's sensor (a `/sys` path
    /// re-rooted under `root`), starts sampling it with the estimate behind it and measures the
    /// idle baseline. Fails when the meter cannot be opened or read: it was asked for.
    pub fn start_meter(board: &Board, root: &SysRoot, spec: &MeterSpec) -> Result<EnergyContext, MeterError> {
        let meter = super::meter::open(spec, root)?;
        let ctx = EnergyContext::measured(board, root, meter);
        log::info!(
            "energy: {} every {} ms; idle baseline {:.2} W",
            ctx.source(),
            ctx.interval().as_millis(),
            ctx.baseline_w
        );
        Ok(ctx)
    }

    /// A working meter with the estimate behind it and the idle baseline measured.
    fn measured(board: &Board, root: &SysRoot, meter: Box<dyn EnergyMeter>) -> EnergyContext {
        let why = format!("{} failed", meter.source());
        let fallback = super::estimate_for(board, root, Some(&why));
        let window = (clamp_interval(meter.interval()) * 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
        EnergyContext::with_meter(board, meter, Baseline::Measure(window), Some((fallback, board.power.idle.watts)))
    }

    /// Starts sampling `meter` with `fallback` behind it and gets the baseline.
    pub fn with_meter(
        board: &Board,
        meter: Box<dyn EnergyMeter>,
        baseline: Baseline,
        fallback: Option<(Box<dyn EnergyMeter>, f64)>,
    ) -> EnergyContext {
        let initial = match baseline {
            Baseline::Fixed(w) => w,
            Baseline::Measure(_) => board.power.idle.watts,
        };
        let sampler = Sampler::start(meter, initial, fallback);
        let baseline_w = match baseline {
            Baseline::Fixed(w) => w,
            Baseline::Measure(window) => {
                let t0 = Instant::now();
                std::thread::sleep(window);
                let t1 = Instant::now();
                let e = sampler.attribute(t0, t1);
                let w = e.mj / 1e3 / (t1 - t0).as_secs_f64();
                if e.source.starts_with("estimate") {
                    // The sensor failed while the baseline was measured: the estimate's own.
                    initial
                } else {
                    sampler.set_baseline(w);
                    w
                }
            }
        };
        EnergyContext { sampler, board: board.name.clone(), baseline_w }
    }

    /// Energy over `[t0, t1]`.
    pub fn attribute(&self, t0: Instant, t1: Instant) -> StageEnergy {
        self.sampler.attribute(t0, t1)
    }

    /// Sets the energy of every span that has a start time.
    pub fn fill(&self, spans: &mut [Span]) {
        for s in spans.iter_mut() {
            if let Some(t0) = s.start {
                let t1 = t0 + Duration::from_secs_f64(s.ms.max(0.0) / 1e3);
                s.energy = Some(self.attribute(t0, t1));
            }
        }
    }

    /// The current source (the sensor and rail, or `estimate: ...`).
    pub fn source(&self) -> String {
        self.sampler.source()
    }

    /// The idle power measured at start (or the power model's, for an estimate).
    pub fn baseline_w(&self) -> f64 {
        self.baseline_w
    }

    pub fn interval(&self) -> Duration {
        self.sampler.interval()
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_of_samples_gives_the_same_energy_as_all_of_them() {
        let o = Instant::now() + Duration::from_secs(1);
        let at = |s: f64| if s >= 0.0 { o + Duration::from_secs_f64(s) } else { o - Duration::from_secs_f64(-s) };
        let values: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 0.02, 3.0 + (i % 7) as f64)).collect();
        let cumulative: Vec<(f64, f64)> = values
            .iter()
            .scan(0.0, |e, &(t, p)| {
                *e += p * 0.02;
                Some((t, *e))
            })
            .collect();
        for (kind, pts) in [(Kind::Watts, &values), (Kind::Joules, &cumulative)] {
            let seg = Segment {
                source: "test".into(),
                kind,
                interval: Duration::from_millis(20),
                baseline_w: 0.0,
                samples: pts.iter().map(|&(t, v)| (at(t), v)).collect(),
            };
            for (a, b) in [(0.013, 0.5), (-0.3, 0.1), (0.9, 1.4), (1.2, 1.3), (0.5, 0.51), (-0.2, -0.1)] {
                let all = match kind {
                    Kind::Watts => power_integral(pts, a, b),
                    Kind::Joules => counter_integral(pts, a, b),
                }
                .unwrap();
                let got = seg.joules(at(a), at(b)).unwrap();
                assert!((got - all).abs() < 1e-9, "{kind:?} [{a}, {b}]: {got} vs {all}");
            }
        }
    }
}
