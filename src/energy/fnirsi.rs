//! FNIRSI FNB48 / FNB58 / C1 USB meters over USB HID, read through the kernel's hidraw node
//! (`/dev/hidrawN`; FNB58: VID 0x2E3C PID 0x5558; FNB48 0x0483:0x003A; C1 0x0483:0x003B).
//! The host writes 64-byte commands (`AA 81 00.. 8E`, `AA 82 00.. 96` to start, `AA 83 00.. 9E`
//! at least once a second to keep it going; on hidraw each is preceded by report number 0);
//! the meter sends a 64-byte report every 40 ms:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | 0xAA |
//! | 1 | 1 | type: 0x04 data (others are ignored) |
//! | 2 + 15 i, i = 0..4 | 15 | sample i, 10 ms apart: voltage (u32 LE, 10 uV steps), current (u32 LE, 10 uA steps), D+ and D- (u16 LE, mV), one unknown byte, temperature (u16 LE, 0.1 deg C) |
//! | 62 | 1 | unknown |
//! | 63 | 1 | CRC-8 of bytes 1..63: polynomial 0x39, initial value 0x42, not reflected, no final xor |
//!
//! so 100 samples per second. Read from baryluk's fnirsi-usb-power-data-logger
//! (`fnirsi_logger.py`: the commands, the sample layout and scales, the CRC parameters found
//! with reveng); the code here is written from that description.
//!
//! Each reading drains every report waiting (the descriptor is non-blocking: no read waits)
//! and adds V x I x 10 ms per sample to an energy counter, returned as cumulative joules: the
//! meter's own 100 Hz sampling, not the sampler's, decides the resolution; a report's samples
//! are counted when it arrives, up to 40 ms after the first was taken. A report with a bad
//! CRC is an error, as are no report for `STALL` and a read error (unplugged): the sampler
//! then falls back to the estimate. A FIFO or a file in place of the hidraw node is read as a
//! recording (no commands are written to it).

#[path = "fnirsi_report.rs"]
mod report;
pub use report::*;

use super::meter::{garbage, source_name};
use super::{EnergyMeter, ErrorKind, MeterError, Reading};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The time between a report's samples.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(10);
/// A report comes every 40 ms.
pub const INTERVAL: Duration = Duration::from_millis(40);
/// No report for this long: the meter stalled or was unplugged.
pub const STALL: Duration = Duration::from_millis(1000);
/// FNIRSI's USB vendor and product ids (FNB58, FNB48S; FNB48, C1).
pub const USB_IDS: &[(u16, u16, &str)] =
    &[(0x2E3C, 0x5558, "FNB58"), (0x2E3C, 0x0049, "FNB48S"), (0x0483, 0x003A, "FNB48"), (0x0483, 0x003B, "C1")];

/// A command: `AA op 00.. checksum`.
fn command(op: u8, last: u8) -> [u8; REPORT_LEN + 1] {
    let mut c = [0u8; REPORT_LEN + 1];
    // Report number 0 first (the device has no numbered reports), then the 64 bytes.
    c[1] = 0xAA;
    c[2] = op;
    c[REPORT_LEN] = last;
    c
}

/// A FNIRSI meter on a hidraw node (or a recording of one).
pub struct Fnirsi {
    source: String,
    path: PathBuf,
    file: std::fs::File,
    /// True on a hidraw node: commands are written.
    device: bool,
    joules: f64,
    last_report: Instant,
    last_keepalive: Instant,
    /// The newest sample.
    pub last: Option<Sample>,
}

