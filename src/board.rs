//! Board profiles (`boards/*.toml`, built into the binary; a `--boards DIR` adds or overrides
//! them): how to recognise a board, which power sensor it has and which rails to read, its
//! power model and the energy per byte of each link, every figure with its source. Detection
//! reads `/proc/device-tree/model`, DMI names and marker files through `SysRoot`, which can
//! re-root every `/sys` and `/proc` path under a recorded tree. Talks to `energy`, which
//! opens the sensors a profile names.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Re-roots `/sys` and `/proc` when set (same as `--sysfs-root DIR`).
pub const SYSFS_ROOT_ENV: &str = "EDGECASCADE_SYSFS_ROOT";
/// Forces a board profile when set (same as `--board NAME`).
pub const BOARD_ENV: &str = "EDGECASCADE_BOARD";

/// The built-in profiles, in detection order; `generic` matches when nothing else does.
const BUILTIN: [(&str, &str); 7] = [
    ("jetson-agx-orin", include_str!("../boards/jetson-agx-orin.toml")),
    ("jetson-orin-nano", include_str!("../boards/jetson-orin-nano.toml")),
    ("jetson-nano", include_str!("../boards/jetson-nano.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("x86-rapl", include_str!("../boards/x86-rapl.toml")),
    ("generic", include_str!("../boards/generic.toml")),
];

/// The profile used when no other matches.
pub const GENERIC: &str = "generic";

const DEVICE_TREE_MODEL: &str = "/proc/device-tree/model";
const DEVICE_TREE_MODEL_ALT: &str = "/sys/firmware/devicetree/base/model";
const DMI_PRODUCT_NAME: &str = "/sys/class/dmi/id/product_name";
const DMI_BOARD_NAME: &str = "/sys/class/dmi/id/board_name";

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("cannot read board profile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("board profile {origin}: {msg}")]
    Parse { origin: String, msg: String },
    #[error("board profile {origin}: {msg}")]
    Invalid { origin: String, msg: String },
    #[error("no board profile named '{name}' (known: {known})")]
    Unknown { name: String, known: String },
}

/// Where `/sys` and `/proc` are: the machine's own, or a copied or recorded tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysRoot {
    root: Option<PathBuf>,
}

impl SysRoot {
    /// This machine's `/sys` and `/proc`.
    pub fn host() -> SysRoot {
        SysRoot { root: None }
    }

    /// Every absolute path re-rooted under `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> SysRoot {
        SysRoot { root: Some(dir.into()) }
    }

    /// Under `dir` when given (`--sysfs-root`, or `EDGECASCADE_SYSFS_ROOT` as the command
    /// layer reads it), else the host's own paths.
    pub fn from_flag(dir: Option<&Path>) -> SysRoot {
        dir.map_or_else(SysRoot::host, SysRoot::at)
    }

    /// The directory everything is re-rooted under, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// `path` (absolute, e.g. `/sys/class/powercap`) as seen under this root.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        match &self.root {
            None => p.to_owned(),
            Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
        }
    }
}

impl std::fmt::Display for SysRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.root {
            None => f.write_str("/"),
            Some(r) => write!(f, "{}", r.display()),
        }
    }
}

/// One board profile.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub detect: Detect,
    pub sensor: SensorConfig,
    pub power: PowerModel,
    pub link_energy: LinkEnergy,
    /// Where the CPU starts to throttle, when known (`bench` warns past it).
    #[serde(default)]
    pub thermal: Option<ThermalLimits>,
    /// Where the profile came from: `built-in` or a file.
    #[serde(skip)]
    pub origin: String,
}

/// How to recognise the board. Substrings match case-insensitively.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// Substrings of `/proc/device-tree/model`.
    #[serde(default)]
    pub device_tree_model: Vec<String>,
    /// Substrings of `/sys/class/dmi/id/product_name`.
    #[serde(default)]
    pub dmi_product_name: Vec<String>,
    /// Substrings of `/sys/class/dmi/id/board_name`.
    #[serde(default)]
    pub dmi_board_name: Vec<String>,
    /// Files whose presence marks the board (weaker than a name: tried after every name).
    #[serde(default)]
    pub files: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SensorKind {
    /// INA3221 through the hwmon driver (Jetson, JetPack 5/6).
    HwmonIna3221,
    /// INA3221 through the ina3221x IIO driver (Jetson, JetPack 4).
    IioIna3221,
    /// RAPL energy counters through powercap (x86).
    Rapl,
    /// The Raspberry Pi 5 PMIC through `vcgencmd pmic_read_adc`.
    PmicReadAdc,
    /// No sensor: estimates only.
    None,
}

