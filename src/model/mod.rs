//! A loaded model: its manifest, class names and runner, checked against each other at load.
//! Turns a decoded image into the model's logits (probability outputs are turned back into
//! log-probabilities, so the policy's softmax and temperature work on every model alike).

pub mod manifest;
pub mod preprocess;
pub mod runner;
pub mod text;

use crate::model::manifest::{Kind, Manifest, ManifestError, OutputKind, Takes};
use crate::model::runner::text::TextRunner;
use crate::model::runner::{ModelRunner, RunError, RunnerOptions, TractRunner};
use crate::model::text::{TextError, TextTokenizer};
use crate::run::spans::Spans;
use image::RgbImage;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("model {manifest}: the class list {classes} has {listed} names but the model outputs {outputs} values")]
    ClassCount { manifest: PathBuf, classes: PathBuf, listed: usize, outputs: usize },
    #[error("a cascade's stages must take the same kind of input: stage 0 ({first}) takes {first_kind}, stage {stage} ({other}) takes {other_kind}")]
    MixedKinds { first: PathBuf, first_kind: Kind, stage: usize, other: PathBuf, other_kind: Kind },
}

/// One input as a cascade's models take it: a decoded image, or text.
#[derive(Clone, Debug)]
pub enum Decoded {
    Image(RgbImage),
    Text(String),
}

impl Decoded {
    /// Reads an input's bytes as `kind` says: an image decoded (and whether it was damaged:
    /// libjpeg's warning), or UTF-8 text.
    pub fn read(kind: Kind, bytes: &[u8]) -> Result<(Decoded, Option<String>), String> {
        match kind {
            Kind::Image => preprocess::decode_damaged(bytes)
                .map(|(img, damaged)| (Decoded::Image(img), damaged))
                .map_err(|e| e.to_string()),
            Kind::Text => text::text_of(bytes).map(|t| (Decoded::Text(t.to_owned()), None)).map_err(|e| e.to_string()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Decoded::Image(_) => Kind::Image,
            Decoded::Text(_) => Kind::Text,
        }
    }
}

pub struct Model {
    pub manifest: Manifest,
    pub classes: Vec<String>,
    pub runner: Box<dyn ModelRunner>,
    /// A text model's tokenizer (None for an image model).
    pub tokenizer: Option<TextTokenizer>,
    /// How long `load` took (manifest, classes, the ONNX file read, rewritten, optimised and
    /// its kernels chosen), in ms; 0 for a model made otherwise (the tests' scripted ones).
    pub load_ms: f64,
}

impl Model {
    /// Loads the manifest at `path`, then its classes and ONNX model, and checks they agree.
    pub fn load(path: &Path, opts: &RunnerOptions) -> Result<Model, ModelError> {
        Self::load_as(path, false, opts)
    }

    /// As `load`, with the model prepared to run batches in one pass (for a batching host).
    pub fn load_batched(path: &Path, opts: &RunnerOptions) -> Result<Model, ModelError> {
        Self::load_as(path, true, opts)
    }

