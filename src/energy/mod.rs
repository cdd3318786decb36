//! Energy measurement: `EnergyMeter` (the seam to a board's power sensor), one file per
//! sensor kind (Jetson INA3221 through hwmon or IIO, RAPL counters, the Raspberry Pi 5 PMIC,
//! and the CPU-time estimate used when no sensor can be read), the external meters that stand
//! in for a board's sensor (`meter`: an ina2xx chip, an RDTech UM meter, a FNIRSI USB meter), the background
//! `Sampler`, and the pure attribution of energy to timed spans. `open` turns a board profile
//! (`crate::board`) into a meter, `meter::open` a `--meter` spec; `EnergyContext` is what
//! `session` and `bench` use.

pub mod attribute;
pub mod estimate;
pub mod fnirsi;
pub mod hwmon;
pub mod iio;
pub mod ina2xx;
pub mod meter;
pub mod pmic;
pub mod rapl;
pub mod rdtech;
pub mod sampler;
pub mod survey;

use crate::board::{Board, SensorKind, SysRoot};
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use meter::MeterSpec;
pub use sampler::{EnergyContext, Sampler};

/// The fastest a sensor is sampled, whatever it says its own period is.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The slowest a sensor is sampled.
pub const MAX_INTERVAL: Duration = Duration::from_millis(1000);

/// A sensor's period, clamped to what the sampler will do.
pub fn clamp_interval(d: Duration) -> Duration {
    d.clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// One reading of a meter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// Instantaneous power, in watts.
    Watts(f64),
    /// Energy since the meter was opened, in joules (never decreases; wraps are undone).
    Joules(f64),
}

/// What went wrong reading a sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file or folder the sensor needs is not there.
    Missing,
    /// It is there but cannot be read (permissions, not a file).
    Unreadable,
    /// It was read but does not hold what it should.
    Garbage,
    /// The sensor's command could not run or failed.
    Command,
    /// None of the rails the profile names were found.
    NoRails,
}

/// A sensor failure; the message names the file or command.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct MeterError {
    kind: ErrorKind,
    message: String,
}

impl MeterError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> MeterError {
        MeterError { kind, message: message.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A power sensor. Implementations hide where their readings come from; `source` names the
/// sensor and rail (`ina3221:VDD_IN`), or starts with `estimate` when nothing is measured.
pub trait EnergyMeter: Send {
    /// The sensor and rail(s) the readings come from.
    fn source(&self) -> &str;
    /// How often the sensor has a new value.
    fn interval(&self) -> Duration;
    /// One reading.
    fn read(&mut self) -> Result<Reading, MeterError>;
}

/// The energy attributed to one span of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageEnergy {
    /// Millijoules over the span.
    pub mj: f64,
    /// Millijoules above the idle baseline measured at start (can be slightly negative when
    /// the board drew less than the baseline).
    pub mj_above_idle: f64,
    /// The sensor and rail, or `estimate: ...`.
    pub source: String,
    /// True when the span is shorter than two sensor intervals: the figure leans on
    /// interpolation between readings more than on readings within the span.
    pub interpolated: bool,
}

/// Opens the board's sensor under `root` and takes a first reading to check it works.
/// `SensorKind::None` is an error of kind `Missing` (the caller falls back to the estimate).
pub fn open(board: &Board, root: &SysRoot) -> Result<Box<dyn EnergyMeter>, MeterError> {
    let s = &board.sensor;
    let interval = s.interval_ms.map(Duration::from_millis);
    let path = board.sensor_path(root);
    let mut meter: Box<dyn EnergyMeter> = match s.kind {
        SensorKind::HwmonIna3221 => Box::new(hwmon::HwmonIna3221::open(
            &path.expect("hwmon has a default path"),
            s.total_rail.as_deref(),
            &s.rails,
            interval,
        )?),
        SensorKind::IioIna3221 => Box::new(iio::IioIna3221::open(
            &path.expect("iio has a default path"),
            s.total_rail.as_deref(),
            &s.rails,
            interval,
        )?),
        SensorKind::Rapl => Box::new(rapl::Rapl::open(
            &path.expect("rapl has a default path"),
            s.total_rail.as_deref(),
            &s.rails,
            interval,
        )?),
        SensorKind::PmicReadAdc => Box::new(pmic::PmicReadAdc::open(&s.command, &s.rails, interval)?),
        SensorKind::None => {
            return Err(MeterError::new(ErrorKind::Missing, format!("board {} has no power sensor", board.name)))
        }
    };
    meter.read()?;
    Ok(meter)
}

/// The estimate from the process's CPU time and the board's power model. `after` says what
/// failed, when it stands in for a sensor.
pub fn estimate_for(board: &Board, root: &SysRoot, after: Option<&str>) -> Box<dyn EnergyMeter> {
    Box::new(estimate::CpuTimeEstimate::open(board, root, after))
}

/// The board's power now, in watts: one reading of a power sensor, or the slope of a
/// counter over two readings one interval apart.
pub fn live_watts(meter: &mut dyn EnergyMeter) -> Result<f64, MeterError> {
    let t0 = std::time::Instant::now();
    match meter.read()? {
        Reading::Watts(w) => Ok(w),
        Reading::Joules(j0) => {
            std::thread::sleep(clamp_interval(meter.interval()).max(Duration::from_millis(100)));
            let j1 = match meter.read()? {
                Reading::Joules(j) => j,
                Reading::Watts(w) => return Ok(w),
            };
            Ok((j1 - j0) / t0.elapsed().as_secs_f64())
        }
    }
}

/// Reads a sensor file; errors name it and say whether it is missing or unreadable.
pub(crate) fn read_file(path: &Path) -> Result<String, MeterError> {
    std::fs::read_to_string(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::Missing } else { ErrorKind::Unreadable };
        MeterError::new(kind, format!("cannot read {}: {e}", path.display()))
    })
}

