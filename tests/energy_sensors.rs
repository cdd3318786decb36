//! The sensor readers on fake sysfs trees laid out as each board's (see common::energy), the
//! Raspberry Pi 5 parser on real `pmic_read_adc` output, the sampler with a writer thread
//! changing values under it, the faults (missing, unreadable, garbage, vanishing mid-run)
//! and the attribution of energy to spans against known power profiles.

mod common;

use common::energy::*;
use edgecascade::board::{Board, Boards, SysRoot};
use edgecascade::energy::attribute::{counter_integral, power_integral};
use edgecascade::energy::sampler::{attribute_segments, Baseline, Kind, Segment};
use edgecascade::energy::{self, hwmon, meter, pmic, EnergyContext, EnergyMeter, ErrorKind, MeterSpec, Reading};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn board(name: &str) -> Board {
    Boards::builtin().get(name).unwrap().clone()
}

fn watts(m: &mut dyn EnergyMeter) -> f64 {
    match m.read().unwrap() {
        Reading::Watts(w) => w,
        r => panic!("expected watts, got {r:?}"),
    }
}

fn joules(m: &mut dyn EnergyMeter) -> f64 {
    match m.read().unwrap() {
        Reading::Joules(j) => j,
        r => panic!("expected joules, got {r:?}"),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pmic_read_adc").join(name)
}

/// Waits (up to a generous deadline) until `f` holds; panics with `what` if it never does.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- Jetson, hwmon (JetPack 5/6) ----

#[test]
fn orin_nano_reads_vdd_in_as_the_total() {
    let dir = tempfile::tempdir().unwrap();
    orin_nano(dir.path(), 5000, 1000);
    let mut m = energy::open(&board("jetson-orin-nano"), &SysRoot::at(dir.path())).unwrap();
    assert_eq!(m.source(), "ina3221:VDD_IN");
    assert_eq!(m.interval(), Duration::from_millis(140), "the chip's update_interval");
    assert!((watts(m.as_mut()) - 5.0).abs() < 1e-12);
}

#[test]
fn without_a_total_rail_the_named_rails_are_summed() {
    let dir = tempfile::tempdir().unwrap();
    let h = orin_nano(dir.path(), 5000, 1000);
    replace(&h.join("in1_label"), "NC\n");
    let mut m = energy::open(&board("jetson-orin-nano"), &SysRoot::at(dir.path())).unwrap();
    assert_eq!(m.source(), "ina3221:VDD_CPU_GPU_CV+VDD_SOC");
    let expected = (4968.0 * 320.0 + 4976.0 * 480.0) / 1e6;
    assert!((watts(m.as_mut()) - expected).abs() < 1e-12);
}

#[test]
fn nc_and_sum_channels_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    agx_orin(dir.path(), [1000, 800, 600, 200]);
    let driver = dir.path().join("sys/bus/i2c/drivers/ina3221");
    let (channels, interval) = hwmon::discover(&driver).unwrap();
    let labels: Vec<&str> = channels.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]);
    assert_eq!(interval, Some(Duration::from_millis(20)));
    // Every rail found, none named: the sum channel and the NC channels stay out.
    let mut all = hwmon::HwmonIna3221::open(&driver, None, &[], None).unwrap();
    assert!((watts(&mut all) - 5.0 * 2.6).abs() < 1e-12);
    let mut m = energy::open(&board("jetson-agx-orin"), &SysRoot::at(dir.path())).unwrap();
    assert_eq!(m.source(), "ina3221:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO");
    assert!((watts(m.as_mut()) - 13.0).abs() < 1e-12);
}

// ---- Jetson, IIO (JetPack 4) ----

#[test]
fn jetson_nano_reads_pom_5v_in_in_milliwatts() {
    let dir = tempfile::tempdir().unwrap();
    let d = jetson_nano(dir.path(), [3200, 400, 1100]);
    let mut m = energy::open(&board("jetson-nano"), &SysRoot::at(dir.path())).unwrap();
    assert_eq!(m.source(), "ina3221x:POM_5V_IN");
    assert!((watts(m.as_mut()) - 3.2).abs() < 1e-12);
    replace(&d.join("in_power0_input"), "4100\n");
    assert!((watts(m.as_mut()) - 4.1).abs() < 1e-12);
}

