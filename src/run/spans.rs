//! Stage spans: the named, timed pieces of one input's trip through the cascade (decode,
//! preprocess, inference, decision, and later link transfer and the host's work). Each span
//! is measured with the monotonic clock and reported per input.

use serde::Serialize;
use std::time::Instant;

/// One timed piece of work on one input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub name: &'static str,
    /// The cascade stage the span belongs to, where it belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    pub ms: f64,
    /// When the span began (monotonic clock), to attribute energy to it.
    #[serde(skip)]
    pub start: Option<Instant>,
    /// Energy over the span (`mj`, `mj_above_idle`, `source`, `interpolated`), when measured.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub energy: Option<crate::energy::StageEnergy>,
    /// A `tokenize` span's token count (special tokens included, after truncation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Tokens a `tokenize` span's truncation cut off (absent when the input fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<usize>,
}

/// The spans of one input, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Spans(pub Vec<Span>);

impl Spans {
    /// Runs `f`, records how long it took under `name`, and returns its result.
    pub fn time<T>(&mut self, name: &'static str, stage: Option<usize>, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.push_since(name, stage, start);
        out
    }

    /// Records a span that ran from `start` until now.
    pub fn push_since(&mut self, name: &'static str, stage: Option<usize>, start: Instant) {
        self.0.push(Span {
            name,
            stage,
            ms: start.elapsed().as_secs_f64() * 1e3,
            start: Some(start),
            energy: None,
            tokens: None,
            truncated: None,
        });
    }

    pub fn total_ms(&self) -> f64 {
        self.0.iter().map(|s| s.ms).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_and_sums() {
        let mut s = Spans::default();
        let v = s.time("decode", None, || 7);
        s.time("infer", Some(0), || std::thread::sleep(std::time::Duration::from_millis(2)));
        s.0.push(Span {
            name: "infer",
            stage: Some(1),
            ms: 1.0,
            start: None,
            energy: None,
            tokens: None,
            truncated: None,
        });
        assert_eq!(v, 7);
        assert_eq!(s.0[0].name, "decode");
        assert!(s.0.iter().filter(|x| x.name == "infer").map(|x| x.ms).sum::<f64>() >= 3.0);
        assert!((s.total_ms() - s.0.iter().map(|x| x.ms).sum::<f64>()).abs() < 1e-12);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.starts_with("[{\"name\":\"decode\",\"ms\":"), "{json}");
    }
}
