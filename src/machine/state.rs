//! The machine's state as `bench` records it before and after each run, pure: the types, the
//! parsers of the files the kernel and the firmware write (a thermal zone's `temp` in
//! millidegrees Celsius, cpufreq's `scaling_cur_freq` and `cpuinfo_max_freq` in kHz, the
//! Raspberry Pi firmware's `get_throttled` bits in hex, `VmHWM` of `/proc/self/status`), and
//! the comparison of two snapshots that says whether the CPU throttled in between. No I/O, no
//! clock: `machine::read` fills a `Snapshot` from the files.

use serde::Serialize;

/// One thermal zone (`/sys/class/thermal/thermal_zoneN`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Zone {
    /// The zone's folder name, e.g. `thermal_zone0`.
    pub zone: String,
    /// Its `type` file, e.g. `cpu-thermal` (None when absent or unreadable).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Its `temp` in degrees Celsius (None when unreadable; `Snapshot::unreadable` says why).
    pub celsius: Option<f64>,
}

/// One CPU's frequency (`/sys/devices/system/cpu/cpuN/cpufreq`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuFreq {
    pub cpu: usize,
    /// `scaling_cur_freq`, in MHz.
    pub cur_mhz: Option<f64>,
    /// `cpuinfo_max_freq`, in MHz.
    pub max_mhz: Option<f64>,
}

/// The Raspberry Pi firmware's throttling flags (`get_throttled`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Throttled {
    /// The bits as hex, e.g. `0x50005`.
    pub raw: String,
    #[serde(skip)]
    pub bits: u32,
    /// The conditions in force now (bits 0-3).
    pub now: Vec<&'static str>,
    /// The conditions that have occurred since boot (bits 16-19).
    pub since_boot: Vec<&'static str>,
}

impl Throttled {
    pub fn from_bits(bits: u32) -> Throttled {
        let names = |shift: u32| FLAGS.iter().enumerate().filter(move |(i, _)| bits >> (shift + *i as u32) & 1 == 1);
        Throttled {
            raw: format!("{bits:#x}"),
            bits,
            now: names(0).map(|(_, n)| *n).collect(),
            since_boot: names(16).map(|(_, n)| *n).collect(),
        }
    }
}

/// What bits 0-3 (now) and 16-19 (since boot) of `get_throttled` mean.
pub const FLAGS: [&str; 4] = ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"];
/// Bits 0-3: a condition in force now.
pub const NOW_MASK: u32 = 0xf;
/// Bits 16-19: a condition that has occurred since boot.
pub const OCCURRED_MASK: u32 = 0xf_0000;

/// The machine's state at one moment. Empty lists and `throttled: None` with the source
/// named in `not_exposed` mean the board does not expose it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub temperatures: Vec<Zone>,
    pub cpufreq: Vec<CpuFreq>,
    pub throttled: Option<Throttled>,
    /// Sources this machine does not expose: `thermal zones`, `cpufreq`, `get_throttled`.
    pub not_exposed: Vec<&'static str>,
    /// Files present but unreadable or holding something else than a number, each with why.
    pub unreadable: Vec<String>,
}

impl Snapshot {
    /// The hottest zone's temperature.
    pub fn hottest(&self) -> Option<f64> {
        self.temperatures.iter().filter_map(|z| z.celsius).reduce(f64::max)
    }

    /// The fastest CPU's current frequency, in MHz (the cores doing the work run fastest).
    pub fn fastest_mhz(&self) -> Option<f64> {
        self.cpufreq.iter().filter_map(|c| c.cur_mhz).reduce(f64::max)
    }

    /// The highest `cpuinfo_max_freq`, in MHz.
    pub fn max_mhz(&self) -> Option<f64> {
        self.cpufreq.iter().filter_map(|c| c.max_mhz).reduce(f64::max)
    }

    /// One line for people: hottest zone, fastest CPU against its maximum, the firmware's flags.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(z) = self
            .temperatures
            .iter()
            .filter(|z| z.celsius.is_some())
            .max_by(|a, b| a.celsius.unwrap_or(f64::MIN).total_cmp(&b.celsius.unwrap_or(f64::MIN)))
        {
            let others = self.temperatures.len() - 1;
            parts.push(format!(
                "{} {:.1} °C{}",
                z.kind.as_deref().unwrap_or(&z.zone),
                z.celsius.unwrap_or(0.0),
                if others > 0 { format!(" (hottest of {} zones)", others + 1) } else { String::new() }
            ));
        }
        if let Some(cur) = self.fastest_mhz() {
            parts.push(format!(
                "CPU {cur:.0} MHz{}",
                self.max_mhz().map_or(String::new(), |m| format!(" (max {m:.0} MHz)"))
            ));
        }
        if let Some(t) = &self.throttled {
            let list = |v: &[&str]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
            parts.push(format!("get_throttled {}: now {}; since boot {}", t.raw, list(&t.now), list(&t.since_boot)));
        }
        if !self.not_exposed.is_empty() {
            parts.push(format!("{} not exposed", self.not_exposed.join(", ")));
        }
        if !self.unreadable.is_empty() {
            parts.push(format!("{} unreadable", self.unreadable.len()));
        }
        parts.join("; ")
    }
}