// ---- RAPL ----

#[test]
fn rapl_counts_across_a_wrap_and_ignores_subzones() {
    let dir = tempfile::tempdir().unwrap();
    let max = 262_143_328_850u64;
    let d = rapl(dir.path(), max - 300_000, max);
    let mut m = energy::open(&board("x86-rapl"), &SysRoot::at(dir.path())).unwrap();
    // No psys here: the package, not its core subzone on top of it.
    assert_eq!(m.source(), "rapl:package-0");
    assert_eq!(joules(m.as_mut()), 0.0);
    replace(&d.join("energy_uj"), &format!("{}\n", max - 100_000));
    assert!((joules(m.as_mut()) - 0.2).abs() < 1e-9);
    // The counter wraps: 100 000 uJ to the top, then 50 000 past zero.
    replace(&d.join("energy_uj"), "50000\n");
    let j = joules(m.as_mut());
    assert!((j - 0.35).abs() < 1e-9, "a wrap must add energy, not subtract it: {j}");
    replace(&d.join("energy_uj"), "50000\n");
    assert!((joules(m.as_mut()) - 0.35).abs() < 1e-9);
}

#[test]
fn rapl_prefers_psys_when_the_firmware_has_it() {
    let dir = tempfile::tempdir().unwrap();
    rapl(dir.path(), 1000, 1 << 32);
    write(dir.path(), "sys/class/powercap/intel-rapl:1/name", "psys\n");
    write(dir.path(), "sys/class/powercap/intel-rapl:1/energy_uj", "5\n");
    write(dir.path(), "sys/class/powercap/intel-rapl:1/max_energy_range_uj", "4294967295\n");
    let m = energy::open(&board("x86-rapl"), &SysRoot::at(dir.path())).unwrap();
    assert_eq!(m.source(), "rapl:psys");
}

#[test]
fn rapl_unreadable_for_non_root_falls_back_to_the_estimate() {
    // Tests run as root, so a folder stands in for the file a user cannot read.
    let dir = tempfile::tempdir().unwrap();
    let d = rapl(dir.path(), 1000, 1 << 32);
    std::fs::remove_file(d.join("energy_uj")).unwrap();
    std::fs::create_dir(d.join("energy_uj")).unwrap();
    let e = energy::open(&board("x86-rapl"), &SysRoot::at(dir.path())).err().expect("unreadable");
    assert_eq!(e.kind(), ErrorKind::Unreadable);
    assert!(e.to_string().contains("intel-rapl:0/energy_uj"), "{e}");
    let ctx = EnergyContext::start(&board("x86-rapl"), &SysRoot::at(dir.path()));
    assert!(ctx.source().starts_with("estimate"), "{}", ctx.source());
    assert!(ctx.source().contains("rapl unavailable"), "{}", ctx.source());
}

// ---- Raspberry Pi 5 PMIC ----

#[test]
fn pmic_parser_on_real_output() {
    // Totals computed independently (see tests/fixtures/pmic_read_adc/README.md).
    for (file, total) in [
        ("rpi5-light.txt", 2.94797734247717),
        ("rpi5-load.txt", 10.799894446988574),
        ("rpi5-idle.txt", 1.9678109920989102),
    ] {
        let text = std::fs::read_to_string(fixture(file)).unwrap();
        let rails = pmic::parse(&text).unwrap();
        assert_eq!(rails.len(), 12, "{file}: 12 rails with a current and a voltage");
        assert!(rails.iter().all(|r| r.name != "EXT5V" && r.name != "BATT"), "{file}: voltage-only rails");
        let sum: f64 = rails.iter().map(|r| r.watts()).sum();
        assert!((sum - total).abs() < 1e-9, "{file}: {sum} W, expected {total} W");
    }
    let text = std::fs::read_to_string(fixture("rpi5-light.txt")).unwrap();
    let core = pmic::parse(&text).unwrap().into_iter().find(|r| r.name == "VDD_CORE").unwrap();
    assert_eq!((core.amps, core.volts), (1.4288, 0.9065925));
}

