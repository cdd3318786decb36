//! The cascade configuration (`cascade.toml`): its stages, each with a model manifest, a
//! confidence metric, a threshold and a temperature, and whether to ensemble. Two steps, as
//! the file is read: parse and validate (`CascadeConfig::parse`), then apply command-line
//! overrides; loading the models is the caller's next step.

use crate::core::policy::{Metric, StagePolicy};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default cascade, as shipped at the repository's root.
pub const DEFAULT_CONFIG: &str = "cascade.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cascade config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cascade config {path} is not valid: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    ensemble: bool,
    #[serde(rename = "stage")]
    stages: Vec<RawStage>,
    #[serde(default)]
    calibration: Option<CalibrationInfo>,
    #[serde(default)]
    adapt: Option<AdaptInfo>,
}

/// The `[adapt]` table: how `run --adapt` may move the first stage's threshold online from the
/// audits (`run::audit`). Every field is optional (defaults there).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptInfo {
    /// The disagreement rate with the host to hold the device's answers to (E), in (0, 1).
    pub target: Option<f64>,
    /// The threshold's bounds, in [0, 1], lo < hi. The end that forwards most must still leave
    /// some inputs answered on the device, or no audit comes back to move it.
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// The step per audit (adaptive conformal inference's gamma), more than 0.
    pub gamma: Option<f64>,
    /// The threshold in use is rounded to multiples of this (0: not rounded), in [0, 1).
    pub grid: Option<f64>,
}

impl AdaptInfo {
    /// Every value in its range, or what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let within = |name: &str, v: Option<f64>, ok: fn(f64) -> bool, range: &str| match v {
            Some(x) if !ok(x) => Err(format!("[adapt] {name} = {x} is not {range}")),
            _ => Ok(()),
        };
        within("target", self.target, |x| x > 0.0 && x < 1.0, "in (0, 1)")?;
        within("lo", self.lo, |x| (0.0..=1.0).contains(&x), "in [0, 1]")?;
        within("hi", self.hi, |x| (0.0..=1.0).contains(&x), "in [0, 1]")?;
        within("gamma", self.gamma, |x| x > 0.0 && x.is_finite(), "more than 0")?;
        within("grid", self.grid, |x| (0.0..1.0).contains(&x), "in [0, 1)")?;
        match (self.lo, self.hi) {
            (Some(lo), Some(hi)) if lo >= hi => Err(format!("[adapt] lo = {lo} is not below hi = {hi}")),
            _ => Ok(()),
        }
    }
}

/// What `calibrate` measured at the chosen threshold, kept in the config it writes so that
/// `report` can compare a run's realised figures with the prediction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInfo {
    /// The labeled folder calibrated on.
    pub data: String,
    /// Images in it.
    pub n: usize,
    /// How many of them went past the first stage.
    pub forwarded: usize,
    pub top1: f64,
    /// Mean MACs per input (device and host).
    pub macs_per_input: f64,
    /// MACs of the last stage's model alone.
    pub large_model_macs: f64,
    /// MACs of each stage's model.
    pub stage_macs: Vec<f64>,
    /// The target as asked, e.g. "accuracy >= 0.8246".
    pub target: String,
    /// What `top1` was measured against: `labels`, or `agreement` (the last stage's answers,
    /// `calibrate --agreement`). Absent in configs written before it was recorded: labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The guaranteed mode (`--max-drop`): E, the accuracy drop (or, with `agreement`, the
    /// disagreement rate with the last stage) certified not to be exceeded ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drop: Option<f64>,
    /// ... with probability at least 1 - delta over the calibration draw ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// ... by this p-value of the chosen threshold (at most delta / curves tested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The guarantee in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    model: PathBuf,
    #[serde(default)]
    metric: Option<Metric>,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    temperature: Option<f32>,
}

/// One stage: the model manifest to load and the policy deciding whether its answer is final.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    pub model: PathBuf,
    pub policy: StagePolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CascadeConfig {
    pub path: PathBuf,
    pub ensemble: bool,
    pub stages: Vec<StageConfig>,
    pub calibration: Option<CalibrationInfo>,
    /// The `[adapt]` table, when the config has one.
    pub adapt: Option<AdaptInfo>,
}

/// Command-line overrides, applied to every stage but the last (which always answers).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub threshold: Option<f32>,
    pub metric: Option<Metric>,
    pub ensemble: Option<bool>,
}

