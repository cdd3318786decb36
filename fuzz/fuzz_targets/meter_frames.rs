//! Fuzzes the external power meters' parsers (`src/energy/rdtech_frame.rs`, the RDTech UM
//! reply; `src/energy/fnirsi_report.rs`, the FNIRSI data report) on arbitrary bytes: they must
//! return a frame or an error, never panic, and accept only whole frames with readings that
//! make sense (no negative volts or amps, a data group the meter has).
//!
//! `cargo +nightly fuzz run meter_frames` from `fuzz/`. The files are mounted by path, like the
//! link's in `frame_decoder.rs`: they use only `std` and `thiserror`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/energy/rdtech_frame.rs"]
#[allow(dead_code)]
mod rdtech_frame;

#[path = "../../src/energy/fnirsi_report.rs"]
#[allow(dead_code)]
mod fnirsi_report;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = rdtech_frame::parse(data) {
        assert_eq!(data.len(), rdtech_frame::FRAME_LEN);
        assert!(f.volts >= 0.0 && f.amps >= 0.0 && f.group <= 9);
    }
    if let Ok(Some(samples)) = fnirsi_report::parse(data) {
        assert_eq!(data.len(), fnirsi_report::REPORT_LEN);
        assert_eq!(samples.len(), fnirsi_report::SAMPLES_PER_REPORT);
    }
});
