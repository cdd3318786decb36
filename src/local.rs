//! The cascade on one machine: every stage's model loaded here. Turns an encoded image into
//! an `Answer` (class, confidence, the stage that answered, per-span times, MACs spent).
//! `classify` uses it directly; `eval` uses its models and the same cascade driver over
//! cached logits.

use crate::cascade::{self, StageFailure};
use crate::config::CascadeConfig;
use crate::model::{Model, ModelError};
use crate::policy::{Metric, StagePolicy};
use crate::preprocess;
use crate::stage::Spans;
use serde::Serialize;

/// One input's answer, as printed and logged.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub input: String,
    pub class: usize,
    pub label: String,
    pub confidence: f32,
    pub metric: Metric,
    /// Index of the stage that answered (0 = the first, on-device, model).
    pub stage: usize,
    pub model: String,
    /// True when the input went past the first stage.
    pub forwarded: bool,
    /// True when a later stage should have answered but could not.
    pub degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    /// Multiply-accumulates spent on this input, over every stage that ran.
    pub macs: u64,
    pub ms: f64,
    pub stages: Spans,
}

pub struct LocalCascade {
    pub config: CascadeConfig,
    pub models: Vec<Model>,
    pub policies: Vec<StagePolicy>,
}

impl LocalCascade {
    /// Loads every stage's model and checks that their class lists agree in length.
    pub fn load(config: CascadeConfig) -> Result<LocalCascade, ModelError> {
        let models = config.stages.iter().map(|s| Model::load(&s.model)).collect::<Result<Vec<_>, _>>()?;
        for m in &models[1..] {
            if m.classes.len() != models[0].classes.len() {
                return Err(ModelError::ClassCount {
                    manifest: m.manifest.path.clone(),
                    classes: m.manifest.classes_path.clone(),
                    listed: m.classes.len(),
                    outputs: models[0].classes.len(),
                });
            }
        }
        let policies = config.policies();
        Ok(LocalCascade { config, models, policies })
    }

    /// Runs the cascade on encoded image bytes. An error names what was wrong with the input.
    pub fn answer(&self, input: &str, bytes: &[u8]) -> Result<Answer, String> {
        let mut spans = Spans::default();
        let img = spans.time("decode", None, || preprocess::decode(bytes)).map_err(|e| e.to_string())?;
        let outcome = cascade::run(&self.policies, self.config.ensemble, |i| {
            self.models[i].logits(&img, i, &mut spans).map_err(|e| StageFailure::Input(e.to_string()))
        })
        .map_err(|e| e.to_string())?;
        let macs = self.models[..outcome.ran].iter().map(|m| m.runner.macs()).sum();
        Ok(self.make_answer(input, &outcome, macs, spans))
    }

    /// Builds the printed answer from the driver's outcome.
    pub fn make_answer(&self, input: &str, o: &cascade::Outcome, macs: u64, stages: Spans) -> Answer {
        let model = &self.models[o.stage];
        Answer {
            input: input.to_owned(),
            class: o.class(),
            label: model.class_name(o.class()).to_owned(),
            confidence: o.verdict.score,
            metric: self.policies[o.stage].metric,
            stage: o.stage,
            model: model.name().to_owned(),
            forwarded: o.ran > 1,
            degraded: o.degraded.is_some(),
            degraded_reason: o.degraded.clone(),
            macs,
            ms: stages.total_ms(),
            stages,
        }
    }
}
