//! RAPL energy counters through powercap (x86, Intel and AMD): each top-level domain
//! `/sys/class/powercap/intel-rapl:N/` has a `name` (`package-0`, `psys`...), `energy_uj`, a
//! cumulative count of microjoules, and `max_energy_range_uj`, where it wraps to zero. The
//! meter accumulates the deltas (a wrap is never negative energy) and reports joules since
//! it was opened. Since Linux 5.10 `energy_uj` is readable by root only.

use super::{read_file, read_number, select_rails, source_name, EnergyMeter, ErrorKind, MeterError, Reading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Period when the profile does not say (the counters update about every millisecond).
const DEFAULT_INTERVAL: Duration = Duration::from_millis(25);

/// Microjoules between two readings of a counter that wraps to zero after `max_range`.
/// A reading below the previous one is a wrap, never negative energy; a nonsensical range
/// (the previous value above it) counts from zero.
pub fn counter_delta(prev: u64, now: u64, max_range: u64) -> u64 {
    if now >= prev {
        now - prev
    } else if prev <= max_range {
        (max_range - prev) + now
    } else {
        now
    }
}

struct Domain {
    energy: PathBuf,
    max_range: u64,
    last: u64,
}

/// The chosen RAPL domains, summed.
pub struct Rapl {
    source: String,
    interval: Duration,
    domains: Vec<Domain>,
    total_uj: u128,
}

/// Top-level RAPL domains under the powercap folder: (name, domain folder), sorted.
pub fn discover(powercap: &Path) -> Result<Vec<(String, PathBuf)>, MeterError> {
    let entries = std::fs::read_dir(powercap).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::Missing } else { ErrorKind::Unreadable };
        MeterError::new(kind, format!("cannot list {}: {e}", powercap.display()))
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // Top level only: intel-rapl:0, not its subzones intel-rapl:0:1.
            n.starts_with("intel-rapl:") && n.matches(':').count() == 1
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let name = read_file(&d.join("name"))?.trim().to_owned();
        out.push((name, d));
    }
    if out.is_empty() {
        return Err(MeterError::new(
            ErrorKind::Missing,
            format!("no RAPL domains (intel-rapl:N) under {}", powercap.display()),
        ));
    }
    Ok(out)
}

impl Rapl {
    pub fn open(
        powercap: &Path,
        total: Option<&str>,
        rails: &[String],
        interval: Option<Duration>,
    ) -> Result<Rapl, MeterError> {
        let found = discover(powercap)?;
        let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
        let picked = select_rails(&format!("RAPL under {}", powercap.display()), &names, total, rails)?;
        let chosen: Vec<&str> = picked.iter().map(|&i| names[i].as_str()).collect();
        let source = source_name("rapl", &chosen);
        let mut domains = Vec::new();
        for &i in &picked {
            let dir = &found[i].1;
            let energy = dir.join("energy_uj");
            let max_range: u64 = read_number(&dir.join("max_energy_range_uj"))?;
            let last: u64 = read_number(&energy)?;
            domains.push(Domain { energy, max_range, last });
        }
        log::info!("{source}: RAPL domains found: {}", names.join(", "));
        Ok(Rapl { source, interval: interval.unwrap_or(DEFAULT_INTERVAL), domains, total_uj: 0 })
    }
}

impl EnergyMeter for Rapl {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        // Read every domain first, so a failure leaves the running total as it was.
        let now: Vec<u64> = self.domains.iter().map(|d| read_number(&d.energy)).collect::<Result<_, _>>()?;
        for (d, n) in self.domains.iter_mut().zip(now) {
            self.total_uj += counter_delta(d.last, n, d.max_range) as u128;
            d.last = n;
        }
        Ok(Reading::Joules(self.total_uj as f64 / 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_is_not_negative_energy() {
        assert_eq!(counter_delta(100, 250, 1000), 150);
        assert_eq!(counter_delta(900, 50, 1000), 150);
        assert_eq!(counter_delta(1000, 0, 1000), 0);
        assert_eq!(counter_delta(5, 5, 1000), 0);
        assert_eq!(counter_delta(5000, 40, 1000), 40);
    }
}
