//! An INA219 / INA220 / INA226 / INA230 / INA231 / INA260 in the board's supply line, through
//! Linux's `ina2xx` hwmon driver (kernel documentation `hwmon/ina2xx`): in the chip's
//! `/sys/class/hwmon/hwmonN/`, `name` is the chip, `in1_input` the bus voltage in mV,
//! `curr1_input` the current in mA (the driver divides the shunt voltage by `shunt_resistor`),
//! `power1_input` the chip's own power product in uW and, on the INA226 family,
//! `update_interval` its conversion period in ms. Power is read as bus mV x mA (1 mV and
//! 1 mA steps: finer than the chip's power register, whose step is 20 or 25 current steps);
//! `power1_input` stands in when `curr1_input` is absent. The path may also be the I2C
//! device's folder (`/sys/bus/i2c/devices/1-0040`), whose `hwmon/hwmonN` is then used.

use super::meter::{garbage, source_name};
use super::{read_file, read_number, EnergyMeter, ErrorKind, MeterError, Reading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hwmon `name`s the ina2xx driver gives its chips.
pub const CHIPS: &[&str] = &["ina219", "ina220", "ina226", "ina230", "ina231", "ina260"];
/// Period when the chip does not publish one (the INA219 has no `update_interval`).
const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

/// An ina2xx chip's hwmon folder, read as a meter.
pub struct Ina2xx {
    source: String,
    interval: Duration,
    millivolts: PathBuf,
    /// `curr1_input` (mA) when present, else None and `power1_input` is read.
    milliamps: Option<PathBuf>,
    microwatts: PathBuf,
}

/// The chip's name when `dir` is an ina2xx hwmon folder.
pub fn chip_name(dir: &Path) -> Option<String> {
    let name = std::fs::read_to_string(dir.join("name")).ok()?.trim().to_owned();
    CHIPS.contains(&name.as_str()).then_some(name)
}

impl Ina2xx {
    /// Opens the chip at `dir` (as read, re-rooted), named `shown` in messages and the source.
    /// `want` is the chip the user named, checked against the folder's `name`.
    pub fn open(dir: &Path, shown: &Path, want: Option<&str>) -> Result<Ina2xx, MeterError> {
        let what = format!("meter {}", shown.display());
        // An I2C device's folder has a `name` too (the client's), but no readings.
        let dir = if dir.join("in1_input").exists() || !dir.join("hwmon").is_dir() {
            dir.to_owned()
        } else {
            match super::hwmon::subdirs(&dir.join("hwmon"), "hwmon").into_iter().next() {
                Some(h) => h,
                None => {
                    return Err(MeterError::new(
                        ErrorKind::Missing,
                        format!("{what}: no hwmon folder under {} (expected an ina2xx hwmon folder)", dir.display()),
                    ))
                }
            }
        };
        if !dir.exists() {
            return Err(MeterError::new(ErrorKind::Missing, format!("{what}: {} does not exist", dir.display())));
        }
        let name = read_file(&dir.join("name"))?.trim().to_owned();
        if !CHIPS.contains(&name.as_str()) {
            return Err(MeterError::new(
                ErrorKind::Missing,
                format!("{what}: hwmon device '{name}' is not an ina2xx chip (expected one of {})", CHIPS.join(", ")),
            ));
        }
        if let Some(w) = want.filter(|w| *w != name) {
            return Err(MeterError::new(
                ErrorKind::Garbage,
                format!("{what}: the chip there is an {name}, not an {w} (use {name}: or ina2xx:)"),
            ));
        }
        let interval = match read_number::<u64>(&dir.join("update_interval")) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => DEFAULT_INTERVAL,
        };
        let curr = dir.join("curr1_input");
        let mut meter = Ina2xx {
            source: String::new(),
            interval,
            millivolts: dir.join("in1_input"),
            milliamps: curr.exists().then_some(curr),
            microwatts: dir.join("power1_input"),
        };
        let volts: f64 = read_number::<f64>(&meter.millivolts)? / 1e3;
        let chip = name.to_ascii_uppercase();
        meter.source = source_name(&chip, shown, &format!("{volts:.1} V bus"), interval);
        log::info!("{}: {} in {}", meter.source, chip, dir.display());
        Ok(meter)
    }
}

impl EnergyMeter for Ina2xx {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let watts = match &self.milliamps {
            Some(ma) => {
                let v: f64 = read_number(&self.millivolts)?;
                let a: f64 = read_number(ma)?;
                v * a / 1e6
            }
            None => read_number::<f64>(&self.microwatts)? / 1e6,
        };
        if !watts.is_finite() {
            return Err(garbage(&self.source, "not a finite reading"));
        }
        Ok(Reading::Watts(watts))
    }
}