#[test]
fn pmic_meter_runs_the_profile_command() {
    let command = vec!["cat".to_owned(), fixture("rpi5-load.txt").display().to_string()];
    let mut all = pmic::PmicReadAdc::open(&command, &[], None).unwrap();
    assert_eq!(all.source(), "pmic_read_adc:sum of 12 rails");
    assert!((watts(&mut all) - 10.799894446988574).abs() < 1e-9);
    let mut core = pmic::PmicReadAdc::open(&command, &["VDD_CORE".into()], Some(Duration::from_millis(50))).unwrap();
    assert_eq!(core.source(), "pmic_read_adc:VDD_CORE");
    assert_eq!(core.interval(), Duration::from_millis(50));
    assert!((watts(&mut core) - 10.87674 * 0.8974594).abs() < 1e-9);
    // A profile naming its own command: the board's sensor opens through it.
    let mut b = board("rpi5");
    b.sensor.command = command;
    let mut m = energy::open(&b, &SysRoot::host()).unwrap();
    assert!((watts(m.as_mut()) - 10.799894446988574).abs() < 1e-9);
}

#[test]
fn pmic_command_failures_are_errors_naming_the_command() {
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = pmic::PmicReadAdc::open(&cmd(&["echo", "error=1 error_msg=\"Command not registered\""]), &[], None)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Garbage);
    assert!(e.to_string().contains("Command not registered"), "{e}");
    let e = pmic::PmicReadAdc::open(&cmd(&["/nonexistent/vcgencmd", "pmic_read_adc"]), &[], None).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Command);
    assert!(e.to_string().contains("/nonexistent/vcgencmd"), "{e}");
    let e = pmic::PmicReadAdc::open(&cmd(&["false"]), &[], None).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Command);
}

// ---- Faults ----

#[test]
fn missing_garbage_and_unreadable_files_name_the_file() {
    let b = board("jetson-orin-nano");
    let empty = tempfile::tempdir().unwrap();
    let e = energy::open(&b, &SysRoot::at(empty.path())).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Missing);
    assert!(e.to_string().contains("drivers/ina3221"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let h = orin_nano(dir.path(), 5000, 1000);
    replace(&h.join("curr1_input"), "0x3e8 mA?\n");
    let e = energy::open(&b, &SysRoot::at(dir.path())).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Garbage);
    assert!(e.to_string().contains("curr1_input") && e.to_string().contains("0x3e8"), "{e}");

    replace(&h.join("curr1_input"), "1000\n");
    std::fs::remove_file(h.join("in1_input")).unwrap();
    std::fs::create_dir(h.join("in1_input")).unwrap();
    let e = energy::open(&b, &SysRoot::at(dir.path())).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unreadable);
    assert!(e.to_string().contains("hwmon3/in1_input"), "{e}");

    // The context goes on with the estimate, labeled so.
    let ctx = EnergyContext::start(&b, &SysRoot::at(dir.path()));
    let t0 = Instant::now();
    let e = ctx.attribute(t0, t0 + Duration::from_millis(50));
    assert!(e.source.starts_with("estimate"), "{}", e.source);
    assert!(e.mj > 0.0);
}

