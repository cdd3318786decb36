//! Jetson INA3221 through the hwmon driver (JetPack 5 and 6): under
//! `/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmonN/`, `in<n>_label` names a rail,
//! `in<n>_input` is its voltage in mV, `curr<n>_input` its current in mA and
//! `update_interval` the chip's period in ms. Channels labelled `NC` and the sum channel
//! (`in7`, "sum of shunt voltages") are skipped. Power is V x A per rail.

use super::{read_file, read_number, select_rails, source_name, EnergyMeter, ErrorKind, MeterError, Reading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The sum-of-shunt-voltages channel, which is not a rail.
const SUM_CHANNEL: u32 = 7;
/// Period when the chip does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// One labelled channel of an INA3221.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub label: String,
    /// The hwmon folder it is in.
    pub dir: PathBuf,
    pub n: u32,
}

/// The device folders of an I2C driver (`1-0040`, `7-0040`...), sorted.
pub(crate) fn device_dirs(driver_dir: &Path) -> Result<Vec<PathBuf>, MeterError> {
    let entries = std::fs::read_dir(driver_dir).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::Missing } else { ErrorKind::Unreadable };
        MeterError::new(kind, format!("cannot list {}: {e}", driver_dir.display()))
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(|c: char| c.is_ascii_digit()) && name.contains('-')
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Sub-folders of `dir` whose names start with `prefix`, sorted.
pub(crate) fn subdirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every rail of every INA3221 under the driver's folder, NC and sum channels left out,
/// and the longest `update_interval` among the chips (when any says).
pub fn discover(driver_dir: &Path) -> Result<(Vec<Channel>, Option<Duration>), MeterError> {
    let mut channels = Vec::new();
    let mut interval: Option<Duration> = None;
    for dev in device_dirs(driver_dir)? {
        for hw in subdirs(&dev.join("hwmon"), "hwmon") {
            if let Ok(ms) = read_number::<u64>(&hw.join("update_interval")) {
                let d = Duration::from_millis(ms);
                interval = Some(interval.map_or(d, |i| i.max(d)));
            }
            let mut found: Vec<(u32, String)> = Vec::new();
            for e in std::fs::read_dir(&hw).into_iter().flatten().filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(n) = name.strip_prefix("in").and_then(|s| s.strip_suffix("_label")) else { continue };
                let Ok(n) = n.parse::<u32>() else { continue };
                if n == SUM_CHANNEL {
                    continue;
                }
                let label = read_file(&e.path())?.trim().to_owned();
                if label.is_empty() || label.eq_ignore_ascii_case("NC") || label.to_lowercase().contains("sum of") {
                    continue;
                }
                found.push((n, label));
            }
            found.sort();
            channels.extend(found.into_iter().map(|(n, label)| Channel { label, dir: hw.clone(), n }));
        }
    }
    if channels.is_empty() {
        return Err(MeterError::new(
            ErrorKind::Missing,
            format!("no INA3221 rails (hwmon/hwmonN/in<n>_label) under {}", driver_dir.display()),
        ));
    }
    Ok((channels, interval))
}

/// The rails chosen from a board's INA3221s, read through hwmon.
pub struct HwmonIna3221 {
    source: String,
    interval: Duration,
    /// (millivolts file, milliamps file) per rail.
    rails: Vec<(PathBuf, PathBuf)>,
}

impl HwmonIna3221 {
    /// Finds the rails under `driver_dir`: `total` alone when present, else `rails`, else all.
    /// `interval` overrides the chip's `update_interval`.
    pub fn open(
        driver_dir: &Path,
        total: Option<&str>,
        rails: &[String],
        interval: Option<Duration>,
    ) -> Result<HwmonIna3221, MeterError> {
        let (channels, chip_interval) = discover(driver_dir)?;
        let labels: Vec<String> = channels.iter().map(|c| c.label.clone()).collect();
        let picked = select_rails(&format!("INA3221 under {}", driver_dir.display()), &labels, total, rails)?;
        let names: Vec<&str> = picked.iter().map(|&i| labels[i].as_str()).collect();
        let source = source_name("ina3221", &names);
        let interval = interval.or(chip_interval).unwrap_or(DEFAULT_INTERVAL);
        log::info!(
            "{source}: INA3221 rails found: {} (in {}); sensor period {} ms",
            labels.join(", "),
            channels.first().map_or(String::new(), |c| c.dir.display().to_string()),
            interval.as_millis()
        );
        let rails = picked
            .iter()
            .map(|&i| {
                let c = &channels[i];
                (c.dir.join(format!("in{}_input", c.n)), c.dir.join(format!("curr{}_input", c.n)))
            })
            .collect();
        Ok(HwmonIna3221 { source, interval, rails })
    }
}

impl EnergyMeter for HwmonIna3221 {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let mut watts = 0.0;
        for (mv, ma) in &self.rails {
            let v: f64 = read_number(mv)?;
            let a: f64 = read_number(ma)?;
            if !v.is_finite() || !a.is_finite() {
                return Err(MeterError::new(ErrorKind::Garbage, format!("{}: not a finite reading", mv.display())));
            }
            watts += v * a / 1e6;
        }
        Ok(Reading::Watts(watts))
    }
}
