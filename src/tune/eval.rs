//! Evaluation on a labeled folder: every model's logits on every image (computed once, on
//! all cores), then each model's top-1 alone and the cascade's top-1, fraction forwarded and
//! mean MACs per input, decided by the same driver as live runs. `score` is pure.

use crate::core::cascade;
use crate::core::guarantee::{clopper_pearson, paired_difference};
use crate::core::policy::{argmax, softmax, StagePolicy};
use crate::model::manifest::Kind;
use crate::model::runner::single_threaded;
use crate::model::{Decoded, Model};
use crate::offload::payload;
use crate::run::spans::Spans;
use crate::tune::dataset::Labeled;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every model's logits on one labeled image.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Record {
    pub input: String,
    pub label: usize,
    pub logits: Vec<Vec<f32>>,
    /// Each model's MACs on this input (a text model's depend on its length); empty in
    /// caches written before text models.
    #[serde(default)]
    pub macs: Vec<u64>,
}

/// The MACs `eval` and `calibrate` price each model at: its mean over the records (a text
/// model's work depends on each input's length), or `fixed` (the runner's figure) where the
/// records do not say. Both commands price a cascade with these, so they agree.
pub fn mean_macs(records: &[Record], fixed: &[u64]) -> Vec<u64> {
    fixed
        .iter()
        .enumerate()
        .map(|(m, &f)| {
            let known: Vec<u64> = records.iter().filter_map(|r| r.macs.get(m).copied()).collect();
            if known.is_empty() {
                f
            } else {
                (known.iter().map(|&x| x as f64).sum::<f64>() / known.len() as f64).round() as u64
            }
        })
        .collect()
}

/// The cascade's last stage as a live run feeds it: on the host, from the payload the link
/// carries. `collect` gives model `stage` that payload's view of each image instead of its
/// pixels (`--encoding original` or `crop-raw` see the same pixels; `crop-jpeg` does not).
#[derive(Clone, Copy, Debug)]
pub struct HostView {
    pub stage: usize,
    pub payload: crate::offload::payload::PayloadSpec,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelScore {
    pub name: String,
    pub top1: f64,
    /// 95% Clopper-Pearson interval of `top1`, `[lo, hi]`.
    pub top1_ci: [f64; 2],
    pub macs: u64,
}

/// The confidence of every interval `eval` and `calibrate` print.
pub const CONFIDENCE: f64 = 0.95;

/// The 95% Clopper-Pearson interval of k of n, `[lo, hi]`.
pub fn rate_ci(k: usize, n: usize) -> [f64; 2] {
    let i = clopper_pearson(k as u64, n as u64, CONFIDENCE);
    [i.lo, i.hi]
}

/// The cascade against its last stage alone on the same inputs (a paired comparison).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VsLast {
    /// The cascade's top-1 minus the last stage's: (gains - losses) / n.
    pub difference: f64,
    /// Its 95% interval, `[lo, hi]` (Tango's paired score interval).
    pub ci: [f64; 2],
    /// Inputs the cascade got right and the last stage alone wrong.
    pub gains: usize,
    /// Inputs the cascade got wrong and the last stage alone right.
    pub losses: usize,
}

impl VsLast {
    pub fn new(gains: usize, losses: usize, n: usize) -> VsLast {
        let i = paired_difference(gains as u64, losses as u64, n as u64, CONFIDENCE);
        let difference = if n == 0 { 0.0 } else { (gains as f64 - losses as f64) / n as f64 };
        VsLast { difference, ci: [i.lo, i.hi], gains, losses }
    }

    /// E.g. `-0.4 points (95% CI -1.6 to +0.8; 3 gained, 6 lost)`.
    pub fn text(&self) -> String {
        format!(
            "{:+.1} points (95% CI {:+.1} to {:+.1}; {} gained, {} lost)",
            self.difference * 100.0,
            self.ci[0] * 100.0,
            self.ci[1] * 100.0,
            self.gains,
            self.losses
        )
    }
}