#[test]
fn a_sensor_vanishing_mid_run_falls_back_to_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    orin_nano(dir.path(), 5000, 1000);
    let root = SysRoot::at(dir.path());
    let b = board("jetson-orin-nano");
    let driver = dir.path().join("sys/bus/i2c/drivers/ina3221");
    let meter = hwmon::HwmonIna3221::open(&driver, Some("VDD_IN"), &[], Some(Duration::from_millis(10))).unwrap();
    let fallback = energy::estimate_for(&b, &root, Some("ina3221:VDD_IN failed"));
    let ctx = EnergyContext::with_meter(&b, Box::new(meter), Baseline::Fixed(3.5), Some((fallback, 3.5)));
    let before = Instant::now();
    wait_until("samples from the sensor", || ctx.sampler().segments()[0].samples.len() >= 3);
    let mid = Instant::now();
    let e = ctx.attribute(before, mid);
    assert_eq!(e.source, "ina3221:VDD_IN");
    assert!((e.mj / ((mid - before).as_secs_f64() * 1e3) - 5.0).abs() < 1e-9);

    std::fs::remove_dir_all(dir.path().join("sys")).unwrap();
    wait_until("the switch to the estimate", || ctx.sampler().segments().len() == 2);
    let segs = ctx.sampler().segments();
    assert_eq!(segs[0].source, "ina3221:VDD_IN");
    assert_eq!(segs[1].kind, Kind::Joules);
    assert!(segs[1].source.starts_with("estimate") && segs[1].source.contains("ina3221:VDD_IN failed"));
    let after = Instant::now();
    let e = ctx.attribute(after, after + Duration::from_millis(30));
    assert!(e.source.starts_with("estimate"), "{}", e.source);
    // A span across the switch is an estimate too, and says what it was partly measured by.
    let e = ctx.attribute(before, after);
    assert!(e.source.starts_with("estimate") && e.source.contains("partly ina3221:VDD_IN"), "{}", e.source);
}

// ---- The sampler under a writer ----

#[test]
fn sampler_follows_values_a_writer_changes_during_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let h = orin_nano(dir.path(), 5000, 1000);
    let driver = dir.path().join("sys/bus/i2c/drivers/ina3221");
    let b = board("jetson-orin-nano");
    let meter = hwmon::HwmonIna3221::open(&driver, Some("VDD_IN"), &[], Some(Duration::from_millis(10))).unwrap();
    let fallback = energy::estimate_for(&b, &SysRoot::at(dir.path()), Some("ina3221:VDD_IN failed"));
    let ctx = EnergyContext::with_meter(&b, Box::new(meter), Baseline::Fixed(5.0), Some((fallback, 3.5)));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let curr = h.join("curr1_input");
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            // 5 W and 10 W in turn (VDD_IN at 5 V, 1 A or 2 A).
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                replace(&curr, if i.is_multiple_of(2) { "2000\n" } else { "1000\n" });
                i += 1;
                std::thread::sleep(Duration::from_millis(13));
            }
        });
        wait_until("both power levels sampled", || {
            let segs = ctx.sampler().segments();
            let v: Vec<f64> = segs[0].samples.iter().map(|s| s.1).collect();
            v.iter().any(|&w| (w - 5.0).abs() < 1e-9) && v.iter().any(|&w| (w - 10.0).abs() < 1e-9)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    });
    let segs = ctx.sampler().segments();
    assert_eq!(segs.len(), 1, "the sensor never failed: {:?}", segs.iter().map(|s| &s.source).collect::<Vec<_>>());
    assert!(segs[0].samples.iter().all(|s| (s.1 - 5.0).abs() < 1e-9 || (s.1 - 10.0).abs() < 1e-9));
    assert!(segs[0].samples.windows(2).all(|w| w[0].0 <= w[1].0), "samples in time order");
    // Whatever the interleaving, the energy of a span lies between 5 W and 10 W times its length.
    let (t0, t1) = (segs[0].samples[0].0, segs[0].samples.last().unwrap().0);
    let e = ctx.attribute(t0, t1);
    let ms = (t1 - t0).as_secs_f64() * 1e3;
    assert!(e.mj >= 5.0 * ms - 1e-6 && e.mj <= 10.0 * ms + 1e-6, "{} mJ over {ms} ms", e.mj);
}

#[test]
fn constant_five_watts_gives_five_watts_times_the_span() {
    let dir = tempfile::tempdir().unwrap();
    orin_nano(dir.path(), 5000, 1000);
    let ctx = EnergyContext::start(&board("jetson-orin-nano"), &SysRoot::at(dir.path()));
    assert_eq!(ctx.source(), "ina3221:VDD_IN");
    assert!((ctx.baseline_w() - 5.0).abs() < 1e-9, "baseline measured at start: {}", ctx.baseline_w());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(30));
    let t1 = Instant::now();
    let e = ctx.attribute(t0, t1);
    let ms = (t1 - t0).as_secs_f64() * 1e3;
    assert!((e.mj - 5.0 * ms).abs() < 1e-6, "{} mJ over {ms} ms", e.mj);
    assert!(e.mj_above_idle.abs() < 1e-6);
    assert!(e.interpolated, "30 ms is shorter than two 140 ms sensor periods");
}