impl SensorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::HwmonIna3221 => "hwmon-ina3221",
            SensorKind::IioIna3221 => "iio-ina3221",
            SensorKind::Rapl => "rapl",
            SensorKind::PmicReadAdc => "pmic-read-adc",
            SensorKind::None => "none",
        }
    }

    /// Where the sensor's files are when the profile does not say.
    pub fn default_path(self) -> Option<&'static str> {
        match self {
            SensorKind::HwmonIna3221 => Some("/sys/bus/i2c/drivers/ina3221"),
            SensorKind::IioIna3221 => Some("/sys/bus/i2c/drivers/ina3221x"),
            SensorKind::Rapl => Some("/sys/class/powercap"),
            SensorKind::PmicReadAdc | SensorKind::None => None,
        }
    }
}

impl std::fmt::Display for SensorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The board's power sensor and which rails to read.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    pub kind: SensorKind,
    /// The driver's folder (absolute, re-rooted under `--sysfs-root`); default per kind.
    #[serde(default)]
    pub path: Option<String>,
    /// The rail that is the board's total: read alone when present.
    #[serde(default)]
    pub total_rail: Option<String>,
    /// Rails summed when there is no total rail (those present); empty: every rail found.
    #[serde(default)]
    pub rails: Vec<String>,
    /// Sampling period in ms; default: the sensor's own (`update_interval`) or one per kind.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// The command printing the PMIC's readings (`pmic-read-adc` only).
    #[serde(default)]
    pub command: Vec<String>,
    /// What the sensor does and does not count.
    #[serde(default)]
    pub note: Option<String>,
}

/// A power figure in watts and where it came from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Watts {
    pub watts: f64,
    pub source: String,
}

/// An energy-per-byte figure in nanojoules and where it came from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PerByte {
    pub nj_per_byte: f64,
    pub source: String,
}

/// The board's power with nothing to do and with every core busy; the estimate interpolates
/// between them by the process's CPU use.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerModel {
    /// CPU cores (default: the cores this machine reports).
    #[serde(default)]
    pub cores: Option<usize>,
    pub idle: Watts,
    pub active: Watts,
}

impl PowerModel {
    /// `cores`, or this machine's available parallelism.
    pub fn cores(&self) -> usize {
        self.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// Energy per byte moved over each kind of link (the marginal energy of the link hardware;
/// the board's own power while it waits is measured per stage).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkEnergy {
    pub uart: PerByte,
    pub usb: PerByte,
    pub ethernet: PerByte,
    pub wifi: PerByte,
}

/// The board's thermal behaviour.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThermalLimits {
    /// The SoC temperature from which the firmware or kernel throttles the CPU.
    pub throttle: Celsius,
}

/// A temperature in degrees Celsius and where it came from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Celsius {
    pub celsius: f64,
    pub source: String,
}

/// Source strings say where a figure came from.
const SOURCE_PREFIXES: [&str; 3] = ["datasheet:", "measurement:", "estimate:"];

