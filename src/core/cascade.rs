//! The cascade driver: runs an input through the stages in order until one is sure enough,
//! ensembling if asked. It does no I/O of its own: each stage's logits come from a closure,
//! which runs a local model, asks a host over a link, or reads cached logits during
//! evaluation and calibration, so all of them take one decision path.

use crate::core::policy::{decide, softmax, StagePolicy, Verdict};

/// Why a stage gave no logits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageFailure {
    /// The input itself is bad (it does not decode, has the wrong shape): no stage can answer.
    #[error("{0}")]
    Input(String),
    /// The stage cannot answer now (a host down, a link timed out): answer from the stages
    /// that ran, marked degraded.
    #[error("{0}")]
    Unavailable(String),
}

/// The cascade's answer for one input.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Index of the stage that answered.
    pub stage: usize,
    pub verdict: Verdict,
    /// How many stages ran (including one that failed).
    pub ran: usize,
    /// Set when a later stage should have answered but could not; holds why.
    pub degraded: Option<String>,
}

impl Outcome {
    pub fn class(&self) -> usize {
        self.verdict.class
    }
}

/// Runs the cascade. `logits(i)` gives stage i's logits. The first stage's failure is the
/// input's failure; a later stage's `Unavailable` makes the last stage that ran answer,
/// degraded.
pub fn run<F>(policies: &[StagePolicy], ensemble: bool, mut logits: F) -> Result<Outcome, StageFailure>
where
    F: FnMut(usize) -> Result<Vec<f32>, StageFailure>,
{
    let mut history: Vec<Vec<f32>> = Vec::with_capacity(policies.len());
    let mut last: Option<Verdict> = None;
    for (i, policy) in policies.iter().enumerate() {
        let l = match logits(i) {
            Ok(l) => l,
            Err(StageFailure::Unavailable(why)) if i > 0 => {
                let verdict = last.expect("a stage before this one ran");
                return Ok(Outcome { stage: i - 1, verdict, ran: i + 1, degraded: Some(why) });
            }
            Err(e) => return Err(e),
        };
        history.push(softmax(&l, policy.temperature));
        let final_policy;
        let p = if i + 1 == policies.len() {
            final_policy = StagePolicy { threshold: None, ..policy.clone() };
            &final_policy
        } else {
            policy
        };
        let verdict = decide(p, &history, ensemble);
        if verdict.exit {
            return Ok(Outcome { stage: i, verdict, ran: i + 1, degraded: None });
        }
        last = Some(verdict);
    }
    Err(StageFailure::Input("the cascade has no stage".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::Metric;

    fn two_stage(threshold: f32) -> Vec<StagePolicy> {
        vec![
            StagePolicy { metric: Metric::MaxSoftmax, threshold: Some(threshold), temperature: 1.0 },
            StagePolicy { metric: Metric::MaxSoftmax, threshold: None, temperature: 1.0 },
        ]
    }

    // ln of the probabilities, so softmax gives them back.
    fn logits_of(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn confident_first_stage_answers_alone() {
        let mut calls = vec![];
        let o = run(&two_stage(0.5), false, |i| {
            calls.push(i);
            Ok(logits_of(&[0.8, 0.1, 0.1]))
        })
        .unwrap();
        assert_eq!((o.stage, o.class(), o.ran), (0, 0, 1));
        assert_eq!(calls, vec![0]);
        assert!(o.degraded.is_none());
    }

    #[test]
    fn unsure_input_goes_on_and_ensembles() {
        let table = [logits_of(&[0.45, 0.35, 0.2]), logits_of(&[0.1, 0.5, 0.4])];
        let o = run(&two_stage(0.5), false, |i| Ok(table[i].clone())).unwrap();
        assert_eq!((o.stage, o.class()), (1, 1));
        let o = run(&two_stage(0.5), true, |i| Ok(table[i].clone())).unwrap();
        // mean [0.275, 0.425, 0.3]
        assert_eq!((o.stage, o.class()), (1, 1));
        assert!((o.verdict.score - 0.425).abs() < 1e-5);
    }

    #[test]
    fn unavailable_later_stage_degrades_to_the_last_answer() {
        let o = run(&two_stage(0.9), false, |i| match i {
            0 => Ok(logits_of(&[0.2, 0.7, 0.1])),
            _ => Err(StageFailure::Unavailable("host down".into())),
        })
        .unwrap();
        assert_eq!((o.stage, o.class(), o.ran), (0, 1, 2));
        assert_eq!(o.degraded.as_deref(), Some("host down"));
        // The first stage failing is the input's failure, whatever the kind.
        let e = run(&two_stage(0.9), false, |_| Err(StageFailure::Unavailable("x".into()))).unwrap_err();
        assert_eq!(e, StageFailure::Unavailable("x".into()));
    }

    #[test]
    fn three_stages_exit_in_the_middle() {
        let mut p = two_stage(0.9);
        p.insert(1, StagePolicy { metric: Metric::Margin, threshold: Some(0.3), temperature: 1.0 });
        let table = [logits_of(&[0.5, 0.4, 0.1]), logits_of(&[0.7, 0.2, 0.1]), logits_of(&[0.0001, 0.0001, 0.9998])];
        let o = run(&p, false, |i| Ok(table[i].clone())).unwrap();
        assert_eq!((o.stage, o.class(), o.ran), (1, 0, 2));
    }

    #[test]
    fn temperature_changes_the_decision_not_the_class() {
        let mut p = two_stage(0.6);
        let l = logits_of(&[0.7, 0.2, 0.1]);
        let o = run(&p, false, |_| Ok(l.clone())).unwrap();
        assert_eq!(o.stage, 0);
        p[0].temperature = 3.0;
        let o = run(&p, false, |_| Ok(l.clone())).unwrap();
        assert_eq!((o.stage, o.class()), (1, 0));
    }
}
