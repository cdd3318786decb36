//! A loaded model: its manifest, class names and runner, checked against each other at load.
//! Turns a decoded image into the model's logits (probability outputs are turned back into
//! log-probabilities, so the policy's softmax and temperature work on every model alike).

pub mod manifest;
pub mod preprocess;
pub mod runner;

use crate::model::manifest::{Manifest, ManifestError, OutputKind};
use crate::model::runner::{ModelRunner, RunError, RunnerOptions, TractRunner};
use crate::run::spans::Spans;
use image::RgbImage;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("model {manifest}: the class list {classes} has {listed} names but the model outputs {outputs} values")]
    ClassCount { manifest: PathBuf, classes: PathBuf, listed: usize, outputs: usize },
}

pub struct Model {
    pub manifest: Manifest,
    pub classes: Vec<String>,
    pub runner: Box<dyn ModelRunner>,
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
        let shape = manifest.input.shape();
        let runner = if batched {
            TractRunner::load_batched(&manifest.onnx, &shape, opts)?
        } else {
            TractRunner::load(&manifest.onnx, &shape, opts)?
        };
        if runner.outputs() != classes.len() {
            return Err(ModelError::ClassCount {
                manifest: manifest.path.clone(),
                classes: manifest.classes_path.clone(),
                listed: classes.len(),
                outputs: runner.outputs(),
            });
        }
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        log::info!(
            "loaded {} ({}, input {:?}, {:.0} M MACs) in {load_ms:.0} ms",
            manifest.name,
            manifest.onnx.display(),
            manifest.input.shape(),
            runner.macs() as f64 / 1e6
        );
        Ok(Model { manifest, classes, runner: Box::new(runner), load_ms })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn class_name(&self, class: usize) -> &str {
        self.classes.get(class).map_or("?", |s| s.as_str())
    }

    /// Preprocesses `img` as the manifest says and runs the model, timing both as spans of
    /// cascade stage `stage`.
    pub fn logits(&self, img: &RgbImage, stage: usize, spans: &mut Spans) -> Result<Vec<f32>, RunError> {
        let input = spans.time("preprocess", Some(stage), || preprocess::to_tensor(img, &self.manifest.input));
        self.logits_of_tensor(&input, stage, spans)
    }

    /// The logits of an image already cropped to the model's input size (what a host makes of
    /// a crop payload: `offload::payload::host_crop`), timed into `spans` as `logits` is.
    pub fn logits_of_crop(&self, crop: &RgbImage, stage: usize, spans: &mut Spans) -> Result<Vec<f32>, RunError> {
        let s = &self.manifest.input;
        let input = spans.time("preprocess", Some(stage), || preprocess::normalise(crop, s.mean, s.std, s.layout));
        self.logits_of_tensor(&input, stage, spans)
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