    fn load_as(path: &Path, batched: bool, opts: &RunnerOptions) -> Result<Model, ModelError> {
        let start = std::time::Instant::now();
        let manifest = Manifest::load(path)?;
        let classes = manifest.load_classes()?;
        let (runner, outputs, tokenizer): (Box<dyn ModelRunner>, usize, _) = match &manifest.takes {
            Takes::Image(input) => {
                let shape = input.shape();
                let r = if batched {
                    TractRunner::load_batched(&manifest.onnx, &shape, opts)?
                } else {
                    TractRunner::load(&manifest.onnx, &shape, opts)?
                };
                let n = r.outputs();
                (Box::new(r), n, None)
            }
            Takes::Text(spec) => {
                let tok = TextTokenizer::load(spec)?;
                let r = TextRunner::load(&manifest.onnx, spec.max_length, tok.pad_id)?;
                let n = r.outputs();
                (Box::new(r), n, Some(tok))
            }
        };
        if outputs != classes.len() {
            return Err(ModelError::ClassCount {
                manifest: manifest.path.clone(),
                classes: manifest.classes_path.clone(),
                listed: classes.len(),
                outputs,
            });
        }
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let input = match &manifest.takes {
            Takes::Image(i) => format!("input {:?}", i.shape()),
            Takes::Text(t) => format!("text, up to {} tokens", t.max_length),
        };
        log::info!(
            "loaded {} ({}, {input}, {:.0} M MACs) in {load_ms:.0} ms",
            manifest.name,
            manifest.onnx.display(),
            runner.macs() as f64 / 1e6
        );
        Ok(Model { manifest, classes, runner, tokenizer, load_ms })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn class_name(&self, class: usize) -> &str {
        self.classes.get(class).map_or("?", |s| s.as_str())
    }

    /// What the model takes.
    pub fn kind(&self) -> Kind {
        self.manifest.kind()
    }

    /// Runs the model on one input as cascade stage `stage`, its pieces timed into `spans`
    /// (preprocess or tokenize, infer); returns the logits and the MACs spent (a text model's
    /// depend on the input's length). An input of the other kind is an error.
    pub fn run_input(&self, input: &Decoded, stage: usize, spans: &mut Spans) -> Result<(Vec<f32>, u64), ModelError> {
        match input {
            Decoded::Image(img) => Ok((self.logits(img, stage, spans)?, self.runner.macs())),
            Decoded::Text(text) => self.logits_of_text(text, stage, spans),
        }
    }

    /// Tokenizes `text` and runs the model on it; the `tokenize` span counts the tokens.
    pub fn logits_of_text(&self, text: &str, stage: usize, spans: &mut Spans) -> Result<(Vec<f32>, u64), ModelError> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| ManifestError::Kind {
            path: self.manifest.path.clone(),
            name: self.manifest.name.clone(),
            takes: self.kind(),
            wanted: Kind::Text,
        })?;
        let tokens = spans.time("tokenize", Some(stage), || tok.encode(text))?;
        if let Some(s) = spans.0.last_mut() {
            s.tokens = Some(tokens.ids.len());
            s.truncated = (tokens.truncated > 0).then_some(tokens.truncated);
        }
        let out = spans.time("infer", Some(stage), || self.runner.run_tokens(&tokens.ids))?;
        Ok((self.as_logits(out), self.runner.macs_at(tokens.ids.len())))
    }

    /// Preprocesses `img` as the manifest says and runs the model, timing both as spans of
    /// cascade stage `stage`.
    pub fn logits(&self, img: &RgbImage, stage: usize, spans: &mut Spans) -> Result<Vec<f32>, ModelError> {
        let spec = self.manifest.image()?;
        let input = spans.time("preprocess", Some(stage), || preprocess::to_tensor(img, spec));
        Ok(self.logits_of_tensor(&input, stage, spans)?)
    }

    /// The logits of an image already cropped to the model's input size (what a host makes of
    /// a crop payload: `offload::payload::host_crop`), timed into `spans` as `logits` is.
    pub fn logits_of_crop(&self, crop: &RgbImage, stage: usize, spans: &mut Spans) -> Result<Vec<f32>, ModelError> {
        let s = self.manifest.image()?;
        let input = spans.time("preprocess", Some(stage), || preprocess::normalise(crop, s.mean, s.std, s.layout));
        Ok(self.logits_of_tensor(&input, stage, spans)?)
    }

    fn logits_of_tensor(&self, input: &[f32], stage: usize, spans: &mut Spans) -> Result<Vec<f32>, RunError> {
        let out = spans.time("infer", Some(stage), || self.runner.run(input))?;
        Ok(self.as_logits(out))
    }

    /// Converts the model's raw output to logits per its manifest.
    pub fn as_logits(&self, out: Vec<f32>) -> Vec<f32> {
        match self.manifest.output.kind {
            OutputKind::Logits => out,
            OutputKind::Probabilities => crate::core::policy::log_probs(out),
        }
    }
}
