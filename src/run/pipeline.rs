//! The cascade as it runs on one input: the stages whose models are loaded here, and
//! optionally a last stage on a host behind a link (`offload::RemoteStage`). Turns an encoded image
//! into an `Answer` (class, confidence, the stage that answered, per-span times, MACs spent,
//! what the link did). `classify`, `run` and `demo` all answer through `Pipeline::answer`;
//! `eval` uses its models and the same cascade driver over cached logits.

use crate::config::CascadeConfig;
use crate::core::cascade::{self, StageFailure};
use crate::core::policy::{Metric, StagePolicy};
use crate::model::manifest::{Kind, Manifest};
use crate::model::preprocess;
use crate::model::runner::RunnerOptions;
use crate::model::{Decoded, Model, ModelError};
use crate::offload::{LinkReport, RemoteStage};
use crate::run::spans::Spans;
use serde::Serialize;

/// One input's answer, as printed and logged.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub input: String,
    pub class: usize,
    /// The predicted class's name.
    pub class_name: String,
    /// The same name, under the key answers had first (not the true label: that is `label`
    /// in `eval`'s predictions and in labels.csv).
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
    /// What the link did, when the input was offloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkReport>,
    /// What was wrong with a damaged image answered anyway (`--accept-damaged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

pub struct Pipeline {
    pub config: CascadeConfig,
    /// The models of the stages that run here, in order.
    pub models: Vec<Model>,
    /// The last stage, when it runs on a host.
    pub remote: Option<Box<dyn RemoteStage>>,
    pub policies: Vec<StagePolicy>,
    /// Every stage's model name, the remote one included.
    pub names: Vec<String>,
    /// Measures the energy of each span, when set (`session::drive` fills it in).
    pub energy: Option<crate::energy::EnergyContext>,
    /// Answer damaged images (a JPEG cut short, corrupt data) as far as they decode, marked
    /// `damaged`, instead of failing them.
    pub accept_damaged: bool,
    /// What every stage's model takes (checked at load).
    kind: Kind,
}

impl Pipeline {
    /// Loads every stage's model: the whole cascade in this process.
    pub fn local(config: CascadeConfig, opts: &RunnerOptions) -> Result<Pipeline, ModelError> {
        Self::load(config, None, opts)
    }

    /// Loads the models of every stage but the last, which `remote` serves. `remote_name`
    /// names the host's model.
    pub fn offloading(
        config: CascadeConfig,
        remote: Box<dyn RemoteStage>,
        remote_name: String,
        opts: &RunnerOptions,
    ) -> Result<Pipeline, ModelError> {
        Self::load(config, Some((remote, remote_name)), opts)
    }

