//! The estimate used when no sensor can be read: the board's power model (idle and active
//! watts, from its profile) interpolated by the CPU time this process used, read from
//! `/proc/self/stat` (utime + stime, under the `SysRoot`). Energy since opening =
//! idle x wall time + (active - idle) x CPU seconds / cores. Its source always starts with
//! `estimate`. When the CPU time cannot be read it assumes every core busy (active power).

use super::{read_file, EnergyMeter, ErrorKind, MeterError, Reading};
use crate::board::{Board, SysRoot};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on every Linux port).
pub const TICKS_PER_SECOND: f64 = 100.0;
const INTERVAL: Duration = Duration::from_millis(50);

/// User + system CPU seconds from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

/// Joules over `wall_s` seconds for a board idling at `idle_w` and drawing `active_w` with
/// all `cores` busy, when the process kept `busy_core_s` core-seconds busy.
pub fn estimate_joules(idle_w: f64, active_w: f64, cores: usize, wall_s: f64, busy_core_s: f64) -> f64 {
    let busy_wall = (busy_core_s / cores.max(1) as f64).clamp(0.0, wall_s.max(0.0));
    idle_w * wall_s + (active_w - idle_w) * busy_wall
}

fn read_cpu(path: &Path) -> Result<f64, MeterError> {
    let text = read_file(path)?;
    cpu_seconds(&text, TICKS_PER_SECOND)
        .ok_or_else(|| MeterError::new(ErrorKind::Garbage, format!("{}: no utime and stime fields", path.display())))
}

/// The estimate from CPU time and a power model.
pub struct CpuTimeEstimate {
    source: String,
    idle_w: f64,
    active_w: f64,
    cores: usize,
    stat: PathBuf,
    start: Instant,
    cpu0: f64,
    /// Core-seconds busy up to `cpu_lost_at` (when the CPU time could no longer be read).
    busy: f64,
    /// Wall seconds at which the CPU time was lost, and why; from then on every core counts
    /// as busy.
    cpu_lost_at: Option<(f64, MeterError)>,
    /// True once the loss has been reported (at the first reading, so an estimate kept only
    /// as a fallback stays quiet).
    warned: bool,
}

impl CpuTimeEstimate {
    /// `after` says what failed when the estimate stands in for a sensor.
    pub fn open(board: &Board, root: &SysRoot, after: Option<&str>) -> CpuTimeEstimate {
        let p = &board.power;
        let stat = root.path("/proc/self/stat");
        let after = after.map_or(String::new(), |a| format!("; {a}"));
        let (cpu0, cpu_lost_at, source) = match read_cpu(&stat) {
            Ok(c) => (
                c,
                None,
                format!(
                    "estimate: CPU time x {} power model (idle {} W, active {} W){after}",
                    board.name, p.idle.watts, p.active.watts
                ),
            ),
            Err(e) => (
                0.0,
                Some((0.0, e)),
                format!("estimate: {} active power {} W (no CPU time){after}", board.name, p.active.watts),
            ),
        };
        CpuTimeEstimate {
            source,
            idle_w: p.idle.watts,
            active_w: p.active.watts,
            cores: p.cores(),
            stat,
            start: Instant::now(),
            cpu0,
            busy: 0.0,
            cpu_lost_at,
            warned: false,
        }
    }

    /// The board's idle power: the estimate's baseline.
    pub fn idle_watts(&self) -> f64 {
        self.idle_w
    }
}

impl EnergyMeter for CpuTimeEstimate {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        INTERVAL
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let wall = self.start.elapsed().as_secs_f64();
        if self.cpu_lost_at.is_none() {
            match read_cpu(&self.stat) {
                Ok(c) => self.busy = (c - self.cpu0).max(self.busy),
                Err(e) => self.cpu_lost_at = Some((wall, e)),
            }
        }
        if let (Some((_, e)), false) = (&self.cpu_lost_at, self.warned) {
            log::warn!("{e}; the energy estimate counts every core busy (active power) from now on");
            self.warned = true;
        }
        let busy = match &self.cpu_lost_at {
            Some((at, _)) => self.busy + (wall - at) * self.cores as f64,
            None => self.busy,
        };
        Ok(Reading::Joules(estimate_joules(self.idle_w, self.active_w, self.cores, wall, busy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_skip_a_name_with_spaces_and_parens() {
        let stat = "4242 (my (odd) name) R 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 1000 0";
        assert_eq!(cpu_seconds(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds("garbage", 100.0), None);
        assert_eq!(cpu_seconds("1 (x) R 1 2", 100.0), None);
    }

    #[test]
    fn estimate_is_idle_plus_busy_share() {
        // 4 cores, 10 s, 20 core-seconds busy: half the wall time at full load.
        let j = estimate_joules(2.0, 6.0, 4, 10.0, 20.0);
        assert!((j - (2.0 * 10.0 + 4.0 * 5.0)).abs() < 1e-9);
        // More busy time than wall time counts as fully busy, no more.
        assert!((estimate_joules(2.0, 6.0, 1, 1.0, 5.0) - 6.0).abs() < 1e-9);
    }
}
