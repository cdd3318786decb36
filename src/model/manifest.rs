//! Model manifests: the TOML file beside each ONNX model that says how to feed it (input
//! size, crop, normalisation, layout), what it returns (logits or probabilities) and where
//! its class names are. Dropping in another model means writing one of these, no code.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model manifest {path} is not valid: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("cannot read class names {path}: {source}")]
    Classes { path: PathBuf, source: std::io::Error },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Raw scores; the policy applies the softmax (with temperature).
    Logits,
    /// Already a probability vector; turned back into log-probabilities for the policy.
    Probabilities,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    Bicubic,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input tensor's name in the graph (informative; tract feeds input 0).
    #[serde(default)]
    pub name: Option<String>,
    /// Side of the square input, in pixels.
    pub size: u32,
    pub layout: Layout,
    /// The centre crop's side as a fraction of the image's shorter side.
    pub crop_fraction: f64,
    pub resize: Resize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputSpec {
    /// The input tensor's shape, batch 1.
    pub fn shape(&self) -> [usize; 4] {
        let s = self.size as usize;
        match self.layout {
            Layout::Nchw => [1, 3, s, s],
            Layout::Nhwc => [1, s, s, 3],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub kind: OutputKind,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    onnx: PathBuf,
    classes: PathBuf,
    input: InputSpec,
    output: OutputSpec,
}

/// A validated manifest with its paths resolved against the manifest's folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub path: PathBuf,
    pub onnx: PathBuf,
    pub classes_path: PathBuf,
    pub input: InputSpec,
    pub output: OutputSpec,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` names it in errors and anchors its relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |msg: String| ManifestError::Invalid { path: path.to_owned(), msg };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let i = &raw.input;
        if i.size == 0 || i.size > 4096 {
            return Err(invalid(format!("input.size {} is not between 1 and 4096", i.size)));
        }
        if !(i.crop_fraction > 0.0 && i.crop_fraction <= 1.0) {
            return Err(invalid(format!("input.crop_fraction {} is not in (0, 1]", i.crop_fraction)));
        }
        if i.std.iter().any(|&s| s == 0.0 || !s.is_finite()) || i.mean.iter().any(|m| !m.is_finite()) {
            return Err(invalid("input.std must be finite and non-zero, input.mean finite".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Manifest {
            name: raw.name,
            path: path.to_owned(),
            onnx: dir.join(raw.onnx),
            classes_path: dir.join(raw.classes),
            input: raw.input,
            output: raw.output,
        })
    }

    /// Reads the class names, one per line (line i names class i).
    pub fn load_classes(&self) -> Result<Vec<String>, ManifestError> {
        let text = std::fs::read_to_string(&self.classes_path)
            .map_err(|source| ManifestError::Classes { path: self.classes_path.clone(), source })?;
        Ok(text.lines().map(|l| l.trim().to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "m"
onnx = "m.onnx"
classes = "c.txt"
[input]
size = 224
layout = "nchw"
crop_fraction = 0.875
resize = "bicubic"
mean = [127.0, 127.0, 127.0]
std = [128.0, 128.0, 128.0]
[output]
kind = "logits"
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let m = Manifest::parse(GOOD, Path::new("models/m.toml")).unwrap();
        assert_eq!(m.onnx, Path::new("models/m.onnx"));
        assert_eq!(m.input.shape(), [1, 3, 224, 224]);
        assert_eq!(m.output.kind, OutputKind::Logits);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = Manifest::parse(&GOOD.replace("layout", "layuot"), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("x.toml") && e.to_string().contains("layuot"), "{e}");
        let e = Manifest::parse(&GOOD.replace("0.875", "1.5"), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("crop_fraction"), "{e}");
        let e =
            Manifest::parse(&GOOD.replace("std = [128.0, 128.0, 128.0]", "std = [0.0, 1.0, 1.0]"), Path::new("x.toml"))
                .unwrap_err();
        assert!(e.to_string().contains("std"), "{e}");
        let e = Manifest::parse(&GOOD.replace("\"nchw\"", "\"chw\""), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("chw"), "{e}");
    }
}
