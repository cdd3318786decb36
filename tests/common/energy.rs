//! Fake sysfs trees laid out exactly as each board's, written into a temp dir, for the energy
//! and board tests. Paths and file names follow the kernel drivers: ina3221 (hwmon, JetPack
//! 5/6), ina3221x (IIO, JetPack 4) and powercap intel-rapl.

use std::path::{Path, PathBuf};

/// Writes `text` to `root/rel`, creating folders.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

/// Replaces a file's content atomically (a reader sees the old or the new value, as sysfs
/// guarantees, never half a write).
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The Orin Nano's (and Orin NX's) INA3221 folder.
pub const ORIN_HWMON: &str = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3";

/// A Jetson Orin Nano developer kit on JetPack 5/6: device-tree model, the ina3221 driver
/// folder with its bind files, and the chip's hwmon folder: three labelled rails (VDD_IN at
/// `vdd_in_mv` and `vdd_in_ma`), the unlabelled shunt-voltage channels 4-6, the sum channel
/// in7 and the sum current curr4 (holding large values that must not be counted).
pub fn orin_nano(root: &Path, vdd_in_mv: u32, vdd_in_ma: u32) -> PathBuf {
    write(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\0");
    write(root, "sys/bus/i2c/drivers/ina3221/bind", "");
    write(root, "sys/bus/i2c/drivers/ina3221/unbind", "");
    write(root, "sys/bus/i2c/drivers/ina3221/uevent", "");
    let h = ORIN_HWMON;
    write(root, &format!("{h}/name"), "ina3221\n");
    write(root, &format!("{h}/update_interval"), "140\n");
    write(root, &format!("{h}/samples"), "512\n");
    let rails = [("VDD_IN", vdd_in_mv, vdd_in_ma), ("VDD_CPU_GPU_CV", 4968, 320), ("VDD_SOC", 4976, 480)];
    for (i, (label, mv, ma)) in rails.iter().enumerate() {
        let n = i + 1;
        write(root, &format!("{h}/in{n}_label"), &format!("{label}\n"));
        write(root, &format!("{h}/in{n}_input"), &format!("{mv}\n"));
        write(root, &format!("{h}/in{n}_enable"), "1\n");
        write(root, &format!("{h}/curr{n}_input"), &format!("{ma}\n"));
        write(root, &format!("{h}/curr{n}_crit"), "5000\n");
        write(root, &format!("{h}/curr{n}_max"), "4000\n");
        write(root, &format!("{h}/shunt{n}_resistor"), "5000\n");
        write(root, &format!("{h}/in{}_input", n + 3), "40\n");
    }
    write(root, &format!("{h}/in7_label"), "sum of shunt voltages\n");
    write(root, &format!("{h}/in7_input"), "99999\n");
    write(root, &format!("{h}/curr4_input"), "99999\n");
    root.join(h)
}

/// A Jetson AGX Orin on JetPack 5/6: two INA3221s, 1-0040 (VDD_GPU_SOC, VDD_CPU_CV,
/// VIN_SYS_5V0) and 1-0041 (NC, VDDQ_VDD2_1V8AO, NC). Each rail draws 5000 mV x `ma[i]` mA;
/// the NC channels read large currents that must not be counted.
pub fn agx_orin(root: &Path, ma: [u32; 4]) {
    write(root, "proc/device-tree/model", "Jetson AGX Orin Developer Kit\0");
    let chips = [
        ("1-0040", "hwmon1", [("VDD_GPU_SOC", ma[0]), ("VDD_CPU_CV", ma[1]), ("VIN_SYS_5V0", ma[2])]),
        ("1-0041", "hwmon2", [("NC", 9000), ("VDDQ_VDD2_1V8AO", ma[3]), ("NC", 9000)]),
    ];
    for (dev, hw, rails) in chips {
        let h = format!("sys/bus/i2c/drivers/ina3221/{dev}/hwmon/{hw}");
        write(root, &format!("{h}/name"), "ina3221\n");
        write(root, &format!("{h}/update_interval"), "20\n");
        for (i, (label, ma)) in rails.iter().enumerate() {
            let n = i + 1;
            write(root, &format!("{h}/in{n}_label"), &format!("{label}\n"));
            write(root, &format!("{h}/in{n}_input"), "5000\n");
            write(root, &format!("{h}/curr{n}_input"), &format!("{ma}\n"));
        }
        write(root, &format!("{h}/in7_label"), "sum of shunt voltages\n");
        write(root, &format!("{h}/in7_input"), "99999\n");
        write(root, &format!("{h}/curr4_input"), "99999\n");
    }
}

/// A Jetson Nano on JetPack 4: the ina3221x IIO device at 6-0040 with POM_5V_IN, POM_5V_GPU
/// and POM_5V_CPU (powers in mW).
pub fn jetson_nano(root: &Path, mw: [u32; 3]) -> PathBuf {
    write(root, "proc/device-tree/model", "NVIDIA Jetson Nano Developer Kit\0");
    let d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0";
    write(root, &format!("{d}/name"), "ina3221x\n");
    for (i, (rail, p)) in [("POM_5V_IN", mw[0]), ("POM_5V_GPU", mw[1]), ("POM_5V_CPU", mw[2])].iter().enumerate() {
        write(root, &format!("{d}/rail_name_{i}"), &format!("{rail}\n"));
        write(root, &format!("{d}/in_power{i}_input"), &format!("{p}\n"));
        write(root, &format!("{d}/in_current{i}_input"), &format!("{}\n", p / 5));
        write(root, &format!("{d}/in_voltage{i}_input"), "5000\n");
    }
    root.join(d)
}

/// An x86 host with RAPL: package-0 (intel-rapl:0) with its core subzone (intel-rapl:0:0,
/// which must not be counted again), and the powercap control folder `intel-rapl`.
pub fn rapl(root: &Path, energy_uj: u64, max_range_uj: u64) -> PathBuf {
    write(root, "sys/class/dmi/id/product_name", "Precision 3660\n");
    write(root, "sys/class/powercap/intel-rapl/enabled", "1\n");
    let d = "sys/class/powercap/intel-rapl:0";
    write(root, &format!("{d}/name"), "package-0\n");
    write(root, &format!("{d}/energy_uj"), &format!("{energy_uj}\n"));
    write(root, &format!("{d}/max_energy_range_uj"), &format!("{max_range_uj}\n"));
    write(root, &format!("{d}/enabled"), "1\n");
    let s = "sys/class/powercap/intel-rapl:0:0";
    write(root, &format!("{s}/name"), "core\n");
    write(root, &format!("{s}/energy_uj"), "123456789\n");
    write(root, &format!("{s}/max_energy_range_uj"), &format!("{max_range_uj}\n"));
    root.join(d)
}

/// A fake `/proc/self/stat` with `utime` and `stime` in clock ticks.
pub fn proc_stat(root: &Path, utime: u64, stime: u64) -> PathBuf {
    let text =
        format!("4242 (edgecascade) R 1 4242 4242 0 -1 4194304 1000 0 0 0 {utime} {stime} 0 0 20 0 3 0 100 0 0\n");
    write(root, "proc/self/stat", &text);
    root.join("proc/self/stat")
}

/// A Raspberry Pi 4 with an INA226 breakout on I2C bus 1 at 0x40 in its 5 V supply, bound to
/// the ina2xx driver (`dtoverlay=i2c-sensor,ina226`): the chip's hwmon folder under the I2C
/// device, linked from `/sys/class/hwmon/hwmon2` as the kernel does, with the bus voltage
/// `mv`, the current `ma` and the chip's own power product (uW). Returns the class path.
pub fn rpi4_with_ina226(root: &Path, mv: u32, ma: u32) -> PathBuf {
    write(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
    let dev = "sys/devices/platform/soc/fe804000.i2c/i2c-1/1-0040";
    let h = format!("{dev}/hwmon/hwmon2");
    write(root, &format!("{dev}/name"), "ina226\n");
    write(root, &format!("{h}/name"), "ina226\n");
    write(root, &format!("{h}/in0_input"), "12\n");
    write(root, &format!("{h}/in1_input"), &format!("{mv}\n"));
    write(root, &format!("{h}/curr1_input"), &format!("{ma}\n"));
    write(root, &format!("{h}/power1_input"), &format!("{}\n", (mv as u64 * ma as u64 / 25_000) * 25_000));
    write(root, &format!("{h}/shunt_resistor"), "10000\n");
    write(root, &format!("{h}/update_interval"), "35\n");
    std::fs::create_dir_all(root.join("sys/class/hwmon")).unwrap();
    let link = root.join("sys/class/hwmon/hwmon2");
    std::os::unix::fs::symlink(root.join(&h), &link).unwrap();
    // An unrelated hwmon device next to it.
    write(root, "sys/class/hwmon/hwmon0/name", "cpu_thermal\n");
    write(root, "sys/class/hwmon/hwmon0/temp1_input", "48000\n");
    link
}

/// A Raspberry Pi 4's thermal and clock files as its kernel and firmware write them: the SoC's
/// zone `cpu-thermal` at `millidegrees`, four CPUs at `khz` (max 1.8 GHz), a cooling device
/// beside the zone, and the firmware driver's `get_throttled` (its `%x\n`, e.g. `50005`).
pub fn pi4_thermal(root: &Path, millidegrees: u32, khz: u32, get_throttled: &str) {
    write(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
    write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    write(root, "sys/class/thermal/thermal_zone0/temp", &format!("{millidegrees}\n"));
    write(root, "sys/class/thermal/thermal_zone0/policy", "step_wise\n");
    write(root, "sys/class/thermal/cooling_device0/type", "cpufreq-cpu0\n");
    for cpu in 0..4 {
        let d = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        write(root, &format!("{d}/scaling_cur_freq"), &format!("{khz}\n"));
        write(root, &format!("{d}/cpuinfo_max_freq"), "1800000\n");
        write(root, &format!("{d}/cpuinfo_min_freq"), "600000\n");
        write(root, &format!("{d}/scaling_governor"), "ondemand\n");
    }
    write(root, "sys/devices/system/cpu/online", "0-3\n");
    write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", &format!("{get_throttled}\n"));
}

/// A fake `/proc/self/status` whose peak resident set (`VmHWM`) is `hwm_kb`.
pub fn proc_status(root: &Path, hwm_kb: u64) {
    let text = format!(
        "Name:\tedgecascade\nUmask:\t0022\nState:\tR (running)\nVmPeak:\t{} kB\nVmSize:\t{} kB\nVmHWM:\t{hwm_kb} kB\nVmRSS:\t{} kB\nThreads:\t3\n",
        hwm_kb * 3,
        hwm_kb * 2,
        hwm_kb / 2
    );
    write(root, "proc/self/status", &text);
}
