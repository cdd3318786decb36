//! Each stage's milliseconds and device millijoules per input on this machine, measured the
//! way `classify` and `bench` measure a live input: one input at a time through
//! `Pipeline::answer` (decode, then each stage's preprocess, inference and decision, with
//! the runner's threads as the run will have them), each span's energy from the same
//! `EnergyContext` (the board's sensor, a meter, or the labelled estimate). `calibrate`
//! prices its cost model with these figures, so its predicted cost per input is the cost
//! `classify` then measures, and its budgets (`--budget-ms`, `--budget-mj`) rest on them.

use crate::core::cost::Figure;
use crate::core::policy::Metric;
use crate::model::manifest::Takes;
use crate::offload::payload::{self, PayloadSpec};
use crate::run::pipeline::Pipeline;
use crate::run::spans::Spans;
use serde::Serialize;

/// Milliseconds and device millijoules per input of one piece of work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measured {
    pub ms: Figure,
    pub mj: Figure,
}

/// What `measure` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// Each stage run here on every input: its preprocess, inference and decision; the first
    /// also decodes the input (a live run decodes each input once, before the first stage).
    pub stages: Vec<Measured>,
    /// The device encoding the last stage's payload (`PayloadSpec`) for the link.
    pub encode: Measured,
    /// Inputs timed (after the warm-up).
    pub inputs: usize,
    pub warmup: usize,
    pub threads: usize,
}

/// Inputs timed by `calibrate`: enough for a mean within a few percent on a quiet machine,
/// few enough to take seconds on a board.
pub const TIMED_INPUTS: usize = 20;
/// Inputs run first and not counted (the first inference of a model is slower).
pub const WARMUP: usize = 2;

/// Up to `TIMED_INPUTS` of `n` items, evenly spread, in order.
pub fn sample(n: usize) -> Vec<usize> {
    let k = n.min(TIMED_INPUTS);
    (0..k).map(|i| i * n / k.max(1)).collect()
}

/// Times every stage of `pipeline` on `inputs` (name, bytes). Stage k is timed in a pass of
/// its own in which every input goes as far as stage k and no further (the policy is set to
/// forward up to it and exit there, then put back), so each stage is measured in the state a
/// run leaves the machine in when that stage answers: the first stage mostly alone, warm, as
/// in a run where most inputs exit early; a later one right after the stages before it.
/// Inputs that fail are skipped; none timed is an error.
pub fn measure(pipeline: &mut Pipeline, inputs: &[(String, Vec<u8>)], p: PayloadSpec) -> Result<Timing, String> {
    let saved = pipeline.policies.clone();
    let result = time_all(pipeline, inputs, p);
    pipeline.policies = saved;
    result
}

/// Sets the policy so that every input goes through stages 0..=k and is answered by k.
fn answer_at(pipeline: &mut Pipeline, saved: &[crate::core::policy::StagePolicy], k: usize) {
    for (i, policy) in pipeline.policies.iter_mut().enumerate() {
        *policy = saved[i].clone();
        policy.metric = Metric::MaxSoftmax;
        policy.threshold = match i.cmp(&k) {
            std::cmp::Ordering::Less => Some(f32::INFINITY),
            std::cmp::Ordering::Equal => Some(f32::NEG_INFINITY),
            std::cmp::Ordering::Greater => saved[i].threshold,
        };
    }
}

fn time_all(pipeline: &mut Pipeline, inputs: &[(String, Vec<u8>)], p: PayloadSpec) -> Result<Timing, String> {
    let stages = pipeline.models.len();
    let last = stages.checked_sub(1).ok_or("no stage runs here to time")?;
    // Where the host model's crop is made (a text input travels as it is).
    let (size, crop_fraction) = match &pipeline.models[last].manifest.takes {
        Takes::Image(i) => (i.size, i.crop_fraction),
        Takes::Text(_) => (0, 1.0),
    };
    let saved = pipeline.policies.clone();
    let warmup = WARMUP.min(inputs.len());
    let mut ms = vec![0.0; stages + 1];
    let mut mj = vec![0.0; stages + 1];
    let mut sources = vec![String::new(); stages + 1];
    let mut timed = vec![0usize; stages];
    for (k, timed_k) in timed.iter_mut().enumerate() {
        answer_at(pipeline, &saved, k);
        for (i, (name, bytes)) in inputs.iter().take(warmup).chain(inputs).enumerate() {
            let (mut a, decoded) = match pipeline.answer_keeping_input(name, bytes) {
                Ok(answered) => answered,
                Err(e) => {
                    log::warn!("timing the stages: {name}: {e}");
                    continue;
                }
            };
            if k == last {
                // What the device does to send the input to the last stage's host.
                let mut encode = Spans::default();
                encode.time("encode", Some(last), || {
                    payload::encode(p.encoding, bytes, &decoded, size, crop_fraction, p.jpeg_quality)
                })?;
                a.stages.0.extend(encode.0);
            }
            if let Some(energy) = &pipeline.energy {
                energy.fill(&mut a.stages.0);
            }
            if i < warmup {
                continue;
            }
            *timed_k += 1;
            for s in &a.stages.0 {
                // Decoding belongs to the first stage; encoding the payload has a slot of its own.
                let slot = if s.name == "encode" { stages } else { s.stage.unwrap_or(0).min(last) };
                if slot == k || slot == stages {
                    ms[slot] += s.ms;
                    if let Some(e) = &s.energy {
                        mj[slot] += e.mj;
                        sources[slot] = e.source.clone();
                    }
                }
            }
        }
        if *timed_k == 0 {
            return Err(format!("none of the {} inputs could be timed", inputs.len()));
        }
    }
    let threads = crate::model::runner::threads();
    let figure = |slot: usize| {
        let n = timed[slot.min(last)] as f64;
        let clock = format!(
            "monotonic clock, one input at a time as classify runs it, mean of {n} inputs after {warmup} warm-up, {threads} thread(s), on this machine"
        );
        let source = &sources[slot];
        let mj = match source.strip_prefix("estimate:") {
            _ if source.is_empty() => Figure::estimate(0.0, "no energy context: not measured"),
            Some(how) => Figure::estimate(mj[slot] / n, how.trim()),
            None => Figure::measured(mj[slot] / n, source),
        };
        Measured { ms: Figure::measured(ms[slot] / n, &clock), mj }
    };
    Ok(Timing { stages: (0..stages).map(figure).collect(), encode: figure(stages), inputs: timed[0], warmup, threads })
}