// ---- The estimate ----

#[test]
fn estimate_uses_the_cpu_time_in_proc_self_stat() {
    let dir = tempfile::tempdir().unwrap();
    let stat = proc_stat(dir.path(), 100, 50);
    let b = board("generic");
    let mut m = energy::estimate_for(&b, &SysRoot::at(dir.path()), None);
    assert!(m.source().starts_with("estimate: CPU time x generic power model"), "{}", m.source());
    let outer = Instant::now();
    let j0 = joules(m.as_mut());
    std::thread::sleep(Duration::from_millis(100));
    let j1 = joules(m.as_mut());
    let wall = outer.elapsed().as_secs_f64();
    // No CPU time used: idle power only.
    let idle = b.power.idle.watts;
    assert!(j1 - j0 >= idle * 0.1 - 1e-9 && j1 - j0 <= idle * wall + 1e-9, "{}", j1 - j0);
    // One core busy for the next 100 ms: 10 ticks.
    replace(&stat, &std::fs::read_to_string(&stat).unwrap().replace(" 100 50 ", " 110 50 "));
    std::thread::sleep(Duration::from_millis(100));
    let j2 = joules(m.as_mut());
    let extra = (b.power.active.watts - b.power.idle.watts) * 0.1 / b.power.cores() as f64;
    assert!(j2 - j1 >= idle * 0.1 + extra - 1e-9, "{} J, expected at least {}", j2 - j1, idle * 0.1 + extra);
}

#[test]
fn estimate_without_cpu_time_assumes_active_power_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let b = board("rpi4");
    let mut m = energy::estimate_for(&b, &SysRoot::at(dir.path()), None);
    assert!(m.source().starts_with("estimate: rpi4 active power 5 W (no CPU time)"), "{}", m.source());
    let t = Instant::now();
    let j0 = joules(m.as_mut());
    std::thread::sleep(Duration::from_millis(50));
    let j1 = joules(m.as_mut());
    assert!(j1 - j0 >= 5.0 * 0.05 - 1e-9 && j1 - j0 <= 5.0 * t.elapsed().as_secs_f64() + 1e-9);
}

// ---- Attribution against known power profiles (pure, synthetic timestamps) ----

/// p(t) = 5 + 2 sin(2 pi t / 0.4) W, sampled every 10 ms.
fn wave(t: f64) -> f64 {
    5.0 + 2.0 * (2.0 * std::f64::consts::PI * t / 0.4).sin()
}

fn wave_energy(a: f64, b: f64) -> f64 {
    let k = 2.0 * std::f64::consts::PI / 0.4;
    5.0 * (b - a) - 2.0 / k * ((k * b).cos() - (k * a).cos())
}

#[test]
fn stage_energy_matches_power_times_time_for_a_known_profile() {
    let samples: Vec<(f64, f64)> = (0..=300).map(|i| i as f64 * 0.01).map(|t| (t, wave(t))).collect();
    for (a, b) in [(0.1234, 0.8765), (0.5, 2.5), (1.005, 1.4)] {
        let got = power_integral(&samples, a, b).unwrap();
        let want = wave_energy(a, b);
        assert!((got - want).abs() / want < 0.05, "[{a}, {b}]: {got} J vs {want} J");
    }
    // A step from 3 W to 8 W at t = 1 s: a span covering it many intervals either side.
    let step: Vec<(f64, f64)> =
        (0..=200).map(|i| i as f64 * 0.01).map(|t| (t, if t < 1.0 { 3.0 } else { 8.0 })).collect();
    let got = power_integral(&step, 0.5, 1.5).unwrap();
    assert!((got - 5.5).abs() / 5.5 < 0.05, "{got}");
    // The same profile as a cumulative counter (RAPL-like), sampled every 25 ms.
    let counter: Vec<(f64, f64)> = (0..=120).map(|i| i as f64 * 0.025).map(|t| (t, wave_energy(0.0, t))).collect();
    let got = counter_integral(&counter, 0.33, 2.71).unwrap();
    let want = wave_energy(0.33, 2.71);
    assert!((got - want).abs() / want < 0.05, "{got} vs {want}");
}