impl CascadeConfig {
    pub fn load(path: &Path) -> Result<CascadeConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` names it in errors and anchors model paths.
    pub fn parse(text: &str, path: &Path) -> Result<CascadeConfig, ConfigError> {
        let invalid = |msg: String| ConfigError::Invalid { path: path.to_owned(), msg };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        if raw.stages.is_empty() {
            return Err(invalid("no [[stage]] is given".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let last = raw.stages.len() - 1;
        let mut stages = Vec::new();
        for (i, s) in raw.stages.into_iter().enumerate() {
            let n = i + 1;
            if i == last && s.threshold.is_some() {
                return Err(invalid(format!("stage {n} is the last one and always answers: remove its threshold")));
            }
            if i < last && s.threshold.is_none() {
                return Err(invalid(format!("stage {n} needs a threshold (only the last stage has none)")));
            }
            let temperature = s.temperature.unwrap_or(1.0);
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(invalid(format!("stage {n}: temperature {temperature} must be positive")));
            }
            let policy =
                StagePolicy { metric: s.metric.unwrap_or(Metric::MaxSoftmax), threshold: s.threshold, temperature };
            check_threshold(&policy).map_err(|m| invalid(format!("stage {n}: {m}")))?;
            stages.push(StageConfig { model: dir.join(s.model), policy });
        }
        if let Some(a) = &raw.adapt {
            a.check().map_err(invalid)?;
        }
        Ok(CascadeConfig {
            path: path.to_owned(),
            ensemble: raw.ensemble,
            stages,
            calibration: raw.calibration,
            adapt: raw.adapt,
        })
    }

    /// Applies command-line overrides and validates the result.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<CascadeConfig, ConfigError> {
        let last = self.stages.len() - 1;
        for s in &mut self.stages[..last] {
            if let Some(t) = o.threshold {
                s.policy.threshold = Some(t);
            }
            if let Some(m) = o.metric {
                s.policy.metric = m;
            }
            check_threshold(&s.policy).map_err(|msg| ConfigError::Invalid { path: "command line".into(), msg })?;
        }
        if let Some(e) = o.ensemble {
            self.ensemble = e;
        }
        Ok(self)
    }

    pub fn policies(&self) -> Vec<StagePolicy> {
        self.stages.iter().map(|s| s.policy.clone()).collect()
    }

    /// The config as TOML, model paths written relative to `dir` (where the file will live).
    pub fn to_toml(&self, dir: &Path, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out += &format!("# {line}\n");
        }
        out += &format!("ensemble = {}\n", self.ensemble);
        for s in &self.stages {
            out += &format!("\n[[stage]]\nmodel = {:?}\n", relative(&s.model, dir).to_string_lossy());
            if let Some(t) = s.policy.threshold {
                out += &format!("metric = \"{}\"\nthreshold = {t}\n", s.policy.metric);
            }
            out += &format!("temperature = {}\n", s.policy.temperature);
        }
        if let Some(c) = &self.calibration {
            let table = toml::to_string(c).unwrap_or_default();
            out += &format!("\n[calibration]\n{table}");
        }
        if let Some(a) = &self.adapt {
            let table = toml::to_string(a).unwrap_or_default();
            out += &format!("\n[adapt]\n{table}");
        }
        out
    }
}

/// How a config written into `dir` names `path`: relative to `dir` when `path` lies in it or
/// below (the folder can move as a whole), absolute otherwise (the config can move on its
/// own); as it is when it cannot be resolved.
pub fn relative(path: &Path, dir: &Path) -> PathBuf {
    let (Ok(p), Ok(d)) = (std::fs::canonicalize(path), std::fs::canonicalize(dir)) else { return path.to_owned() };
    match p.strip_prefix(&d) {
        Ok(inside) => inside.to_owned(),
        Err(_) => p,
    }
}

/// Every metric lives in 0..1 (entropy is normalised), so must every threshold.
fn check_threshold(p: &StagePolicy) -> Result<(), String> {
    match p.threshold {
        Some(t) if !(0.0..=1.0).contains(&t) => Err(format!("threshold {t} for {} is not within 0..1", p.metric)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
ensemble = true
[[stage]]
model = "models/a.toml"
metric = "entropy"
threshold = 0.3
temperature = 1.5
[[stage]]
model = "models/b.toml"
"#;

    #[test]
    fn parses_a_two_stage_cascade() {
        let c = CascadeConfig::parse(TWO, Path::new("conf/cascade.toml")).unwrap();
        assert!(c.ensemble);
        assert_eq!(c.stages.len(), 2);
        assert_eq!(c.stages[0].model, Path::new("conf/models/a.toml"));
        assert_eq!(c.stages[0].policy, StagePolicy { metric: Metric::Entropy, threshold: Some(0.3), temperature: 1.5 });
        assert_eq!(c.stages[1].policy.threshold, None);
        assert!(c.calibration.is_none());
    }

    #[test]
    fn written_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = CascadeConfig::parse(TWO, &dir.path().join("cascade.toml")).unwrap();
        c.calibration = Some(CalibrationInfo {
            data: "d".into(),
            n: 10,
            forwarded: 2,
            top1: 0.9,
            macs_per_input: 5.0,
            large_model_macs: 9.0,
            stage_macs: vec![4.0, 9.0],
            target: "accuracy >= 0.9".into(),
            ..Default::default()
        });
        let text = c.to_toml(dir.path(), "made by a test");
        let back = CascadeConfig::parse(&text, &dir.path().join("out.toml")).unwrap();
        assert_eq!(back.stages, c.stages);
        assert_eq!(back.calibration, c.calibration);
        assert!(text.starts_with("# made by a test"));
        assert!(!text.contains("max_drop"), "a config without a guarantee reads as before:\n{text}");
        // With a guarantee: its fields round-trip.
        let cal = c.calibration.as_mut().unwrap();
        (cal.reference, cal.max_drop, cal.delta, cal.p_value) =
            (Some("agreement".into()), Some(0.01), Some(0.1), Some(0.004));
        cal.guarantee = Some("agrees with the last stage".into());
        let text = c.to_toml(dir.path(), "made by a test");
        let back = CascadeConfig::parse(&text, &dir.path().join("out.toml")).unwrap();
        assert_eq!(back.calibration, c.calibration);
        c.adapt = Some(AdaptInfo { target: Some(0.05), lo: Some(0.5), hi: Some(0.95), gamma: None, grid: Some(0.01) });
        let back = CascadeConfig::parse(&c.to_toml(dir.path(), ""), &dir.path().join("out.toml")).unwrap();
        assert_eq!(back.adapt, c.adapt);
    }

    #[test]
    fn overrides_apply_to_all_but_the_last_stage() {
        let c = CascadeConfig::parse(TWO, Path::new("c.toml")).unwrap();
        let o = Overrides { threshold: Some(0.7), metric: Some(Metric::Margin), ensemble: Some(false) };
        let c = c.with_overrides(&o).unwrap();
        assert_eq!(c.stages[0].policy.threshold, Some(0.7));
        assert_eq!(c.stages[0].policy.metric, Metric::Margin);
        assert_eq!(c.stages[1].policy.threshold, None);
        assert!(!c.ensemble);
        let bad = Overrides { threshold: Some(1.5), ..Default::default() };
        assert!(CascadeConfig::parse(TWO, Path::new("c.toml")).unwrap().with_overrides(&bad).is_err());
    }

    #[test]
    fn rejects_bad_configs_with_the_reason() {
        let cases = [
            ("ensemble = false\n", "stage"),
            ("[[stage]]\nmodel = \"a\"\nthreshold = 0.5\n", "last"),
            ("[[stage]]\nmodel = \"a\"\n[[stage]]\nmodel = \"b\"\n", "needs a threshold"),
            (
                "[[stage]]\nmodel = \"a\"\nmetric = \"confidence\"\nthreshold = 0.5\n[[stage]]\nmodel = \"b\"\n",
                "confidence",
            ),
            ("[[stage]]\nmodel = \"a\"\nthreshold = 2.0\n[[stage]]\nmodel = \"b\"\n", "0..1"),
            ("[[stage]]\nmodel = \"a\"\nthreshhold = 0.5\n", "threshhold"),
            ("[[stage]]\nmodel = \"a\"\ntemperature = 0.0\n", "temperature"),
            ("[adapt]\ntarget = 1.5\n[[stage]]\nmodel = \"a\"\n", "target = 1.5"),
            ("[adapt]\nlo = 0.9\nhi = 0.5\n[[stage]]\nmodel = \"a\"\n", "lo = 0.9 is not below hi = 0.5"),
            ("[adapt]\nbounds = 1\n[[stage]]\nmodel = \"a\"\n", "bounds"),
        ];
        for (text, want) in cases {
            let e = CascadeConfig::parse(text, Path::new("x/c.toml")).unwrap_err().to_string();
            assert!(e.contains("x/c.toml") && e.contains(want), "{text:?}: {e}");
        }
    }
}