/// A rate and its interval as text: `84.3% (95% CI 81.3-86.9)`.
pub fn pct_ci(value: f64, ci: [f64; 2]) -> String {
    format!("{:.1}% (95% CI {:.1}-{:.1})", value * 100.0, ci[0] * 100.0, ci[1] * 100.0)
}

#[derive(Clone, Debug, Serialize)]
pub struct CascadeScore {
    pub top1: f64,
    /// 95% Clopper-Pearson interval of `top1`.
    pub top1_ci: [f64; 2],
    /// Fraction of inputs that went past the first stage.
    pub forwarded: f64,
    /// 95% Clopper-Pearson interval of `forwarded`.
    pub forwarded_ci: [f64; 2],
    /// The cascade against its last stage alone (None for a cascade of one stage).
    pub vs_last: Option<VsLast>,
    pub macs_per_input: f64,
    /// Fraction of inputs answered by each stage.
    pub answered_by: Vec<f64>,
    pub metric: String,
    pub threshold: Option<f32>,
    pub ensemble: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub n: usize,
    /// Images that could not be read or decoded (`errors`, its first name, is the same).
    pub failed: usize,
    pub errors: usize,
    pub models: Vec<ModelScore>,
    pub cascade: CascadeScore,
    /// What the cascade's last stage was scored on (the payload the link carries, e.g.
    /// `crop-jpeg q90`); None for a cascade of one stage.
    pub payload: Option<String>,
}

/// One line of `--predictions`: a model's (or the cascade's) answer on one image.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction<'a> {
    pub file: &'a str,
    pub label: usize,
    pub model: &'a str,
    pub top1: usize,
    pub maxprob: f32,
}

/// Scores the records. `names` and `macs` describe the models in the order of each record's
/// logits; the first `policies.len()` of them are the cascade's stages.
pub fn score(
    records: &[Record],
    errors: usize,
    names: &[String],
    macs: &[u64],
    policies: &[StagePolicy],
    ensemble: bool,
) -> EvalReport {
    let n = records.len();
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let models = names
        .iter()
        .enumerate()
        .map(|(m, name)| {
            let k = records.iter().filter(|r| argmax(&r.logits[m]) == r.label).count();
            ModelScore { name: name.clone(), top1: frac(k), top1_ci: rate_ci(k, n), macs: macs[m] }
        })
        .collect();
    let (mut correct, mut forwarded, mut total_macs) = (0usize, 0usize, 0u64);
    let (mut gains, mut losses) = (0usize, 0usize);
    let last = policies.len().saturating_sub(1);
    let mut answered_by = vec![0usize; policies.len()];
    for r in records {
        let o = cascade_on(r, policies, ensemble);
        let (right, last_right) = (o.class() == r.label, argmax(&r.logits[last]) == r.label);
        correct += right as usize;
        gains += (right && !last_right) as usize;
        losses += (!right && last_right) as usize;
        forwarded += (o.ran > 1) as usize;
        answered_by[o.stage] += 1;
        total_macs += macs[..o.ran].iter().sum::<u64>();
    }
    EvalReport {
        n,
        failed: errors,
        errors,
        models,
        cascade: CascadeScore {
            top1: frac(correct),
            top1_ci: rate_ci(correct, n),
            forwarded: frac(forwarded),
            forwarded_ci: rate_ci(forwarded, n),
            vs_last: (policies.len() > 1).then(|| VsLast::new(gains, losses, n)),
            macs_per_input: if n == 0 { 0.0 } else { total_macs as f64 / n as f64 },
            answered_by: answered_by.into_iter().map(frac).collect(),
            metric: policies.first().map_or(String::new(), |p| p.metric.to_string()),
            threshold: policies.first().and_then(|p| p.threshold),
            ensemble,
        },
        payload: None,
    }
}

