//! External power meters, for boards without a sensor of their own (the Raspberry Pi 4):
//! `--meter KIND:PATH` names one, `MeterSpec` is it parsed, `open` turns it into an
//! `EnergyMeter` that stands in for the board's sensor (same sampler, same attribution, the
//! meter named as the source). The kinds:
//!
//! - `ina2xx:/sys/class/hwmon/hwmonN` (also `ina219:`, `ina226:`, `ina260:`, which check the
//!   chip's name): an INA219/INA226/INA260 in the supply line, through Linux's ina2xx hwmon
//!   driver (`ina2xx.rs`). The path is a `/sys` path, re-rooted under `--sysfs-root`.
//! - `um25c:/dev/rfcomm0` (also `um24c:`, `um34c:`): an RDTech UM meter over Bluetooth SPP
//!   (`rdtech.rs`).
//! - `fnb58:/dev/hidraw0` (also `fnb48:`, `c1:`): a FNIRSI USB meter over USB HID
//!   (`fnirsi.rs`).

use super::{clamp_interval, ErrorKind, MeterError};
use crate::board::SysRoot;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which kind of meter a spec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterKind {
    /// Any chip of the ina2xx driver.
    Ina2xx,
    /// The named chip of the ina2xx driver (`ina219`, `ina226`, `ina260`).
    Ina(&'static str),
    /// An RDTech UM24C, UM25C or UM34C (the reply says which).
    RdTechUm(&'static str),
    /// A FNIRSI FNB48, FNB58 or C1.
    Fnirsi(&'static str),
}

/// The kinds `--meter` knows, as written before the colon.
pub const KINDS: &[&str] = &["ina2xx", "ina219", "ina226", "ina260", "um24c", "um25c", "um34c", "fnb48", "fnb58", "c1"];

/// A parsed `--meter KIND:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterSpec {
    pub kind: MeterKind,
    pub path: PathBuf,
}

/// A `--meter` value that could not be parsed; the message says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl FromStr for MeterSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<MeterSpec, SpecError> {
        let s = s.trim();
        let examples = "e.g. um25c:/dev/rfcomm0 or ina226:/sys/class/hwmon/hwmon2";
        let Some((kind, path)) = s.split_once(':') else {
            return Err(SpecError(format!("bad meter '{s}': expected KIND:PATH ({examples})")));
        };
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "ina2xx" => MeterKind::Ina2xx,
            "ina219" => MeterKind::Ina("ina219"),
            "ina226" => MeterKind::Ina("ina226"),
            "ina260" => MeterKind::Ina("ina260"),
            "um24c" => MeterKind::RdTechUm("UM24C"),
            "um25c" => MeterKind::RdTechUm("UM25C"),
            "um34c" => MeterKind::RdTechUm("UM34C"),
            "fnb48" => MeterKind::Fnirsi("FNB48"),
            "fnb58" => MeterKind::Fnirsi("FNB58"),
            "c1" => MeterKind::Fnirsi("C1"),
            "" => return Err(SpecError(format!("bad meter '{s}': no kind before the colon ({examples})"))),
            other => {
                return Err(SpecError(format!("unknown meter kind '{other}' in '{s}' (known: {})", KINDS.join(", "))))
            }
        };
        let path = path.trim();
        if path.is_empty() {
            return Err(SpecError(format!("bad meter '{s}': no path after the colon ({examples})")));
        }
        Ok(MeterSpec { kind, path: PathBuf::from(path) })
    }
}

impl fmt::Display for MeterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            MeterKind::Ina2xx => "ina2xx".to_owned(),
            MeterKind::Ina(chip) => chip.to_owned(),
            MeterKind::RdTechUm(model) | MeterKind::Fnirsi(model) => model.to_ascii_lowercase(),
        };
        write!(f, "{kind}:{}", self.path.display())
    }
}

/// Opens the meter `spec` names (a `/sys` path re-rooted under `root`) and takes a first
/// reading to check it works.
pub fn open(spec: &MeterSpec, root: &SysRoot) -> Result<Box<dyn super::EnergyMeter>, MeterError> {
    let mut meter: Box<dyn super::EnergyMeter> = match spec.kind {
        MeterKind::Ina2xx => Box::new(super::ina2xx::Ina2xx::open(&root.path(&spec.path), &spec.path, None)?),
        MeterKind::Ina(chip) => Box::new(super::ina2xx::Ina2xx::open(&root.path(&spec.path), &spec.path, Some(chip))?),
        MeterKind::RdTechUm(_) => Box::new(super::rdtech::RdTechUm::open(&spec.path)?),
        MeterKind::Fnirsi(model) => Box::new(super::fnirsi::Fnirsi::open(&spec.path, model)?),
    };
    meter.read().map_err(|e| MeterError::new(e.kind(), format!("meter {spec}: {e}")))?;
    Ok(meter)
}

/// `meter: WHAT on PATH, DETAIL, N Hz`, the source of an external meter's figures; the rate
/// is the one the sampler reads it at.
pub(crate) fn source_name(what: &str, path: &std::path::Path, detail: &str, interval: Duration) -> String {
    let hz = 1.0 / clamp_interval(interval).as_secs_f64();
    let hz = if hz >= 10.0 { format!("{hz:.0}") } else { format!("{hz:.1}") };
    format!("meter: {what} on {}, {detail}, {hz} Hz", path.display())
}

/// A `MeterError` of kind `Garbage` naming the meter.
pub(crate) fn garbage(what: &str, msg: impl fmt::Display) -> MeterError {
    MeterError::new(ErrorKind::Garbage, format!("{what}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_errors_say_what_is_wrong() {
        let s: MeterSpec = "um25c:/dev/rfcomm0".parse().unwrap();
        assert_eq!(s, MeterSpec { kind: MeterKind::RdTechUm("UM25C"), path: "/dev/rfcomm0".into() });
        assert_eq!(s.to_string(), "um25c:/dev/rfcomm0");
        let s: MeterSpec = " INA226:/sys/class/hwmon/hwmon2 ".parse().unwrap();
        assert_eq!(s.kind, MeterKind::Ina("ina226"));
        assert_eq!("ina2xx:/x".parse::<MeterSpec>().unwrap().kind, MeterKind::Ina2xx);
        let e = "fluke:/dev/ttyUSB0".parse::<MeterSpec>().unwrap_err().to_string();
        assert!(e.contains("unknown meter kind 'fluke'") && e.contains("um25c"), "{e}");
        let e = "/dev/rfcomm0".parse::<MeterSpec>().unwrap_err().to_string();
        assert!(e.contains("expected KIND:PATH"), "{e}");
        let e = "um25c:".parse::<MeterSpec>().unwrap_err().to_string();
        assert!(e.contains("no path"), "{e}");
        let e = ":/dev/x".parse::<MeterSpec>().unwrap_err().to_string();
        assert!(e.contains("no kind"), "{e}");
    }

    #[test]
    fn source_names_the_meter_and_its_rate() {
        let s = source_name("UM25C", std::path::Path::new("/dev/pts/3"), "5.1 V input", Duration::from_millis(100));
        assert_eq!(s, "meter: UM25C on /dev/pts/3, 5.1 V input, 10 Hz");
        let s = source_name("INA226", std::path::Path::new("/h"), "5.0 V bus", Duration::from_millis(2));
        assert_eq!(s, "meter: INA226 on /h, 5.0 V bus, 100 Hz", "clamped to the sampler's fastest");
    }
}