#[test]
fn segments_attribute_with_instants_and_flag_short_spans() {
    let o = Instant::now();
    let at = |s: f64| o + Duration::from_secs_f64(s);
    let measured = Segment {
        source: "ina3221:VDD_IN".into(),
        kind: Kind::Watts,
        interval: Duration::from_millis(10),
        baseline_w: 3.0,
        samples: (0..=100).map(|i| (at(i as f64 * 0.01), 5.0)).collect(),
    };
    let e = attribute_segments(std::slice::from_ref(&measured), at(0.2), at(0.7));
    assert!((e.mj - 2500.0).abs() < 1e-6 && (e.mj_above_idle - 1000.0).abs() < 1e-6, "{e:?}");
    assert!(!e.interpolated);
    let short = attribute_segments(std::slice::from_ref(&measured), at(0.2), at(0.215));
    assert!(short.interpolated && (short.mj - 75.0).abs() < 1e-6, "{short:?}");
    // The estimate takes over at 1.0 s (cumulative joules at 2 W).
    let estimate = Segment {
        source: "estimate: CPU time x jetson-orin-nano power model".into(),
        kind: Kind::Joules,
        interval: Duration::from_millis(50),
        baseline_w: 2.0,
        samples: (0..=20).map(|i| (at(1.0 + i as f64 * 0.05), 2.0 * i as f64 * 0.05)).collect(),
    };
    let segs = [measured, estimate];
    let e = attribute_segments(&segs, at(0.5), at(1.5));
    assert!((e.mj - (5.0 * 500.0 + 2.0 * 500.0)).abs() < 1e-6, "{e:?}");
    assert!(e.source.starts_with("estimate") && e.source.contains("partly ina3221:VDD_IN"), "{}", e.source);
    let e = attribute_segments(&segs, at(1.2), at(1.7));
    assert!((e.mj - 1000.0).abs() < 1e-6 && e.mj_above_idle.abs() < 1e-6, "{e:?}");
}

// ---- External meters: ina2xx ----

#[test]
fn an_ina226_meter_reads_bus_voltage_times_current() {
    let dir = tempfile::tempdir().unwrap();
    let h = rpi4_with_ina226(dir.path(), 5104, 612);
    let root = SysRoot::at(dir.path());
    let spec: MeterSpec = "ina226:/sys/class/hwmon/hwmon2".parse().unwrap();
    let mut m = meter::open(&spec, &root).unwrap();
    assert_eq!(m.source(), "meter: INA226 on /sys/class/hwmon/hwmon2, 5.1 V bus, 29 Hz");
    assert_eq!(m.interval(), Duration::from_millis(35), "the chip's update_interval");
    assert!((watts(m.as_mut()) - 5.104 * 0.612).abs() < 1e-12);
    replace(&h.join("curr1_input"), "1000\n");
    assert!((watts(m.as_mut()) - 5.104).abs() < 1e-12);
    // The I2C device's folder works too, and ina2xx: takes any chip of the driver.
    let spec: MeterSpec = "ina2xx:/sys/devices/platform/soc/fe804000.i2c/i2c-1/1-0040".parse().unwrap();
    assert!((watts(meter::open(&spec, &root).unwrap().as_mut()) - 5.104).abs() < 1e-12);
    // Without curr1_input the chip's own power product is read.
    std::fs::remove_file(h.join("curr1_input")).unwrap();
    replace(&h.join("power1_input"), "3100000\n");
    assert!((watts(meter::open(&spec, &root).unwrap().as_mut()) - 3.1).abs() < 1e-12);
}

