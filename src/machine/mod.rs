//! The machine's state around a measurement, read through `SysRoot` (so `--sysfs-root` or a
//! test's fake tree stands in for `/sys` and `/proc`): thermal zones, each CPU's frequency, the
//! Raspberry Pi firmware's throttling flags, and the process's peak resident set. Files that
//! are absent are "not exposed", never an error; files that hold garbage are "unreadable". The
//! parsers and the comparison of two snapshots are pure, in `state`. `tune::bench` calls it.

pub mod state;

use crate::board::SysRoot;
use serde::Serialize;
pub use state::{throttle_warnings, Limits, Snapshot};
use state::{CpuFreq, Throttled, Zone};
use std::path::Path;

const THERMAL: &str = "/sys/class/thermal";
const CPUS: &str = "/sys/devices/system/cpu";
/// The firmware driver's file (raspberrypi firmware, Pi 3/4/5 kernels).
pub const GET_THROTTLED: &str = "/sys/devices/platform/soc/soc:firmware/get_throttled";
const STATUS: &str = "/proc/self/status";

/// What a benchmark reads of the machine: its state before and after each run, and the
/// process's peak memory at the end. `SysProbe` reads the files; tests script their own.
pub trait Probe {
    fn snapshot(&mut self) -> Snapshot;
    fn peak_rss(&mut self) -> Option<PeakRss>;
}

/// The probe that reads `/sys` and `/proc` under a root.
pub struct SysProbe(pub SysRoot);

impl Probe for SysProbe {
    fn snapshot(&mut self) -> Snapshot {
        read(&self.0)
    }

    fn peak_rss(&mut self) -> Option<PeakRss> {
        peak_rss(&self.0)
    }
}