    fn load(
        config: CascadeConfig,
        remote: Option<(Box<dyn RemoteStage>, String)>,
        opts: &RunnerOptions,
    ) -> Result<Pipeline, ModelError> {
        let local = config.stages.len() - remote.is_some() as usize;
        // Every stage takes the same kind of input, the host's included (as its manifest says,
        // where the device has it): checked before any model is loaded.
        let manifests: Vec<(usize, Manifest)> = config
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Manifest::load(&s.model).ok().map(|m| (i, m)))
            .collect();
        let kind = manifests.first().map_or(Kind::Image, |(_, m)| m.kind());
        if let Some((stage, m)) = manifests.iter().find(|(_, m)| m.kind() != kind) {
            return Err(ModelError::MixedKinds {
                first: manifests[0].1.path.clone(),
                first_kind: kind,
                stage: *stage,
                other: m.path.clone(),
                other_kind: m.kind(),
            });
        }
        let models =
            config.stages[..local].iter().map(|s| Model::load(&s.model, opts)).collect::<Result<Vec<_>, _>>()?;
        for m in models.iter().skip(1) {
            if m.classes.len() != models[0].classes.len() {
                return Err(ModelError::ClassCount {
                    manifest: m.manifest.path.clone(),
                    classes: m.manifest.classes_path.clone(),
                    listed: m.classes.len(),
                    outputs: models[0].classes.len(),
                });
            }
        }
        Ok(Self::assembled(config, models, remote))
    }

    /// A pipeline of models already loaded (by `load`, or a test's scripted ones), with the
    /// remote last stage and its model's name when there is one: names and policies from
    /// them and the config, the kind the first model's.
    pub fn assembled(
        config: CascadeConfig,
        models: Vec<Model>,
        remote: Option<(Box<dyn RemoteStage>, String)>,
    ) -> Pipeline {
        let mut names: Vec<String> = models.iter().map(|m| m.name().to_owned()).collect();
        let remote = remote.map(|(r, name)| {
            names.push(name);
            r
        });
        let policies = config.policies();
        let kind = models.first().map_or(Kind::Image, |m| m.kind());
        Pipeline { config, models, remote, policies, names, energy: None, accept_damaged: false, kind }
    }

    /// What the cascade's models take (every stage takes the same, checked at load).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Runs the cascade on one input's bytes: an encoded image, or UTF-8 text for a text
    /// cascade. An error names what was wrong with the input.
    pub fn answer(&mut self, input: &str, bytes: &[u8]) -> Result<Answer, String> {
        self.answer_keeping_input(input, bytes).map(|(a, _)| a)
    }

    /// [`Pipeline::answer`], also returning the decoded input (for an audit after the answer).
    pub fn answer_keeping_input(&mut self, input: &str, bytes: &[u8]) -> Result<(Answer, Decoded), String> {
        let mut spans = Spans::default();
        let (decoded, damaged) = spans.time("decode", None, || match Decoded::read(self.kind, bytes) {
            Ok((_, Some(why))) if !self.accept_damaged => Err(preprocess::PreprocessError::Damaged(why).to_string()),
            other => other,
        })?;
        let mut link: Option<LinkReport> = None;
        let (models, remote) = (&self.models, &mut self.remote);
        // The driver decides between one stage's logits and the next call (or its return): the
        // time from a stage's end to then is that stage's "decide" span.
        let mut decided: Option<(usize, std::time::Instant)> = None;
        let mut macs = 0;
        let outcome = cascade::run(&self.policies, self.config.ensemble, |i| {
            if let Some((stage, since)) = decided.take() {
                spans.push_since("decide", Some(stage), since);
            }
            let logits = match models.get(i) {
                Some(m) => m.run_input(&decoded, i, &mut spans).map_err(|e| StageFailure::Input(e.to_string())).map(
                    |(logits, spent)| {
                        macs += spent;
                        logits
                    },
                ),
                None => {
                    let remote =
                        remote.as_mut().ok_or_else(|| StageFailure::Input(format!("stage {i} has no model")))?;
                    let report = link.insert(LinkReport::default());
                    remote.infer(bytes, &decoded, &mut spans, i, report)
                }
            };
            decided = Some((i, std::time::Instant::now()));
            logits
        })
        .map_err(|e| e.to_string())?;
        if let Some((stage, since)) = decided {
            spans.push_since("decide", Some(stage), since);
        }
        let mut answer = self.make_answer(input, &outcome, macs, spans, link);
        answer.damaged = damaged;
        Ok((answer, decoded))
    }

    /// Sends an input the device answered to the host as well, marked as an audit: the host
    /// model's class (its logits' argmax), with the audit's spans and link report. An error
    /// when there is no host stage or the host could not answer.
    pub fn audit(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        report: &mut LinkReport,
    ) -> Result<usize, String> {
        let stage = self.names.len() - 1;
        let remote = self.remote.as_mut().ok_or("no host stage to audit with")?;
        let logits = remote.audit(bytes, input, spans, stage, report).map_err(|e| e.to_string())?;
        Ok(crate::core::policy::argmax(&logits))
    }

    /// The threshold of stage `stage` (None for the last, which always answers).
    pub fn threshold(&self, stage: usize) -> Option<f32> {
        self.policies.get(stage).and_then(|p| p.threshold)
    }

    /// Sets stage `stage`'s threshold (not the last's), from now on.
    pub fn set_threshold(&mut self, stage: usize, threshold: f32) {
        if stage + 1 < self.policies.len() {
            self.policies[stage].threshold = Some(threshold);
        }
    }

    fn make_answer(
        &self,
        input: &str,
        o: &cascade::Outcome,
        macs: u64,
        stages: Spans,
        link: Option<LinkReport>,
    ) -> Answer {
        let classes = &self.models[0];
        Answer {
            input: input.to_owned(),
            class: o.class(),
            class_name: classes.class_name(o.class()).to_owned(),
            label: classes.class_name(o.class()).to_owned(),
            confidence: o.verdict.score,
            metric: self.policies[o.stage].metric,
            stage: o.stage,
            model: self.names[o.stage].clone(),
            forwarded: o.ran > 1,
            degraded: o.degraded.is_some(),
            degraded_reason: o.degraded.clone(),
            macs,
            ms: stages.total_ms(),
            stages,
            link,
            damaged: None,
        }
    }
}
