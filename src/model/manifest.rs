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
    #[error("model {name} ({path}) takes {takes} input, not {wanted}")]
    Kind { path: PathBuf, name: String, takes: Kind, wanted: Kind },
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

/// What a model takes: images (the default) or text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Image,
    Text,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Text => "text",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text model's input: its tokenizer and the most tokens it takes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The tokenizer's `tokenizer.json` (Hugging Face's format), relative to the manifest
    /// when read, then resolved.
    pub tokenizer: PathBuf,
    /// Tokens per input, special tokens included; longer inputs are truncated (and counted).
    pub max_length: usize,
    /// What the tokenizer's normaliser does (informational: the tokenizer file decides).
    #[serde(default)]
    pub lowercase: Option<bool>,
}

/// The input a model takes, with how to make it.
#[derive(Clone, Debug, PartialEq)]
pub enum Takes {
    Image(InputSpec),
    Text(TextSpec),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    kind: Kind,
    onnx: PathBuf,
    classes: PathBuf,
    input: Option<InputSpec>,
    text: Option<TextSpec>,
    output: OutputSpec,
}

/// A validated manifest with its paths resolved against the manifest's folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub path: PathBuf,
    pub onnx: PathBuf,
    pub classes_path: PathBuf,
    pub takes: Takes,
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
        let dir = path.parent().unwrap_or(Path::new("."));
        let takes = match (raw.kind, raw.input, raw.text) {
            (Kind::Image, Some(i), None) => {
                if i.size == 0 || i.size > 4096 {
                    return Err(invalid(format!("input.size {} is not between 1 and 4096", i.size)));
                }
                if !(i.crop_fraction > 0.0 && i.crop_fraction <= 1.0) {
                    return Err(invalid(format!("input.crop_fraction {} is not in (0, 1]", i.crop_fraction)));
                }
                if i.std.iter().any(|&s| s == 0.0 || !s.is_finite()) || i.mean.iter().any(|m| !m.is_finite()) {
                    return Err(invalid("input.std must be finite and non-zero, input.mean finite".into()));
                }
                Takes::Image(i)
            }
            (Kind::Text, None, Some(mut t)) => {
                if !(3..=4096).contains(&t.max_length) {
                    return Err(invalid(format!("text.max_length {} is not between 3 and 4096", t.max_length)));
                }
                t.tokenizer = dir.join(&t.tokenizer);
                Takes::Text(t)
            }
            (Kind::Image, None, _) => {
                return Err(invalid("an image model (kind = \"image\", the default) needs an [input] table".into()))
            }
            (Kind::Image, Some(_), Some(_)) => {
                return Err(invalid("an image model has no [text] table (say kind = \"text\" for a text model)".into()))
            }
            (Kind::Text, Some(_), _) => {
                return Err(invalid("a text model (kind = \"text\") takes no [input] table: an image input".into()))
            }
            (Kind::Text, None, None) => {
                return Err(invalid(
                    "a text model (kind = \"text\") needs a [text] table (tokenizer, max_length)".into(),
                ))
            }
        };
        Ok(Manifest {
            name: raw.name,
            path: path.to_owned(),
            onnx: dir.join(raw.onnx),
            classes_path: dir.join(raw.classes),
            takes,
            output: raw.output,
        })
    }

    /// What the model takes.
    pub fn kind(&self) -> Kind {
        match self.takes {
            Takes::Image(_) => Kind::Image,
            Takes::Text(_) => Kind::Text,
        }
    }

    /// The image input, or an error naming the manifest when the model takes text.
    pub fn image(&self) -> Result<&InputSpec, ManifestError> {
        match &self.takes {
            Takes::Image(i) => Ok(i),
            Takes::Text(_) => Err(self.wrong_kind(Kind::Image)),
        }
    }

    /// The text input, or an error naming the manifest when the model takes images.
    pub fn text(&self) -> Result<&TextSpec, ManifestError> {
        match &self.takes {
            Takes::Text(t) => Ok(t),
            Takes::Image(_) => Err(self.wrong_kind(Kind::Text)),
        }
    }

    fn wrong_kind(&self, wanted: Kind) -> ManifestError {
        ManifestError::Kind { path: self.path.clone(), name: self.name.clone(), takes: self.kind(), wanted }
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
        assert_eq!(m.image().unwrap().shape(), [1, 3, 224, 224]);
        assert_eq!(m.kind(), Kind::Image);
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

    const TEXT: &str = r#"
name = "t"
kind = "text"
onnx = "t.onnx"
classes = "c.txt"
[text]
tokenizer = "t.tokenizer.json"
max_length = 128
[output]
kind = "logits"
"#;

    #[test]
    fn a_text_model_says_its_tokenizer_and_length_and_refuses_an_image_input() {
        let m = Manifest::parse(TEXT, Path::new("models/t.toml")).unwrap();
        assert_eq!(m.kind(), Kind::Text);
        assert_eq!(m.text().unwrap().tokenizer, Path::new("models/t.tokenizer.json"));
        assert_eq!(m.text().unwrap().max_length, 128);
        let e = m.image().unwrap_err().to_string();
        assert!(e.contains("models/t.toml") && e.contains("takes text input, not image"), "{e}");
        let image_input = &GOOD[GOOD.find("[input]").unwrap()..GOOD.find("[output]").unwrap()];
        let e = Manifest::parse(&TEXT.replace("[output]", &format!("{image_input}[output]")), Path::new("x.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("takes no [input] table"), "{e}");
        let e = Manifest::parse(&TEXT.replace("kind = \"text\"\n", ""), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("needs an [input] table"), "{e}");
        let e = Manifest::parse(&TEXT.replace("128", "2"), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("text.max_length 2"), "{e}");
        let e = Manifest::parse(&TEXT.replace("\"text\"", "\"audio\""), Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("audio"), "{e}");
    }
}