impl Fnirsi {
    /// Opens the node, starts the meter and waits (up to `STALL`) for its first data report.
    /// `model` names it (`FNB58`).
    pub fn open(path: &Path, model: &str) -> Result<Fnirsi, MeterError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let what = format!("meter {}", path.display());
        let file =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(
                |e| {
                    let kind =
                        if e.kind() == io::ErrorKind::NotFound { ErrorKind::Missing } else { ErrorKind::Unreadable };
                    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                        " (a udev rule can give a group access: see boards/README.md)"
                    } else {
                        ""
                    };
                    MeterError::new(kind, format!("{what}: {e}{hint}"))
                },
            )?;
        let device = file.metadata().map(|m| m.file_type().is_char_device()).unwrap_or(false);
        let now = Instant::now();
        let mut m = Fnirsi {
            source: format!("meter: {model} on {}", path.display()),
            path: path.to_owned(),
            file,
            device,
            joules: 0.0,
            last_report: now,
            last_keepalive: now,
            last: None,
        };
        if device {
            // The FNB58 takes the second command twice, the FNB48 and C1 then 0x83 (the logger's
            // `request_data`).
            let third = if model == "FNB58" { command(0x82, 0x96) } else { command(0x83, 0x9E) };
            for c in [command(0x81, 0x8E), command(0x82, 0x96), third] {
                m.file.write_all(&c).map_err(|e| m.io_error("starting the meter", e))?;
            }
        }
        let deadline = now + STALL;
        while m.last.is_none() {
            m.drain()?;
            if m.last.is_none() {
                if Instant::now() >= deadline {
                    return Err(MeterError::new(
                        ErrorKind::Garbage,
                        format!("{what}: no data report within {} ms", STALL.as_millis()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Energy counts from the first report on.
        m.joules = 0.0;
        let v = m.last.map_or(0.0, |s| s.volts);
        m.source = source_name(model, path, &format!("{v:.1} V input, 100 samples/s"), INTERVAL);
        log::info!("{}", m.source);
        Ok(m)
    }

    fn io_error(&self, what: &str, e: io::Error) -> MeterError {
        MeterError::new(ErrorKind::Unreadable, format!("meter {}: {what}: {e}", self.path.display()))
    }

    /// Reads every report waiting, adding each sample's energy.
    fn drain(&mut self) -> Result<(), MeterError> {
        let mut buf = [0u8; REPORT_LEN];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(REPORT_LEN) => {}
                Ok(n) => {
                    // A short read on a recording may finish on the next read; a hidraw node
                    // returns whole reports only.
                    let mut got = n;
                    let deadline = Instant::now() + Duration::from_millis(50);
                    while got < REPORT_LEN && Instant::now() < deadline {
                        match self.file.read(&mut buf[got..]) {
                            Ok(k) if k > 0 => got += k,
                            _ => std::thread::sleep(Duration::from_millis(1)),
                        }
                    }
                    if got < REPORT_LEN {
                        return Err(garbage(&format!("meter {}", self.path.display()), ReportError::Length(got)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error("reading a report", e)),
            }
            match parse(&buf) {
                Ok(Some(samples)) => {
                    for s in samples {
                        self.joules += s.volts * s.amps * SAMPLE_PERIOD.as_secs_f64();
                    }
                    self.last = Some(samples[SAMPLES_PER_REPORT - 1]);
                    self.last_report = Instant::now();
                }
                Ok(None) => {}
                Err(e) => return Err(garbage(&format!("meter {}", self.path.display()), e)),
            }
        }
    }
}

impl EnergyMeter for Fnirsi {
    fn source(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        INTERVAL
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        self.drain()?;
        if self.last_report.elapsed() > STALL {
            return Err(MeterError::new(
                ErrorKind::Garbage,
                format!(
                    "meter {}: no report for {} ms (stalled or unplugged)",
                    self.path.display(),
                    self.last_report.elapsed().as_millis()
                ),
            ));
        }
        if self.device && self.last_keepalive.elapsed() >= Duration::from_millis(900) {
            self.file.write_all(&command(0x83, 0x9E)).map_err(|e| self.io_error("keeping the meter going", e))?;
            self.last_keepalive = Instant::now();
        }
        Ok(Reading::Joules(self.joules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data report written out byte by byte from the layout above: four samples of
    /// 5.10000 V (510000 x 10 uV = 00 07 C8 30 little-endian) and 0.60000 A (60000 x 10 uA =
    /// 00 00 EA 60), D+/D- 0.600 V, unknown byte 1, 25.1 C; byte 62 = 1; CRC last.
    fn golden() -> Vec<u8> {
        let mut r = vec![0xAA, 0x04];
        for _ in 0..4 {
            r.extend([0x30, 0xC8, 0x07, 0x00, 0x60, 0xEA, 0x00, 0x00, 0x58, 0x02, 0x58, 0x02, 0x01, 0xFB, 0x00]);
        }
        r.push(0x01);
        r.push(crc8(&r[1..63]));
        r
    }

    #[test]
    fn crc8_matches_its_parameters_check_value() {
        // reveng's check value for poly 0x39, init 0x42 over "123456789" (the logger's note).
        assert_eq!(crc8(b"123456789"), 0x4B);
    }

    #[test]
    fn a_golden_report_decodes() {
        let g = golden();
        assert_eq!(g.len(), REPORT_LEN);
        let s = parse(&g).unwrap().unwrap();
        for x in s {
            assert!((x.volts - 5.1).abs() < 1e-12 && (x.amps - 0.6).abs() < 1e-12, "{x:?}");
        }
        assert_eq!(encode([(510_000, 60_000); 4]).to_vec(), g);
    }

    #[test]
    fn bad_crc_short_and_foreign_reports() {
        let mut b = golden();
        b[10] ^= 0x04;
        assert!(matches!(parse(&b), Err(ReportError::Checksum { .. })));
        let g = golden();
        assert_eq!(parse(&g[..40]), Err(ReportError::Length(40)));
        let mut b = golden();
        b[0] = 0x55;
        assert_eq!(parse(&b), Err(ReportError::Marker(0x55)));
        let mut b = golden();
        b[1] = 0x03;
        assert_eq!(parse(&b), Ok(None), "other report types are skipped");
    }
}
