use super::*;

#[test]
fn throttled_bits_parse_in_every_form_the_pi_prints() {
    // The sysfs file (`%x\n`), vcgencmd's line, a bare 0x form.
    assert_eq!(parse_throttled("50005\n"), Ok(0x50005));
    assert_eq!(parse_throttled("throttled=0x50005\n"), Ok(0x50005));
    assert_eq!(parse_throttled("0x80008"), Ok(0x80008));
    assert_eq!(parse_throttled("0\n"), Ok(0));
    assert!(parse_throttled("").is_err());
    assert!(parse_throttled("throttled=").is_err());
    assert!(parse_throttled("0x1ffffffff").is_err(), "more than 32 bits");
    assert!(parse_throttled("hot").unwrap_err().contains("'hot'"));
}

#[test]
fn throttled_bits_name_their_conditions() {
    let t = Throttled::from_bits(0x50005);
    assert_eq!(t.raw, "0x50005");
    assert_eq!(t.now, ["under-voltage", "throttled"]);
    assert_eq!(t.since_boot, ["under-voltage", "throttled"]);
    let t = Throttled::from_bits(0x80008);
    assert_eq!(
        (t.now.as_slice(), t.since_boot.as_slice()),
        (&["soft temperature limit"][..], &["soft temperature limit"][..])
    );
    let t = Throttled::from_bits(0x20000);
    assert!(t.now.is_empty());
    assert_eq!(t.since_boot, ["arm frequency capped"]);
    assert_eq!(Throttled::from_bits(0).raw, "0x0");
    // Bits outside 0-3 and 16-19 name nothing.
    assert!(Throttled::from_bits(0x100_0f0).now.is_empty());
}

#[test]
fn temperatures_and_frequencies_parse_in_kernel_units() {
    assert_eq!(parse_millidegrees("47236\n"), Ok(47.236));
    assert_eq!(parse_millidegrees("-5000"), Ok(-5.0));
    assert!(parse_millidegrees("47.2").is_err());
    assert!(parse_millidegrees("").is_err());
    assert_eq!(parse_khz("1800000\n"), Ok(1800.0));
    assert!(parse_khz("<unknown>").is_err());
    let long = "x".repeat(100);
    assert!(parse_khz(&long).unwrap_err().len() < 80, "a garbage file's content is cut short");
}

#[test]
fn vm_hwm_is_read_in_kb_and_nothing_else_is_taken_for_it() {
    let status = "Name:\tedgecascade\nVmPeak:\t 1000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 2 kB\n";
    assert_eq!(parse_vm_hwm(status), Some(123456));
    assert_eq!(parse_vm_hwm("VmRSS:\t 2 kB\n"), None);
    assert_eq!(parse_vm_hwm("VmHWM:\t lots\n"), None);
    assert_eq!(parse_vm_hwm("VmHWM:\t 12 MB\n"), None);
}

fn snap(temp: Option<f64>, mhz: &[f64], throttled: Option<u32>) -> Snapshot {
    Snapshot {
        temperatures: temp
            .map(|c| Zone { zone: "thermal_zone0".into(), kind: Some("cpu-thermal".into()), celsius: Some(c) })
            .into_iter()
            .collect(),
        cpufreq: mhz
            .iter()
            .enumerate()
            .map(|(cpu, m)| CpuFreq { cpu, cur_mhz: Some(*m), max_mhz: Some(2400.0) })
            .collect(),
        throttled: throttled.map(Throttled::from_bits),
        ..Snapshot::default()
    }
}

#[test]
fn a_steady_machine_raises_no_warning() {
    let l = Limits { freq_floor: 0.9, soft_limit_c: Some(80.0) };
    // Idle cores slow, the busy one fast; a 5% wobble; old since-boot bits unchanged.
    let before = snap(Some(55.0), &[600.0, 2400.0], Some(0x50000));
    let after = snap(Some(70.0), &[2400.0, 2300.0], Some(0x50000));
    assert!(throttle_warnings(&before, &after, &l).is_empty());
    // Nothing exposed: nothing to say.
    assert!(throttle_warnings(&Snapshot::default(), &Snapshot::default(), &l).is_empty());
}

#[test]
fn each_sign_of_throttling_is_named() {
    let l = Limits { freq_floor: 0.9, soft_limit_c: Some(80.0) };
    let base = snap(Some(60.0), &[2400.0], Some(0));
    let w = throttle_warnings(&base, &snap(Some(60.0), &[2400.0], Some(0x4)), &l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("throttled now (get_throttled 0x4)"), "{w:?}");
    let w = throttle_warnings(&base, &snap(Some(60.0), &[2400.0], Some(0x10000)), &l);
    assert_eq!(w, ["the firmware reports under-voltage during the run (get_throttled 0x0 before, 0x10000 after)"]);
    let w = throttle_warnings(&base, &snap(Some(60.0), &[2000.0], Some(0)), &l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("fell from 2400 MHz to 2000 MHz (max 2400 MHz)"), "{w:?}");
    let w = throttle_warnings(&base, &snap(Some(81.5), &[2400.0], Some(0)), &l);
    assert_eq!(
        w,
        ["the CPU crossed the board's throttling temperature 80 °C during the run (60.0 °C before, 81.5 °C after)"]
    );
    let hot = snap(Some(84.0), &[2400.0], None);
    let w = throttle_warnings(&hot, &hot, &l);
    assert!(w[0].contains("at or above the board's throttling temperature 80 °C before"), "{w:?}");
    // Without a known limit the temperature alone says nothing.
    assert!(throttle_warnings(&base, &hot, &Limits::default()).is_empty());
}

#[test]
fn the_summary_is_one_line_with_units() {
    let s = snap(Some(47.31), &[1500.0, 1800.0], Some(0x50005));
    assert_eq!(
        s.summary(),
        "cpu-thermal 47.3 °C; CPU 1800 MHz (max 2400 MHz); get_throttled 0x50005: now under-voltage, throttled; since boot under-voltage, throttled"
    );
}
