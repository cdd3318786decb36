//! What `edgecascade boards` shows: every profile, the board chosen and why, its sensor as
//! opened (or why it could not be, and the estimate standing in) and a live reading; the
//! external meters found (ina2xx hwmon devices, FNIRSI hidraw nodes), and with `--meter` that
//! meter in place of the board's sensor.

use super::{live_watts, EnergyMeter, MeterSpec};
use crate::board::{Resolved, SysRoot};
use serde::Serialize;
use std::path::Path;

/// An external meter found on this machine: the `--meter` value that reads it, and what it is.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FoundMeter {
    pub spec: String,
    pub what: String,
}

/// The external meters under `root`: hwmon devices of the ina2xx driver
/// (`/sys/class/hwmon/*/name`) and hidraw nodes with a FNIRSI meter's USB ids
/// (`/sys/class/hidraw/*/device/uevent`, `HID_ID=0003:VVVVVVVV:PPPPPPPP`). Paths in the specs are
/// the machine's own (`/sys/...`, `/dev/hidrawN`), not re-rooted.
pub fn find_meters(root: &SysRoot) -> Vec<FoundMeter> {
    let mut out = Vec::new();
    for (name, _) in entries(&root.path("/sys/class/hwmon")) {
        let dir = Path::new("/sys/class/hwmon").join(&name);
        if let Some(chip) = super::ina2xx::chip_name(&root.path(&dir)) {
            out.push(FoundMeter { spec: format!("{chip}:{}", dir.display()), what: format!("{chip} (ina2xx hwmon)") });
        }
    }
    for (name, path) in entries(&root.path("/sys/class/hidraw")) {
        let Ok(uevent) = std::fs::read_to_string(path.join("device/uevent")) else { continue };
        let Some(id) = uevent.lines().find_map(|l| l.strip_prefix("HID_ID=")) else { continue };
        let mut parts = id.trim().split(':').skip(1).map(|h| u32::from_str_radix(h, 16).ok());
        let (Some(Some(vid)), Some(Some(pid))) = (parts.next(), parts.next()) else { continue };
        if let Some(&(_, _, model)) =
            super::fnirsi::USB_IDS.iter().find(|&&(v, p, _)| v as u32 == vid && p as u32 == pid)
        {
            let kind = if model == "FNB48S" { "fnb48".to_owned() } else { model.to_ascii_lowercase() };
            out.push(FoundMeter {
                spec: format!("{kind}:/dev/{name}"),
                what: format!("FNIRSI {model} (USB {vid:04x}:{pid:04x})"),
            });
        }
    }
    out
}

/// A folder's entries (name, path), sorted by name; none when it cannot be listed.
fn entries(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut v: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub name: String,
    pub description: String,
    pub sensor: String,
    pub origin: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SensorRow {
    /// The sensor and rail(s), or `estimate: ...`.
    pub source: String,
    pub kind: String,
    pub interval_ms: u64,
    pub estimate: bool,
    /// Why the board's own sensor could not be used, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Survey {
    pub profiles: Vec<ProfileRow>,
    pub board: String,
    pub reason: String,
    pub forced: bool,
    /// The directory `/sys` and `/proc` were read under, when re-rooted.
    pub sysfs_root: Option<String>,
    pub sensor: SensorRow,
    /// Watts now, or None when even the reading failed.
    pub watts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading_error: Option<String>,
    /// The CPU: its features, the int8 kernels that can run on it, tract's choice (filled by
    /// the command, which knows the runner).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// External meters found here (`--meter` values).
    pub meters: Vec<FoundMeter>,
    /// The `--meter` read instead of the board's sensor, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
}

/// Opens the chosen board's sensor (or the estimate), or the external meter `spec` when
/// given, and takes a live reading.
pub fn survey(r: &Resolved, spec: Option<&MeterSpec>) -> Survey {
    let board = &r.detection.board;
    let opened = match spec {
        Some(spec) => super::meter::open(spec, &r.root),
        None => super::open(board, &r.root),
    };
    let (mut meter, error): (Box<dyn EnergyMeter>, Option<String>) = match opened {
        Ok(m) => (m, None),
        Err(e) => {
            let error = (spec.is_some() || board.sensor.kind != crate::board::SensorKind::None).then(|| e.to_string());
            (super::estimate_for(board, &r.root, None), error)
        }
    };
    let (watts, reading_error) = match live_watts(meter.as_mut()) {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let source = meter.source().to_owned();
    Survey {
        profiles: r
            .boards
            .all()
            .iter()
            .map(|b| ProfileRow {
                name: b.name.clone(),
                description: b.description.clone(),
                sensor: b.sensor.kind.to_string(),
                origin: b.origin.clone(),
            })
            .collect(),
        board: board.name.clone(),
        reason: r.detection.reason.clone(),
        forced: r.detection.forced,
        sysfs_root: r.root.root().map(|p| p.display().to_string()),
        sensor: SensorRow {
            estimate: source.starts_with("estimate"),
            source,
            kind: spec.map_or_else(|| board.sensor.kind.to_string(), |s| format!("meter {s}")),
            interval_ms: super::clamp_interval(meter.interval()).as_millis() as u64,
            error,
            note: board.sensor.note.clone(),
        },
        watts,
        reading_error,
        cpu: String::new(),
        meters: find_meters(&r.root),
        meter: spec.map(|s| s.to_string()),
    }
}

/// The survey as text.
pub fn survey_text(s: &Survey) -> String {
    let mut t = String::from("board profiles:\n");
    for p in &s.profiles {
        let mark = if p.name == s.board { "*" } else { " " };
        t += &format!("{mark} {:<18} {:<15} {}\n", p.name, p.sensor, p.description);
    }
    t += &format!("\nboard: {} ({})\n", s.board, s.reason);
    if let Some(root) = &s.sysfs_root {
        t += &format!("/sys and /proc read under {root}\n");
    }
    if let Some(e) = &s.sensor.error {
        t += &format!("sensor {}: {e}\n", s.sensor.kind);
    }
    t += &format!("energy source: {} (every {} ms)\n", s.sensor.source, s.sensor.interval_ms);
    if let Some(n) = &s.sensor.note {
        t += &format!("  note: {n}\n");
    }
    match (s.watts, &s.reading_error) {
        (Some(w), _) => t += &format!("live reading: {w:.2} W{}", if s.sensor.estimate { " (estimate)" } else { "" }),
        (None, Some(e)) => t += &format!("live reading failed: {e}"),
        (None, None) => t += "no live reading",
    }
    if s.meters.is_empty() {
        t += "\nexternal meters found: none (ina2xx hwmon devices, FNIRSI hidraw nodes)";
    } else {
        t += "\nexternal meters found (use with --meter):";
        for m in &s.meters {
            t += &format!("\n  {:<32} {}", m.spec, m.what);
        }
    }
    if !s.cpu.is_empty() {
        t += &format!("\nCPU {}", s.cpu);
    }
    t
}