impl Board {
    /// Parses and validates a profile; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Board, BoardError> {
        let mut b: Board =
            toml::from_str(text).map_err(|e| BoardError::Parse { origin: origin.to_owned(), msg: e.to_string() })?;
        b.origin = origin.to_owned();
        b.validate()?;
        Ok(b)
    }

    /// Reads, parses and validates `path`; the profile's name must be the file's stem.
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| BoardError::Read { path: path.to_owned(), source })?;
        let b = Board::parse(&text, &path.display().to_string())?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if b.name != stem {
            return Err(b.invalid(format!("name = \"{}\" but the file is {stem}.toml; they must agree", b.name)));
        }
        Ok(b)
    }

    fn invalid(&self, msg: String) -> BoardError {
        BoardError::Invalid { origin: self.origin.clone(), msg }
    }

    /// Checks what the parser cannot: names, figures in range, every figure sourced, and
    /// the fields each sensor kind needs.
    pub fn validate(&self) -> Result<(), BoardError> {
        let bad = |msg: String| Err(self.invalid(msg));
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(format!("name '{}' must be lowercase letters, digits and '-'", self.name));
        }
        if self.description.trim().is_empty() {
            return bad("description is empty".into());
        }
        let s = &self.sensor;
        match s.kind {
            SensorKind::PmicReadAdc if s.command.is_empty() || s.command[0].trim().is_empty() => {
                return bad("sensor kind pmic-read-adc needs command = [\"vcgencmd\", \"pmic_read_adc\"]".into());
            }
            SensorKind::None if s.total_rail.is_some() || !s.rails.is_empty() || s.path.is_some() => {
                return bad("sensor kind none takes no path, total_rail or rails".into());
            }
            k if k != SensorKind::PmicReadAdc && !s.command.is_empty() => {
                return bad(format!("sensor kind {k} takes no command (only pmic-read-adc does)"));
            }
            _ => {}
        }
        if let Some(p) = &s.path {
            if !p.starts_with('/') {
                return bad(format!("sensor path '{p}' must be absolute (it is re-rooted under --sysfs-root)"));
            }
        }
        if s.rails.iter().chain(s.total_rail.iter()).any(|r| r.trim().is_empty()) {
            return bad("sensor rails must not be empty strings".into());
        }
        if let Some(ms) = s.interval_ms {
            if !(1..=60_000).contains(&ms) {
                return bad(format!("sensor interval_ms {ms} is out of range (1 to 60000)"));
            }
        }
        if self.power.cores == Some(0) {
            return bad("power.cores must be at least 1".into());
        }
        let (idle, active) = (&self.power.idle, &self.power.active);
        for (what, w) in [("power.idle", idle), ("power.active", active)] {
            if !w.watts.is_finite() || w.watts <= 0.0 {
                return bad(format!("{what}.watts must be a positive number, not {}", w.watts));
            }
            check_source(what, &w.source).or_else(bad)?;
        }
        if active.watts < idle.watts {
            return bad(format!("power.active ({} W) is below power.idle ({} W)", active.watts, idle.watts));
        }
        let l = &self.link_energy;
        for (what, f) in [("uart", &l.uart), ("usb", &l.usb), ("ethernet", &l.ethernet), ("wifi", &l.wifi)] {
            if !f.nj_per_byte.is_finite() || f.nj_per_byte < 0.0 {
                return bad(format!("link_energy.{what}.nj_per_byte must be zero or more, not {}", f.nj_per_byte));
            }
            check_source(&format!("link_energy.{what}"), &f.source).or_else(bad)?;
        }
        if let Some(t) = &self.thermal {
            if !t.throttle.celsius.is_finite() || !(20.0..=150.0).contains(&t.throttle.celsius) {
                return bad(format!("thermal.throttle.celsius must be 20 to 150, not {}", t.throttle.celsius));
            }
            check_source("thermal.throttle", &t.throttle.source).or_else(bad)?;
        }
        Ok(())
    }

    /// The sensor's folder under `root`.
    pub fn sensor_path(&self, root: &SysRoot) -> Option<PathBuf> {
        self.sensor.path.as_deref().or(self.sensor.kind.default_path()).map(|p| root.path(p))
    }
}

fn check_source(what: &str, source: &str) -> Result<(), String> {
    if SOURCE_PREFIXES.iter().any(|p| source.starts_with(p) && source.len() > p.len() + 1) {
        Ok(())
    } else {
        Err(format!(
            "{what}.source must say where the figure came from, starting with 'datasheet:', 'measurement:' or \
             'estimate:' (found '{source}')"
        ))
    }
}

/// Every known profile: the built-in ones, plus or overridden by a folder's.
#[derive(Clone, Debug)]
pub struct Boards {
    list: Vec<Board>,
}

/// The board chosen and why.
#[derive(Clone, Debug)]
pub struct Detection {
    pub board: Board,
    pub reason: String,
    /// True when `--board` or `EDGECASCADE_BOARD` chose it.
    pub forced: bool,
}

impl Boards {
    /// The profiles built into the binary.
    pub fn builtin() -> Boards {
        let list = BUILTIN
            .iter()
            .map(|(name, text)| {
                // Built-in profiles are checked by the tests; a bad one is a bug, not bad input.
                Board::parse(text, &format!("built-in boards/{name}.toml"))
                    .unwrap_or_else(|e| panic!("built-in board profile {name} is invalid: {e}"))
            })
            .collect();
        Boards { list }
    }

    /// The built-in profiles with every `*.toml` of `dir` added, or replacing the built-in
    /// profile of the same name. New profiles are tried before `generic`.
    pub fn with_dir(dir: &Path) -> Result<Boards, BoardError> {
        let mut boards = Boards::builtin();
        let read = |source| BoardError::Read { path: dir.to_owned(), source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read)?
            .map(|e| e.map(|e| e.path()).map_err(read))
            .collect::<Result<_, _>>()?;
        files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        files.sort();
        for f in files {
            let b = Board::load(&f)?;
            log::debug!("board profile {} from {}", b.name, f.display());
            match boards.list.iter_mut().find(|x| x.name == b.name) {
                Some(slot) => *slot = b,
                None => {
                    let at = boards.list.iter().position(|x| x.name == GENERIC).unwrap_or(boards.list.len());
                    boards.list.insert(at, b);
                }
            }
        }
        Ok(boards)
    }

    /// `Boards::with_dir` when a folder is given, else the built-in ones.
    pub fn load(dir: Option<&Path>) -> Result<Boards, BoardError> {
        dir.map_or_else(|| Ok(Boards::builtin()), Boards::with_dir)
    }