#[test]
fn ina2xx_errors_name_the_path_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let h = rpi4_with_ina226(dir.path(), 5000, 600);
    let root = SysRoot::at(dir.path());
    let open = |s: &str| meter::open(&s.parse::<MeterSpec>().unwrap(), &root).err().expect("an error");
    let e = open("ina219:/sys/class/hwmon/hwmon2");
    assert!(e.to_string().contains("an ina226, not an ina219"), "{e}");
    let e = open("ina2xx:/sys/class/hwmon/hwmon0");
    assert!(e.to_string().contains("'cpu_thermal' is not an ina2xx chip"), "{e}");
    let e = open("ina2xx:/sys/class/hwmon/hwmon9");
    assert_eq!(e.kind(), ErrorKind::Missing);
    assert!(e.to_string().contains("hwmon9") && e.to_string().contains("does not exist"), "{e}");
    replace(&h.join("in1_input"), "five volts\n");
    let e = open("ina226:/sys/class/hwmon/hwmon2");
    assert_eq!(e.kind(), ErrorKind::Garbage);
    assert!(e.to_string().contains("in1_input") && e.to_string().contains("five volts"), "{e}");
}

#[test]
fn an_ina226_meter_gives_p_times_t_to_spans_and_falls_back_when_it_vanishes() {
    let dir = tempfile::tempdir().unwrap();
    rpi4_with_ina226(dir.path(), 5100, 600);
    let root = SysRoot::at(dir.path());
    let spec: MeterSpec = "ina226:/sys/class/hwmon/hwmon2".parse().unwrap();
    let ctx = EnergyContext::start_meter(&board("rpi4"), &root, &spec).unwrap();
    assert!(ctx.source().starts_with("meter: INA226 on /sys/class/hwmon/hwmon2"), "{}", ctx.source());
    assert!((ctx.baseline_w() - 3.06).abs() < 1e-9, "{}", ctx.baseline_w());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(150));
    let t1 = Instant::now();
    let e = ctx.attribute(t0, t1);
    let ms = (t1 - t0).as_secs_f64() * 1e3;
    assert!((e.mj - 3.06 * ms).abs() < 1e-6, "{} mJ over {ms} ms", e.mj);
    assert!(!e.interpolated, "150 ms is more than two 35 ms periods");
    assert!(ctx.attribute(t0, t0 + Duration::from_millis(20)).interpolated);
    std::fs::remove_dir_all(dir.path().join("sys/devices")).unwrap();
    wait_until("the switch to the estimate", || ctx.sampler().segments().len() == 2);
    let after = Instant::now();
    let e = ctx.attribute(after, after + Duration::from_millis(30));
    assert!(e.source.starts_with("estimate") && e.source.contains("meter: INA226"), "{}", e.source);
}

#[test]
fn boards_finds_ina2xx_hwmon_devices_and_fnirsi_hidraw_nodes() {
    let dir = tempfile::tempdir().unwrap();
    rpi4_with_ina226(dir.path(), 5000, 600);
    write(
        dir.path(),
        "sys/class/hidraw/hidraw0/device/uevent",
        "DRIVER=hid-generic\nHID_ID=0003:0000046D:0000C52B\nHID_NAME=Logitech USB Receiver\n",
    );
    write(
        dir.path(),
        "sys/class/hidraw/hidraw1/device/uevent",
        "DRIVER=hid-generic\nHID_ID=0003:00002E3C:00005558\nHID_NAME=FNIRSI USB Tester\n",
    );
    let found = edgecascade::energy::survey::find_meters(&SysRoot::at(dir.path()));
    let specs: Vec<&str> = found.iter().map(|m| m.spec.as_str()).collect();
    assert_eq!(specs, ["ina226:/sys/class/hwmon/hwmon2", "fnb58:/dev/hidraw1"], "{found:?}");
    assert!(found[1].what.contains("FNB58") && found[1].what.contains("2e3c:5558"), "{found:?}");
    assert!(edgecascade::energy::survey::find_meters(&SysRoot::at(tempfile::tempdir().unwrap().path())).is_empty());
}