/// The cascade's outcome on one record's cached logits.
pub fn cascade_on(r: &Record, policies: &[StagePolicy], ensemble: bool) -> cascade::Outcome {
    cascade::run(policies, ensemble, |i| Ok(r.logits[i].clone())).expect("cached logits never fail")
}

/// Every prediction of every model, and the cascade's, for `--predictions`.
/// The text `eval` prints: images, then each model's and the cascade's top-1 and cost.
pub fn report_text(r: &EvalReport, data: &std::path::Path) -> String {
    let mut t = format!("{} inputs ({} failed) from {}\n", r.n, r.errors, data.display());
    if let Some(p) = &r.payload {
        t += &format!("  (the cascade's last model scored on the {p} payloads the link carries to the host)\n");
    }
    for m in &r.models {
        t += &format!("  {:<28} top-1 {:<26} {:>6.0} M MACs\n", m.name, pct_ci(m.top1, m.top1_ci), m.macs as f64 / 1e6);
    }
    let c = &r.cascade;
    t += &format!(
        "  {:<28} top-1 {:<26} {:>6.0} M MACs per input; forwarded {} ({}{}{})",
        "cascade",
        pct_ci(c.top1, c.top1_ci),
        c.macs_per_input / 1e6,
        pct_ci(c.forwarded, c.forwarded_ci),
        c.metric,
        c.threshold.map_or(String::new(), |t| format!(" at {t}")),
        if c.ensemble { ", ensembled" } else { "" }
    );
    if let (Some(v), Some(last)) = (&c.vs_last, r.models.get(c.answered_by.len().saturating_sub(1))) {
        t += &format!("\n  cascade vs {} alone: {}", last.name, v.text());
    }
    t
}

/// Writes every model's and the cascade's answer per image as CSV (`eval --predictions`).
pub fn write_predictions(w: &mut impl std::io::Write, predictions: &[Prediction]) -> std::io::Result<()> {
    writeln!(w, "file,label,model,top1,maxprob")?;
    for p in predictions {
        writeln!(w, "{},{},{},{},{}", p.file, p.label, p.model, p.top1, p.maxprob)?;
    }
    Ok(())
}

pub fn predictions<'a>(
    records: &'a [Record],
    names: &'a [String],
    policies: &[StagePolicy],
    ensemble: bool,
) -> Vec<Prediction<'a>> {
    let mut out = Vec::new();
    for r in records {
        for (m, name) in names.iter().enumerate() {
            let p = softmax(&r.logits[m], 1.0);
            let top1 = argmax(&p);
            out.push(Prediction { file: &r.input, label: r.label, model: name, top1, maxprob: p[top1] });
        }
        let o = cascade_on(r, policies, ensemble);
        let maxprob = o.verdict.probs[o.class()];
        out.push(Prediction { file: &r.input, label: r.label, model: "cascade", top1: o.class(), maxprob });
    }
    out
}

/// Runs every model on every labeled image, `jobs` images at a time. Returns the records, in
/// order, and an error naming the file for each image that could not be read or decoded.
/// With `host`, that model sees each image as the host would receive it.
pub fn collect(
    models: &[&Model],
    items: &[Labeled],
    jobs: usize,
    host: Option<HostView>,
) -> (Vec<Record>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { return out };
            // The workers spread the images over the cores: each runs its products alone.
            let r = if jobs > 1 { single_threaded(|| record(models, item, host)) } else { record(models, item, host) };
            out.push((i, r));
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(50) || d == items.len() {
                log::info!("evaluated {d}/{} inputs", items.len());
            }
        }
    };
    let mut results: Vec<Option<Result<Record, String>>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.max(1)).map(|_| s.spawn(work)).collect();
        for w in workers {
            for (i, r) in w.join().expect("an evaluation worker panicked") {
                results[i] = Some(r);
            }
        }
    });
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for r in results.into_iter().map(|r| r.expect("every image is evaluated")) {
        match r {
            Ok(r) => records.push(r),
            Err(e) => failures.push(e),
        }
    }
    (records, failures)
}

