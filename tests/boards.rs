//! Board profiles: every shipped file loads, validates and equals its built-in copy; unknown
//! keys and bad figures are rejected with the file named; detection on fake trees of each
//! board (device-tree model, DMI, RAPL marker); a profile folder overriding and adding.

mod common;

use common::energy::*;
use edgecascade::board::{Board, BoardError, Boards, SensorKind, SysRoot, GENERIC};
use std::path::{Path, PathBuf};

fn boards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
}

const SHIPPED: [&str; 7] =
    ["rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "jetson-agx-orin", "x86-rapl", "generic"];

fn rpi4_text() -> String {
    std::fs::read_to_string(boards_dir().join("rpi4.toml")).unwrap()
}

fn parse_err(text: &str) -> String {
    match Board::parse(text, "test.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_shipped_profile_loads_and_equals_the_built_in_one() {
    let builtin = Boards::builtin();
    for name in SHIPPED {
        let file = Board::load(&boards_dir().join(format!("{name}.toml"))).unwrap();
        let mut built = builtin.get(name).unwrap().clone();
        built.origin = file.origin.clone();
        assert_eq!(file, built, "{name}");
        for f in [&file.power.idle.source, &file.power.active.source].into_iter().chain(
            [&file.link_energy.uart, &file.link_energy.usb, &file.link_energy.ethernet, &file.link_energy.wifi]
                .map(|l| &l.source),
        ) {
            assert!(
                ["datasheet:", "measurement:", "estimate:"].iter().any(|p| f.starts_with(p)),
                "{name}: unsourced figure '{f}'"
            );
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(boards_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .filter(|n| n != "README")
        .collect();
    on_disk.sort();
    let mut shipped: Vec<String> = SHIPPED.iter().map(|s| s.to_string()).collect();
    shipped.sort();
    assert_eq!(on_disk, shipped, "boards/ and the built-in list must agree");
}

#[test]
fn sensors_are_what_each_board_has() {
    let b = Boards::builtin();
    let kind = |n: &str| b.get(n).unwrap().sensor.kind;
    assert_eq!(kind("rpi4"), SensorKind::None);
    assert_eq!(kind("rpi5"), SensorKind::PmicReadAdc);
    assert_eq!(kind("jetson-nano"), SensorKind::IioIna3221);
    assert_eq!(kind("jetson-orin-nano"), SensorKind::HwmonIna3221);
    assert_eq!(kind("jetson-agx-orin"), SensorKind::HwmonIna3221);
    assert_eq!(kind("x86-rapl"), SensorKind::Rapl);
    assert_eq!(kind("generic"), SensorKind::None);
    assert_eq!(b.get("jetson-orin-nano").unwrap().sensor.total_rail.as_deref(), Some("VDD_IN"));
    assert_eq!(b.get("jetson-nano").unwrap().sensor.total_rail.as_deref(), Some("POM_5V_IN"));
    assert_eq!(b.get("rpi5").unwrap().sensor.command, ["vcgencmd", "pmic_read_adc"]);
}

#[test]
fn unknown_keys_are_rejected() {
    let e = parse_err(&rpi4_text().replace("[sensor]\n", "[sensor]\ncolour = \"red\"\n"));
    assert!(e.contains("test.toml") && e.contains("unknown field") && e.contains("colour"), "{e}");
    let e = parse_err(&rpi4_text().replace("name = \"rpi4\"", "name = \"rpi4\"\nvoltage = 5"));
    assert!(e.contains("unknown field"), "{e}");
    let e = parse_err(&rpi4_text().replace("kind = \"none\"", "kind = \"ina219\""));
    assert!(e.contains("ina219"), "{e}");
}

#[test]
fn bad_figures_and_sensors_are_rejected() {
    let t = rpi4_text();
    let e = parse_err(&t.replace("watts = 5.0", "watts = 1.0"));
    assert!(e.contains("power.active") && e.contains("below power.idle"), "{e}");
    let e = parse_err(&t.replace("watts = 1.6, source = \"measurement: ", "watts = 1.6, source = \""));
    assert!(e.contains("power.idle.source"), "{e}");
    let e = parse_err(&t.replace("nj_per_byte = 60.0", "nj_per_byte = -1.0"));
    assert!(e.contains("link_energy.wifi"), "{e}");
    let e = parse_err(&t.replace("kind = \"none\"", "kind = \"pmic-read-adc\""));
    assert!(e.contains("needs command"), "{e}");
    let e = parse_err(&t.replace("kind = \"none\"", "kind = \"none\"\nrails = [\"VDD_IN\"]"));
    assert!(e.contains("kind none takes no"), "{e}");
    let e = parse_err(&t.replace("kind = \"none\"", "kind = \"rapl\"\npath = \"sys/class/powercap\""));
    assert!(e.contains("must be absolute"), "{e}");
    let e = parse_err(
        &t.replace("[link_energy]\n", "[link_energy]\nlora = { nj_per_byte = 1.0, source = \"estimate: x\" }\n"),
    );
    assert!(e.contains("unknown field") && e.contains("lora"), "{e}");
    let e = parse_err(&t.replace("cores = 4", "cores = 0"));
    assert!(e.contains("cores"), "{e}");
}

#[test]
fn a_profile_file_must_be_named_after_its_board() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pi4.toml");
    std::fs::write(&p, rpi4_text()).unwrap();
    let e = Board::load(&p).err().unwrap().to_string();
    assert!(e.contains("pi4.toml") && e.contains("rpi4"), "{e}");
}

fn detect(setup: impl FnOnce(&Path)) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = Boards::builtin().detect(&SysRoot::at(dir.path()));
    (d.board.name, d.reason)
}

#[test]
fn detection_on_each_board_tree() {
    let model = |m: &'static str| move |root: &Path| write(root, "proc/device-tree/model", m);
    assert_eq!(detect(model("Raspberry Pi 4 Model B Rev 1.4\0")).0, "rpi4");
    assert_eq!(detect(model("Raspberry Pi Compute Module 4 Rev 1.0\0")).0, "rpi4");
    assert_eq!(detect(model("Raspberry Pi 5 Model B Rev 1.0\0")).0, "rpi5");
    assert_eq!(detect(model("NVIDIA Jetson Nano Developer Kit\0")).0, "jetson-nano");
    assert_eq!(detect(model("NVIDIA Orin NX Developer Kit\0")).0, "jetson-orin-nano");
    let (name, reason) = detect(|r| {
        orin_nano(r, 5000, 1000);
    });
    assert_eq!(name, "jetson-orin-nano");
    assert!(reason.contains("/proc/device-tree/model") && reason.contains("Orin Nano"), "{reason}");
    assert_eq!(detect(|r| agx_orin(r, [1, 1, 1, 1])).0, "jetson-agx-orin");
    assert_eq!(
        detect(|r| {
            jetson_nano(r, [1, 1, 1]);
        })
        .0,
        "jetson-nano"
    );
    // The devicetree copy under /sys/firmware counts too.
    assert_eq!(
        detect(|r| write(r, "sys/firmware/devicetree/base/model", "Raspberry Pi 5 Model B Rev 1.1\0")).0,
        "rpi5"
    );
    let (name, reason) = detect(|r| {
        rapl(r, 1, 2);
    });
    assert_eq!(name, "x86-rapl");
    assert!(reason.contains("intel-rapl:0/energy_uj") && reason.contains("exists"), "{reason}");
    let (name, reason) = detect(|r| write(r, "sys/class/dmi/id/product_name", "Some Laptop\n"));
    assert_eq!(name, GENERIC);
    assert!(reason.contains("no profile matched") && reason.contains("Some Laptop"), "{reason}");
    assert_eq!(detect(|_| {}).0, GENERIC);
}

#[test]
fn a_profile_folder_overrides_and_adds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rpi4.toml"), rpi4_text().replace("watts = 1.6", "watts = 1.7")).unwrap();
    let mine = rpi4_text().replace("name = \"rpi4\"", "name = \"my-board\"").replace(
        "device_tree_model = [\"Raspberry Pi 4\", \"Raspberry Pi Compute Module 4\"]",
        "device_tree_model = [\"Acme Widget\"]",
    );
    std::fs::write(dir.path().join("my-board.toml"), mine).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a profile").unwrap();
    let boards = Boards::with_dir(dir.path()).unwrap();
    let rpi4 = boards.get("rpi4").unwrap();
    assert_eq!(rpi4.power.idle.watts, 1.7);
    assert!(rpi4.origin.ends_with("rpi4.toml") && !rpi4.origin.starts_with("built-in"), "{}", rpi4.origin);
    let names: Vec<&str> = boards.all().iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names.len(), SHIPPED.len() + 1);
    assert_eq!(names[names.len() - 2..], ["my-board", GENERIC], "new profiles are tried before generic");
    let tree = tempfile::tempdir().unwrap();
    write(tree.path(), "proc/device-tree/model", "Acme Widget v2\0");
    assert_eq!(boards.detect(&SysRoot::at(tree.path())).board.name, "my-board");

    std::fs::write(dir.path().join("bad.toml"), "name = \"bad\"\n").unwrap();
    let e = Boards::with_dir(dir.path()).err().unwrap().to_string();
    assert!(e.contains("bad.toml") && e.contains("missing field"), "{e}");
    let e = Boards::with_dir(&dir.path().join("nope")).err().unwrap().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn forcing_a_board_by_name() {
    let b = Boards::builtin();
    let d = b.choose(Some(("rpi5", "--board")), &SysRoot::host()).unwrap();
    assert_eq!(d.board.name, "rpi5");
    assert!(d.forced && d.reason.contains("--board"));
    match b.choose(Some(("rpi3", "--board")), &SysRoot::host()) {
        Err(e @ BoardError::Unknown { .. }) => {
            let m = e.to_string();
            assert!(m.contains("rpi3") && m.contains("jetson-orin-nano") && m.contains("generic"), "{m}");
        }
        other => panic!("expected an unknown-board error, got {other:?}"),
    }
}

#[test]
fn sysfs_root_reroots_sys_and_proc() {
    let r = SysRoot::from_flag(Some(Path::new("/tmp/recorded")));
    assert_eq!(r.path("/sys/class/powercap"), Path::new("/tmp/recorded/sys/class/powercap"));
    assert_eq!(r.path("/proc/self/stat"), Path::new("/tmp/recorded/proc/self/stat"));
    assert_eq!(r.to_string(), "/tmp/recorded");
    let b = Boards::builtin();
    let orin = b.get("jetson-orin-nano").unwrap();
    assert_eq!(orin.sensor_path(&r).unwrap(), Path::new("/tmp/recorded/sys/bus/i2c/drivers/ina3221"));
}
