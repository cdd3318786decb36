//! Raspberry Pi 5 PMIC through `vcgencmd pmic_read_adc` (the command comes from the board
//! profile). It prints one line per ADC channel, `VDD_CORE_A current(7)=1.42880000A` or
//! `VDD_CORE_V volt(15)=0.90659250V`; a rail's power is V x A of its matching pair. Rails
//! with a voltage only (EXT5V, BATT) cannot give power and are left out, so the sum
//! undercounts the board's input power. `parse` is pure and tested on real output.

use super::{select_rails, source_name, EnergyMeter, ErrorKind, MeterError, Reading};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Period when the profile does not say: each call costs the firmware ADC time.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// How long the command may take before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// One rail with both a current and a voltage reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Rail {
    pub name: String,
    pub volts: f64,
    pub amps: f64,
}

impl Rail {
    pub fn watts(&self) -> f64 {
        self.volts * self.amps
    }
}

/// One parsed line: rail name, true for a current (false: a voltage), the value.
fn parse_line(line: &str) -> Option<(&str, bool, f64)> {
    let (label, rest) = line.trim().split_once(char::is_whitespace)?;
    let (kind, value) = rest.trim().split_once('=')?;
    let (name, is_current, unit) =
        if let Some(n) = label.strip_suffix("_A") { (n, true, 'A') } else { (label.strip_suffix("_V")?, false, 'V') };
    let expected = if is_current { "current(" } else { "volt(" };
    if !kind.starts_with(expected) || !kind.ends_with(')') {
        return None;
    }
    let v: f64 = value.trim().strip_suffix(unit)?.parse().ok()?;
    Some((name, is_current, v))
}

/// The rails of `pmic_read_adc` output, in the order of their current lines. Rails without
/// both readings, or with a value that is not a finite number, are left out; output with no
/// complete rail at all (an error message, garbage) is an error quoting its first line.
pub fn parse(text: &str) -> Result<Vec<Rail>, String> {
    let mut currents: Vec<(&str, f64)> = Vec::new();
    let mut volts: Vec<(&str, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some((name, true, v)) => currents.push((name, v)),
            Some((name, false, v)) => volts.push((name, v)),
            None => log::debug!("pmic_read_adc: unrecognised line '{}'", line.trim()),
        }
    }
    let rails: Vec<Rail> = currents
        .iter()
        .filter_map(|&(name, amps)| {
            let &(_, v) = volts.iter().find(|(n, _)| *n == name)?;
            (amps.is_finite() && v.is_finite()).then(|| Rail { name: name.to_owned(), volts: v, amps })
        })
        .collect();
    if rails.is_empty() {
        let first: String = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().chars().take(80).collect();
        return Err(format!("no rail with both a current and a voltage reading (output begins '{first}')"));
    }
    Ok(rails)
}

/// Runs `command` and returns its standard output, killing it after `timeout`.
fn run(command: &[String], timeout: Duration) -> Result<String, MeterError> {
    let shown = command.join(" ");
    let fail = |msg: String| MeterError::new(ErrorKind::Command, format!("`{shown}`: {msg}"));
    let (program, args) = command.split_first().ok_or_else(|| fail("empty command".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run: {e}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {timeout:?}")));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).map_err(|e| fail(format!("unreadable output: {e}")))?;
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(fail(format!("{status}: {}", err.trim())));
    }
    Ok(out)
}

/// The PMIC's rails through a command.
pub struct PmicReadAdc {
    command: Vec<String>,
    source: String,
    interval: Duration,
    /// Names of the rails summed.
    rails: Vec<String>,
}

impl PmicReadAdc {
    /// Runs the command once to find the rails: those named (present ones), or every rail
    /// with both readings when none are named.
    pub fn open(command: &[String], rails: &[String], interval: Option<Duration>) -> Result<PmicReadAdc, MeterError> {
        let out = run(command, COMMAND_TIMEOUT)?;
        let found =
            parse(&out).map_err(|e| MeterError::new(ErrorKind::Garbage, format!("`{}`: {e}", command.join(" "))))?;
        let names: Vec<String> = found.iter().map(|r| r.name.clone()).collect();
        let picked = select_rails(&format!("`{}`", command.join(" ")), &names, None, rails)?;
        let chosen: Vec<String> = picked.iter().map(|&i| names[i].clone()).collect();
        let refs: Vec<&str> = chosen.iter().map(|s| s.as_str()).collect();
        let source = source_name("pmic_read_adc", &refs);
        log::info!(
            "{source}: PMIC rails found: {} (no current for EXT5V: input power is undercounted)",
            names.join(", ")
        );
        Ok(PmicReadAdc {
            command: command.to_vec(),
            source,
            interval: interval.unwrap_or(DEFAULT_INTERVAL),
            rails: chosen,
        })
    }
}

impl EnergyMeter for PmicReadAdc {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let out = run(&self.command, COMMAND_TIMEOUT)?;
        let found = parse(&out)
            .map_err(|e| MeterError::new(ErrorKind::Garbage, format!("`{}`: {e}", self.command.join(" "))))?;
        let mut watts = 0.0;
        for name in &self.rails {
            let r = found.iter().find(|r| &r.name == name).ok_or_else(|| {
                MeterError::new(ErrorKind::Garbage, format!("`{}`: rail {name} is gone", self.command.join(" ")))
            })?;
            watts += r.watts();
        }
        Ok(Reading::Watts(watts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_current_and_voltage_by_rail() {
        let text =
            "  VDD_CORE_A current(7)=1.42880000A\n  VDD_CORE_V volt(15)=0.90659250V\n  EXT5V_V volt(24)=5.05716000V\n";
        let rails = parse(text).unwrap();
        assert_eq!(rails.len(), 1);
        assert_eq!(rails[0].name, "VDD_CORE");
        assert!((rails[0].watts() - 1.4288 * 0.9065925).abs() < 1e-12);
    }

    #[test]
    fn error_output_is_an_error() {
        let e = parse("error=1 error_msg=\"Command not registered\"\n").unwrap_err();
        assert!(e.contains("Command not registered"), "{e}");
        assert!(parse("").is_err());
    }

    #[test]
    fn bad_lines_are_left_out() {
        let text = " A_A current(1)=1.0A\n A_V volt(2)=2.0V\n B_A volt(1)=3.0A\n B_V volt(3)=1.2.3V\n C_A current(4)=nanA\n C_V volt(5)=1.0V\n";
        let rails = parse(text).unwrap();
        assert_eq!(rails, vec![Rail { name: "A".into(), volts: 2.0, amps: 1.0 }]);
    }
}