fn record(models: &[&Model], item: &Labeled, host: Option<HostView>) -> Result<Record, String> {
    let name = item.path.display().to_string();
    let bytes = item.bytes().map_err(|e| format!("{name}: {e}"))?;
    let kind = models.first().map_or(Kind::Image, |m| m.kind());
    let (input, _) = Decoded::read(kind, &bytes).map_err(|e| format!("{name}: {e}"))?;
    let mut spans = Spans::default();
    let mut macs = Vec::with_capacity(models.len());
    let mut logits = Vec::with_capacity(models.len());
    for (i, m) in models.iter().enumerate() {
        let run = match (host.filter(|h| h.stage == i), &input) {
            // An image's host view is the payload's crop; a text input travels as it is.
            (Some(h), Decoded::Image(img)) => {
                let spec = m.manifest.image().map_err(|e| format!("{name}: {e}"))?;
                let crop = payload::host_view(h.payload, &bytes, img, spec)
                    .map_err(|e| format!("{name}: the payload for {} ({}): {e}", m.name(), h.payload))?;
                m.logits_of_crop(&crop, i, &mut spans).map(|l| (l, m.runner.macs()))
            }
            _ => m.run_input(&input, i, &mut spans),
        };
        let (l, spent) = run.map_err(|e| format!("{name}: {}: {e}", m.name()))?;
        logits.push(l);
        macs.push(spent);
    }
    Ok(Record { input: item.name(), label: item.label, logits, macs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::Metric;

    fn rec(label: usize, a: [f32; 3], b: [f32; 3]) -> Record {
        let l = |p: [f32; 3]| p.iter().map(|x| x.ln()).collect();
        Record { input: "x".into(), label, logits: vec![l(a), l(b)], macs: vec![] }
    }

    #[test]
    fn scores_models_and_cascade() {
        let records = vec![
            rec(0, [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]), // small sure and right, big wrong
            rec(1, [0.4, 0.35, 0.25], [0.1, 0.8, 0.1]), // small unsure and wrong, big right
            rec(2, [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]),   // both right, forwarded
        ];
        let policies = vec![
            StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(0.5), temperature: 1.0 },
            StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 },
        ];
        let names = vec!["small".to_string(), "big".to_string()];
        let r = score(&records, 1, &names, &[100, 1000], &policies, false);
        assert_eq!((r.n, r.errors), (3, 1));
        assert!((r.models[0].top1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.models[1].top1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.cascade.top1 - 1.0).abs() < 1e-9);
        assert!((r.cascade.forwarded - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.cascade.macs_per_input - (100.0 + 1100.0 * 2.0) / 3.0).abs() < 1e-9);
        assert_eq!(r.cascade.answered_by.len(), 2);
        // Every figure has its interval around it; the cascade gained one input on big.
        for (v, ci) in [(r.models[0].top1, r.models[0].top1_ci), (r.cascade.top1, r.cascade.top1_ci)] {
            assert!(ci[0] <= v && v <= ci[1], "{v} {ci:?}");
        }
        assert_eq!(r.cascade.top1_ci, rate_ci(3, 3));
        assert!(r.cascade.forwarded_ci[0] <= 2.0 / 3.0 && 2.0 / 3.0 <= r.cascade.forwarded_ci[1]);
        let v = r.cascade.vs_last.clone().unwrap();
        assert_eq!((v.gains, v.losses), (1, 0));
        assert!((v.difference - 1.0 / 3.0).abs() < 1e-9 && v.ci[0] <= v.difference && v.difference <= v.ci[1]);
        assert!(report_text(&r, std::path::Path::new("d")).contains("(95% CI "));
        let p = predictions(&records, &names, &policies, false);
        assert_eq!(p.len(), 9);
        assert_eq!((p[2].model, p[2].top1), ("cascade", 0));
        assert_eq!((p[5].model, p[5].top1), ("cascade", 1));
    }
}