/// Reads every source under `root`.
pub fn read(root: &SysRoot) -> Snapshot {
    let mut s = Snapshot::default();
    read_zones(root, &mut s);
    read_cpufreq(root, &mut s);
    match std::fs::read_to_string(root.path(GET_THROTTLED)) {
        Ok(text) => match state::parse_throttled(&text) {
            Ok(bits) => s.throttled = Some(Throttled::from_bits(bits)),
            Err(e) => s.unreadable.push(format!("{GET_THROTTLED}: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => s.not_exposed.push("get_throttled"),
        Err(e) => s.unreadable.push(format!("{GET_THROTTLED}: {e}")),
    }
    s
}

/// The numbered entries `prefix<N>` of folder `dir`, in numeric order.
fn numbered(dir: &Path, prefix: &str) -> Vec<(usize, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(usize, String)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix(prefix)?.parse::<usize>().ok()?;
            Some((n, name))
        })
        .collect();
    out.sort();
    out
}

/// A file's text, trimmed; None when it is absent; an error naming it when it cannot be read.
fn read_file(root: &SysRoot, path: &str) -> Result<Option<String>, String> {
    match std::fs::read_to_string(root.path(path)) {
        Ok(t) => Ok(Some(t.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// `read_file`, parsed; failures go to `unreadable`.
fn read_value(
    root: &SysRoot,
    path: &str,
    parse: fn(&str) -> Result<f64, String>,
    unreadable: &mut Vec<String>,
) -> Option<f64> {
    match read_file(root, path) {
        Ok(Some(t)) => parse(&t).map_err(|e| unreadable.push(format!("{path}: {e}"))).ok(),
        Ok(None) => None,
        Err(e) => {
            unreadable.push(e);
            None
        }
    }
}

fn read_zones(root: &SysRoot, s: &mut Snapshot) {
    for (_, name) in numbered(&root.path(THERMAL), "thermal_zone") {
        let dir = format!("{THERMAL}/{name}");
        let temp = format!("{dir}/temp");
        if !root.path(&temp).exists() {
            continue;
        }
        let kind = read_file(root, &format!("{dir}/type")).ok().flatten().filter(|t| !t.is_empty());
        let celsius = read_value(root, &temp, state::parse_millidegrees, &mut s.unreadable);
        s.temperatures.push(Zone { zone: name, kind, celsius });
    }
    if s.temperatures.is_empty() {
        s.not_exposed.push("thermal zones");
    }
}

fn read_cpufreq(root: &SysRoot, s: &mut Snapshot) {
    for (cpu, name) in numbered(&root.path(CPUS), "cpu") {
        let dir = format!("{CPUS}/{name}/cpufreq");
        if !root.path(&dir).is_dir() {
            continue;
        }
        let cur_mhz = read_value(root, &format!("{dir}/scaling_cur_freq"), state::parse_khz, &mut s.unreadable);
        let max_mhz = read_value(root, &format!("{dir}/cpuinfo_max_freq"), state::parse_khz, &mut s.unreadable);
        s.cpufreq.push(CpuFreq { cpu, cur_mhz, max_mhz });
    }
    if s.cpufreq.is_empty() {
        s.not_exposed.push("cpufreq");
    }
}

/// The process's peak resident set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeakRss {
    /// In MiB (2^20 bytes).
    pub mib: f64,
    /// Where it came from: `/proc/self/status VmHWM` or `getrusage ru_maxrss`.
    pub source: &'static str,
}

/// The peak resident set of this process: `VmHWM` of `/proc/self/status` under `root`, else
/// getrusage's `ru_maxrss` (kB on Linux); None when neither answers.
pub fn peak_rss(root: &SysRoot) -> Option<PeakRss> {
    let from_status = std::fs::read_to_string(root.path(STATUS)).ok().and_then(|t| state::parse_vm_hwm(&t));
    if let Some(kb) = from_status {
        return Some(PeakRss { mib: kb as f64 / 1024.0, source: "/proc/self/status VmHWM" });
    }
    // SAFETY: getrusage only writes the struct it is given, which lives on this stack.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    (ok && usage.ru_maxrss > 0).then(|| PeakRss { mib: usage.ru_maxrss as f64 / 1024.0, source: "getrusage ru_maxrss" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A Raspberry Pi 4's files as its kernel writes them: one zone `cpu-thermal`, four CPUs
    /// sharing one policy, and the firmware driver's `get_throttled` (`%x\n`).
    fn pi4(root: &Path, millideg: &str, khz: &str, throttled: &str) {
        write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        write(root, "sys/class/thermal/thermal_zone0/temp", &format!("{millideg}\n"));
        write(root, "sys/class/thermal/cooling_device0/type", "cpufreq-cpu0\n");
        for cpu in 0..4 {
            write(root, &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"), &format!("{khz}\n"));
            write(root, &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"), "1800000\n");
        }
        write(root, "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", &format!("{khz}\n"));
        write(root, "sys/devices/system/cpu/online", "0-3\n");
        write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", &format!("{throttled}\n"));
    }

    #[test]
    fn reads_a_pi4_tree_and_warns_when_its_files_change_to_throttled() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::at(dir.path());
        pi4(dir.path(), "61854", "1800000", "0");
        let before = read(&root);
        assert_eq!(before.temperatures.len(), 1);
        assert_eq!(before.temperatures[0].kind.as_deref(), Some("cpu-thermal"));
        assert!((before.hottest().unwrap() - 61.854).abs() < 1e-9);
        assert_eq!(before.cpufreq.len(), 4);
        assert_eq!((before.fastest_mhz(), before.max_mhz()), (Some(1800.0), Some(1800.0)));
        assert_eq!(before.throttled.as_ref().unwrap().raw, "0x0");
        assert!(before.not_exposed.is_empty() && before.unreadable.is_empty(), "{before:?}");
        let limits = Limits { freq_floor: 0.9, soft_limit_c: Some(80.0) };
        assert!(throttle_warnings(&before, &before, &limits).is_empty());
        // The run heats the SoC past 80 °C: the firmware caps the clock and sets its bits.
        pi4(dir.path(), "82300", "1500000", "e0008");
        let after = read(&root);
        assert_eq!(after.throttled.as_ref().unwrap().raw, "0xe0008");
        let w = throttle_warnings(&before, &after, &limits);
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(w[0].contains("soft temperature limit now"), "{}", w[0]);
        assert!(w[1].contains("arm frequency capped, throttled, soft temperature limit during the run"), "{}", w[1]);
        assert!(w[2].contains("from 1800 MHz to 1500 MHz"), "{}", w[2]);
        assert!(w[3].contains("crossed the board's throttling temperature 80"), "{}", w[3]);
    }

    #[test]
    fn absent_files_are_not_exposed_and_garbage_is_unreadable() {
        let empty = tempfile::tempdir().unwrap();
        let s = read(&SysRoot::at(empty.path()));
        assert_eq!(s.not_exposed, ["thermal zones", "cpufreq", "get_throttled"]);
        assert!(s.temperatures.is_empty() && s.cpufreq.is_empty() && s.throttled.is_none());
        assert!(s.summary().contains("not exposed"), "{}", s.summary());
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sys/class/thermal/thermal_zone0/temp", "not a number\n");
        write(dir.path(), "sys/class/thermal/thermal_zone1/type", "x86_pkg_temp\n");
        write(dir.path(), "sys/class/thermal/thermal_zone1/temp", "45000\n");
        write(dir.path(), "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "<unknown>\n");
        write(dir.path(), "sys/devices/platform/soc/soc:firmware/get_throttled", "zz\n");
        let s = read(&SysRoot::at(dir.path()));
        assert_eq!(s.temperatures.len(), 2);
        assert_eq!(s.temperatures[0].celsius, None);
        assert_eq!(s.hottest(), Some(45.0));
        assert_eq!(s.cpufreq, [CpuFreq { cpu: 0, cur_mhz: None, max_mhz: None }]);
        assert!(s.throttled.is_none());
        assert_eq!(s.unreadable.len(), 3, "{:?}", s.unreadable);
        assert!(s.unreadable[0].contains("thermal_zone0/temp: 'not a number'"), "{:?}", s.unreadable);
        assert!(throttle_warnings(&s, &s, &Limits::default()).is_empty());
    }

    #[test]
    fn peak_rss_reads_vm_hwm_under_the_root_else_asks_getrusage() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "proc/self/status",
            "Name:\tedgecascade\nVmPeak:\t  900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  100000 kB\n",
        );
        let p = peak_rss(&SysRoot::at(dir.path())).unwrap();
        assert_eq!(p, PeakRss { mib: 200.0, source: "/proc/self/status VmHWM" });
        let empty = tempfile::tempdir().unwrap();
        let p = peak_rss(&SysRoot::at(empty.path())).unwrap();
        assert_eq!(p.source, "getrusage ru_maxrss");
        assert!(p.mib > 1.0, "{p:?}");
    }
}
