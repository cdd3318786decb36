//! What `edgecascade boards` shows: every profile, the board chosen and why, its sensor as
//! opened (or why it could not be, and the estimate standing in) and a live reading.

use super::{live_watts, EnergyMeter};
use crate::board::Resolved;
use serde::Serialize;

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
}

/// Opens the chosen board's sensor (or the estimate) and takes a live reading.
pub fn survey(r: &Resolved) -> Survey {
    let board = &r.detection.board;
    let (mut meter, error): (Box<dyn EnergyMeter>, Option<String>) = match super::open(board, &r.root) {
        Ok(m) => (m, None),
        Err(e) => {
            let error = (board.sensor.kind != crate::board::SensorKind::None).then(|| e.to_string());
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
            kind: board.sensor.kind.to_string(),
            interval_ms: super::clamp_interval(meter.interval()).as_millis() as u64,
            error,
            note: board.sensor.note.clone(),
        },
        watts,
        reading_error,
        cpu: String::new(),
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
    if !s.cpu.is_empty() {
        t += &format!("\nCPU {}", s.cpu);
    }
    t
}
