//! The FNIRSI meters' 64-byte data report (the layout is in [`super`]'s documentation):
//! decoded, checked and laid out. Pure: no I/O, only `std` and `thiserror`, so that the fuzz
//! target (`fuzz/fuzz_targets/meter_frames.rs`) mounts this file by path.

/// A report's length.
pub const REPORT_LEN: usize = 64;
/// Samples per data report.
pub const SAMPLES_PER_REPORT: usize = 4;

/// CRC-8, polynomial 0x39, initial value 0x42, MSB first, no final xor.
pub fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0x42u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x39 } else { crc << 1 };
        }
        crc
    })
}

/// One sample of a report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub volts: f64,
    pub amps: f64,
}

/// Why a report was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report of {0} bytes, expected {REPORT_LEN}")]
    Length(usize),
    #[error("report starts 0x{0:02X}, expected 0xAA")]
    Marker(u8),
    #[error("bad CRC 0x{got:02X} (computed 0x{want:02X})")]
    Checksum { got: u8, want: u8 },
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The four samples of a data report; `None` for a report of another type.
pub fn parse(report: &[u8]) -> Result<Option<[Sample; SAMPLES_PER_REPORT]>, ReportError> {
    if report.len() != REPORT_LEN {
        return Err(ReportError::Length(report.len()));
    }
    if report[0] != 0xAA {
        return Err(ReportError::Marker(report[0]));
    }
    if report[1] != 0x04 {
        return Ok(None);
    }
    let (got, want) = (report[63], crc8(&report[1..63]));
    if got != want {
        return Err(ReportError::Checksum { got, want });
    }
    let mut out = [Sample { volts: 0.0, amps: 0.0 }; SAMPLES_PER_REPORT];
    for (i, s) in out.iter_mut().enumerate() {
        let at = 2 + 15 * i;
        *s = Sample { volts: le32(report, at) as f64 / 1e5, amps: le32(report, at + 4) as f64 / 1e5 };
    }
    Ok(Some(out))
}

/// A data report as the meter sends it, from (voltage in 10 uV, current in 10 uA) per sample.
/// For tests and fakes.
pub fn encode(samples: [(u32, u32); SAMPLES_PER_REPORT]) -> [u8; REPORT_LEN] {
    let mut r = [0u8; REPORT_LEN];
    r[0] = 0xAA;
    r[1] = 0x04;
    for (i, (v, a)) in samples.iter().enumerate() {
        let at = 2 + 15 * i;
        r[at..at + 4].copy_from_slice(&v.to_le_bytes());
        r[at + 4..at + 8].copy_from_slice(&a.to_le_bytes());
        r[at + 8..at + 10].copy_from_slice(&600u16.to_le_bytes());
        r[at + 10..at + 12].copy_from_slice(&600u16.to_le_bytes());
        r[at + 12] = 1;
        r[at + 13..at + 15].copy_from_slice(&251u16.to_le_bytes());
    }
    r[62] = 0x01;
    r[63] = crc8(&r[1..63]);
    r
}