/// What counts as throttling between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// The fastest CPU's frequency falling below this fraction of its value before the run
    /// counts (0.9: a 10% drop).
    pub freq_floor: f64,
    /// The temperature from which the board throttles its CPU, when its profile says.
    pub soft_limit_c: Option<f64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { freq_floor: 0.9, soft_limit_c: None }
    }
}

/// Why the CPU may have run throttled between `before` and `after`: one sentence each, empty
/// when nothing says so (or nothing is exposed).
pub fn throttle_warnings(before: &Snapshot, after: &Snapshot, limits: &Limits) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(a) = &after.throttled {
        if !a.now.is_empty() {
            w.push(format!("the firmware reports {} now (get_throttled {})", a.now.join(", "), a.raw));
        }
        let old = before.throttled.as_ref().map_or(0, |b| b.bits);
        let new = Throttled::from_bits(a.bits & OCCURRED_MASK & !old);
        if !new.since_boot.is_empty() {
            w.push(format!(
                "the firmware reports {} during the run (get_throttled {} before, {} after)",
                new.since_boot.join(", "),
                before.throttled.as_ref().map_or("not read", |b| b.raw.as_str()),
                a.raw
            ));
        }
    }
    if let (Some(b), Some(a)) = (before.fastest_mhz(), after.fastest_mhz()) {
        if b > 0.0 && a < limits.freq_floor * b {
            w.push(format!(
                "the CPU frequency fell from {b:.0} MHz to {a:.0} MHz{} during the run (below {:.0}% of its value before)",
                after.max_mhz().map_or(String::new(), |m| format!(" (max {m:.0} MHz)")),
                limits.freq_floor * 100.0
            ));
        }
    }
    if let (Some(limit), Some(a)) = (limits.soft_limit_c, after.hottest()) {
        if a >= limit {
            let was = before.hottest();
            w.push(match was {
                Some(b) if b >= limit => {
                    format!("the CPU was at or above the board's throttling temperature {limit:.0} °C before the run ({b:.1} °C) and after it ({a:.1} °C)")
                }
                Some(b) => {
                    format!("the CPU crossed the board's throttling temperature {limit:.0} °C during the run ({b:.1} °C before, {a:.1} °C after)")
                }
                None => format!("the CPU is at or above the board's throttling temperature {limit:.0} °C after the run ({a:.1} °C)"),
            });
        }
    }
    w
}

/// A thermal zone's `temp`: millidegrees Celsius as a decimal integer (negative below 0 °C),
/// as degrees.
pub fn parse_millidegrees(text: &str) -> Result<f64, String> {
    let t = text.trim();
    t.parse::<i64>()
        .map(|m| m as f64 / 1000.0)
        .map_err(|_| format!("'{}' is not a temperature in millidegrees", short(t)))
}

/// cpufreq's `scaling_cur_freq` or `cpuinfo_max_freq`: kHz as a decimal integer, as MHz.
/// (Some drivers write `<unknown>` when they cannot tell: an error here.)
pub fn parse_khz(text: &str) -> Result<f64, String> {
    let t = text.trim();
    t.parse::<u64>().map(|k| k as f64 / 1000.0).map_err(|_| format!("'{}' is not a frequency in kHz", short(t)))
}

/// `get_throttled`: the sysfs file holds the bits in hex without a prefix (`50005`, the
/// raspberrypi firmware driver's `%x\n`); `vcgencmd get_throttled` prints `throttled=0x50005`.
/// Both are taken, and a bare `0x50005`.
pub fn parse_throttled(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let v = t.strip_prefix("throttled=").unwrap_or(t);
    let hex = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")).unwrap_or(v);
    u32::from_str_radix(hex, 16).map_err(|_| format!("'{}' is not the firmware's throttled bits in hex", short(t)))
}

/// `VmHWM` of `/proc/<pid>/status` (the peak resident set), in kB as the kernel writes it.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut words = line.split_whitespace();
    let kb = words.next()?.parse::<u64>().ok()?;
    (words.next() == Some("kB")).then_some(kb)
}

/// At most 40 characters of what a file held, for a message.
fn short(t: &str) -> String {
    let s: String = t.chars().take(40).collect();
    if s.len() < t.len() {
        s + "..."
    } else {
        s
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