    pub fn all(&self) -> &[Board] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Result<&Board, BoardError> {
        self.list.iter().find(|b| b.name == name).ok_or_else(|| BoardError::Unknown {
            name: name.to_owned(),
            known: self.list.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Recognises the board under `root`: a device-tree or DMI name first, then marker
    /// files, else `generic`. The reason says what was read.
    pub fn detect(&self, root: &SysRoot) -> Detection {
        let model = read_name(root, DEVICE_TREE_MODEL).or_else(|| read_name(root, DEVICE_TREE_MODEL_ALT));
        let product = read_name(root, DMI_PRODUCT_NAME);
        let board_name = read_name(root, DMI_BOARD_NAME);
        let found = |b: &Board, reason: String| Detection { board: b.clone(), reason, forced: false };
        for b in self.list.iter().filter(|b| b.name != GENERIC) {
            let names = [
                (DEVICE_TREE_MODEL, &model, &b.detect.device_tree_model),
                (DMI_PRODUCT_NAME, &product, &b.detect.dmi_product_name),
                (DMI_BOARD_NAME, &board_name, &b.detect.dmi_board_name),
            ];
            for (file, value, subs) in names {
                let Some(v) = value else { continue };
                if let Some(s) = subs.iter().find(|s| contains_ci(v, s)) {
                    return found(b, format!("{file} is \"{v}\", which contains \"{s}\""));
                }
            }
        }
        for b in self.list.iter().filter(|b| b.name != GENERIC) {
            if let Some(f) = b.detect.files.iter().find(|f| root.path(f).exists()) {
                return found(b, format!("{} exists", root.path(f).display()));
            }
        }
        let seen = [(DEVICE_TREE_MODEL, &model), (DMI_PRODUCT_NAME, &product), (DMI_BOARD_NAME, &board_name)]
            .iter()
            .map(|(f, v)| match v {
                Some(v) => format!("{f} is \"{v}\""),
                None => format!("no {f}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let generic = self.get(GENERIC).cloned().unwrap_or_else(|_| Boards::builtin().list.pop().expect("generic"));
        Detection { board: generic, reason: format!("no profile matched ({seen})"), forced: false }
    }

    /// The board named by `forced` (its name, and how it was given: `--board`, or
    /// `EDGECASCADE_BOARD` as the command layer reads it), else the one detected under `root`.
    pub fn choose(&self, forced: Option<(&str, &str)>, root: &SysRoot) -> Result<Detection, BoardError> {
        match forced.map(|(name, how)| (name.trim(), how)).filter(|(name, _)| !name.is_empty()) {
            Some((name, how)) => {
                Ok(Detection { board: self.get(name)?.clone(), reason: format!("chosen with {how}"), forced: true })
            }
            None => Ok(self.detect(root)),
        }
    }
}

/// Detects the board under `root` among the built-in profiles.
pub fn detect(root: &SysRoot) -> (Board, String) {
    let d = Boards::builtin().detect(root);
    (d.board, d.reason)
}

/// A name file's text without its NUL terminator (device-tree strings have one) or spaces.
fn read_name(root: &SysRoot, path: &str) -> Option<String> {
    let bytes = std::fs::read(root.path(path)).ok()?;
    let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    !needle.is_empty() && haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Everything `--boards`, `--board` and `--sysfs-root` resolve to.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub boards: Boards,
    pub detection: Detection,
    pub root: SysRoot,
}

/// Loads the profiles, re-roots `/sys` and `/proc` and chooses the board, logging the choice.
pub fn resolve(
    boards_dir: Option<&Path>,
    forced: Option<(&str, &str)>,
    sysfs_root: Option<&Path>,
) -> Result<Resolved, BoardError> {
    let boards = Boards::load(boards_dir)?;
    let root = SysRoot::from_flag(sysfs_root);
    let detection = boards.choose(forced, &root)?;
    if root.root().is_some() {
        log::info!("reading /sys and /proc under {root}");
    }
    log::info!("board {} ({}): {}", detection.board.name, detection.board.origin, detection.reason);
    Ok(Resolved { boards, detection, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_validate() {
        let b = Boards::builtin();
        let names: Vec<&str> = b.all().iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        assert_eq!(names.last(), Some(&GENERIC));
    }

    #[test]
    fn sysroot_reroots_absolute_paths() {
        let r = SysRoot::at("/tmp/tree");
        assert_eq!(r.path("/sys/class/powercap"), PathBuf::from("/tmp/tree/sys/class/powercap"));
        assert_eq!(SysRoot::host().path("/proc/self/stat"), PathBuf::from("/proc/self/stat"));
    }

    #[test]
    fn sources_must_say_where_they_came_from() {
        assert!(check_source("x", "estimate: a guess").is_ok());
        assert!(check_source("x", "datasheet: p. 4").is_ok());
        assert!(check_source("x", "a guess").is_err());
        assert!(check_source("x", "estimate:").is_err());
    }
}
