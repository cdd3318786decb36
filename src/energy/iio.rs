//! Jetson INA3221 through the ina3221x IIO driver (JetPack 4, L4T 32): under
//! `/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:deviceN/`, `rail_name_<n>` names a rail and
//! `in_power<n>_input` is its power in mW. Channels named `NC` are skipped.

use super::hwmon::{device_dirs, subdirs};
use super::{read_file, read_number, select_rails, source_name, EnergyMeter, ErrorKind, MeterError, Reading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Period when the profile does not say (the driver does not publish one).
const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// Every named rail under the driver's folder: (name, power file), NC left out.
pub fn discover(driver_dir: &Path) -> Result<Vec<(String, PathBuf)>, MeterError> {
    let mut out = Vec::new();
    for dev in device_dirs(driver_dir)? {
        for iio in subdirs(&dev, "iio:device") {
            let mut found: Vec<(u32, String)> = Vec::new();
            for e in std::fs::read_dir(&iio).into_iter().flatten().filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(Ok(n)) = name.strip_prefix("rail_name_").map(|s| s.parse::<u32>()) else { continue };
                let rail = read_file(&e.path())?.trim().to_owned();
                if rail.is_empty() || rail.eq_ignore_ascii_case("NC") {
                    continue;
                }
                found.push((n, rail));
            }
            found.sort();
            out.extend(found.into_iter().map(|(n, rail)| (rail, iio.join(format!("in_power{n}_input")))));
        }
    }
    if out.is_empty() {
        return Err(MeterError::new(
            ErrorKind::Missing,
            format!("no INA3221 rails (iio:deviceN/rail_name_<n>) under {}", driver_dir.display()),
        ));
    }
    Ok(out)
}

/// The rails chosen from a board's INA3221s, read through IIO.
pub struct IioIna3221 {
    source: String,
    interval: Duration,
    /// Milliwatts file per rail.
    rails: Vec<PathBuf>,
}

impl IioIna3221 {
    pub fn open(
        driver_dir: &Path,
        total: Option<&str>,
        rails: &[String],
        interval: Option<Duration>,
    ) -> Result<IioIna3221, MeterError> {
        let found = discover(driver_dir)?;
        let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
        let picked = select_rails(&format!("INA3221 under {}", driver_dir.display()), &names, total, rails)?;
        let chosen: Vec<&str> = picked.iter().map(|&i| names[i].as_str()).collect();
        let source = source_name("ina3221x", &chosen);
        log::info!("{source}: INA3221 rails found: {}", names.join(", "));
        Ok(IioIna3221 {
            source,
            interval: interval.unwrap_or(DEFAULT_INTERVAL),
            rails: picked.iter().map(|&i| found[i].1.clone()).collect(),
        })
    }
}

impl EnergyMeter for IioIna3221 {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let mut mw = 0.0;
        for p in &self.rails {
            let v: f64 = read_number(p)?;
            if !v.is_finite() {
                return Err(MeterError::new(ErrorKind::Garbage, format!("{}: not a finite reading", p.display())));
            }
            mw += v;
        }
        Ok(Reading::Watts(mw / 1e3))
    }
}