/// Reads a sensor file holding one number.
pub(crate) fn read_number<T: FromStr>(path: &Path) -> Result<T, MeterError> {
    let text = read_file(path)?;
    let t = text.trim();
    t.parse().map_err(|_| {
        let shown: String = t.chars().take(40).collect();
        MeterError::new(ErrorKind::Garbage, format!("{}: expected a number, found '{shown}'", path.display()))
    })
}

/// The rails to read out of those found: the total rail alone when present, else the named
/// rails that are present, else (none named) every rail found. `what` names the sensor in
/// errors. Returns indices into `found`.
pub(crate) fn select_rails(
    what: &str,
    found: &[String],
    total: Option<&str>,
    wanted: &[String],
) -> Result<Vec<usize>, MeterError> {
    if let Some(t) = total {
        if let Some(i) = found.iter().position(|f| f == t) {
            return Ok(vec![i]);
        }
        log::info!("{what}: no total rail {t} (found {}); summing the rails instead", found.join(", "));
    }
    let picked: Vec<usize> = if wanted.is_empty() {
        (0..found.len()).collect()
    } else {
        wanted.iter().filter_map(|w| found.iter().position(|f| f == w)).collect()
    };
    if picked.is_empty() {
        let named: Vec<&str> = total.into_iter().chain(wanted.iter().map(|s| s.as_str())).collect();
        return Err(MeterError::new(
            ErrorKind::NoRails,
            format!(
                "{what}: none of the rails {} found (found: {})",
                named.join(", "),
                if found.is_empty() { "none".to_owned() } else { found.join(", ") }
            ),
        ));
    }
    if !wanted.is_empty() && picked.len() < wanted.len() {
        let missing: Vec<&str> = wanted.iter().filter(|w| !found.contains(w)).map(|s| s.as_str()).collect();
        log::info!("{what}: rails not present here: {}", missing.join(", "));
    }
    Ok(picked)
}

/// `sensor:RAIL+RAIL` for a few rails, `sensor:sum of N rails` for many.
pub(crate) fn source_name(sensor: &str, rails: &[&str]) -> String {
    if rails.len() <= 4 {
        format!("{sensor}:{}", rails.join("+"))
    } else {
        format!("{sensor}:sum of {} rails", rails.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn total_rail_wins_then_named_rails_then_all() {
        let found = names(&["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]);
        assert_eq!(select_rails("t", &found, Some("VDD_IN"), &names(&["VDD_SOC"])).unwrap(), vec![0]);
        assert_eq!(select_rails("t", &found, Some("NOPE"), &names(&["VDD_SOC", "X"])).unwrap(), vec![2]);
        assert_eq!(select_rails("t", &found, None, &[]).unwrap(), vec![0, 1, 2]);
        let e = select_rails("t", &found, Some("A"), &names(&["B"])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoRails);
        assert!(e.to_string().contains("A, B") && e.to_string().contains("VDD_IN"), "{e}");
    }

    #[test]
    fn source_names_the_rails() {
        assert_eq!(source_name("ina3221", &["VDD_IN"]), "ina3221:VDD_IN");
        assert_eq!(source_name("pmic", &["a", "b", "c", "d", "e"]), "pmic:sum of 5 rails");
    }

    #[test]
    fn interval_is_clamped() {
        assert_eq!(clamp_interval(Duration::from_micros(100)), MIN_INTERVAL);
        assert_eq!(clamp_interval(Duration::from_secs(5)), MAX_INTERVAL);
        assert_eq!(clamp_interval(Duration::from_millis(140)), Duration::from_millis(140));
    }
}
