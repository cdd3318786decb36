//! Text models through tract: `input_ids` and `attention_mask` (and `token_type_ids`, zeros,
//! where the graph takes them), int64 `[1, S]`, logits out. tract optimises best for fixed
//! shapes, so a model is prepared once per padding bucket (16, 32, 64, ... tokens, the last the
//! manifest's `max_length`) and each input runs at the smallest bucket that holds it, the
//! padding masked out (the exported graphs mean-pool over the mask, so padding changes no
//! logit: `tests/text.rs` checks them against ONNX Runtime's at the exact length). An input's
//! MACs are its bucket's, the work actually done.

use super::{count_macs, RunError};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// The bucket lengths for a model taking at most `max_length` tokens.
pub fn buckets(max_length: usize) -> Vec<usize> {
    let mut b: Vec<usize> =
        std::iter::successors(Some(16usize), |&n| Some(n * 2)).take_while(|&n| n < max_length).collect();
    b.push(max_length);
    b
}

#[derive(Clone, Copy, PartialEq)]
enum Feed {
    Ids,
    Mask,
    TypeIds,
}

struct Bucket {
    len: usize,
    plan: Arc<TypedRunnableModel>,
    macs: u64,
}

/// A text model prepared at every bucket length.
pub struct TextRunner {
    feeds: Vec<Feed>,
    buckets: Vec<Bucket>,
    outputs: usize,
    pad_id: i64,
}

impl TextRunner {
    /// Loads `path` and prepares it for inputs of up to `max_length` tokens; padding positions
    /// get `pad_id`.
    pub fn load(path: &Path, max_length: usize, pad_id: i64) -> Result<TextRunner, RunError> {
        if !path.is_file() {
            return Err(RunError::Missing { path: path.to_owned() });
        }
        let not_onnx = |e: TractError| RunError::NotOnnx { path: path.to_owned(), msg: format!("{e:#}") };
        let bad_shape = |msg: String| RunError::Shape { path: path.to_owned(), msg };
        let prepare = |e: TractError| RunError::Prepare { path: path.to_owned(), msg: format!("{e:#}") };
        let model = tract_onnx::onnx().model_for_path(path).map_err(not_onnx)?;
        let mut feeds = vec![];
        for outlet in model.input_outlets().map_err(not_onnx)? {
            let name = &model.node(outlet.node).name;
            feeds.push(match name.as_str() {
                "input_ids" => Feed::Ids,
                "attention_mask" => Feed::Mask,
                "token_type_ids" => Feed::TypeIds,
                other => {
                    return Err(bad_shape(format!(
                    "a text model takes input_ids, attention_mask (and token_type_ids); this one also takes {other:?}"
                )))
                }
            });
        }
        if !feeds.contains(&Feed::Ids) {
            return Err(bad_shape("a text model takes input_ids; this one does not".into()));
        }
        let mut prepared = vec![];
        let mut outputs = None;
        for len in buckets(max_length) {
            let mut m = model.clone();
            for i in 0..feeds.len() {
                m.set_input_fact(i, InferenceFact::dt_shape(i64::datum_type(), tvec![1, len])).map_err(prepare)?;
            }
            let typed = m.into_typed().map_err(prepare)?;
            if outputs.is_none() {
                let fact = typed.output_fact(0).map_err(prepare)?;
                outputs = Some(
                    fact.shape
                        .as_concrete()
                        .map(|s| s.iter().product())
                        .ok_or_else(|| bad_shape("the output's shape is not fixed (want [1, classes])".into()))?,
                );
            }
            let macs = count_macs(&typed).map_err(prepare)?;
            let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(prepare)?;
            prepared.push(Bucket { len, plan, macs });
        }
        let outputs = outputs.unwrap_or(0);
        super::release_freed_memory();
        Ok(TextRunner { feeds, buckets: prepared, outputs, pad_id })
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    fn bucket(&self, tokens: usize) -> Result<&Bucket, RunError> {
        self.buckets
            .iter()
            .find(|b| b.len >= tokens)
            .ok_or_else(|| RunError::InputLen { got: tokens, want: self.buckets.last().map_or(0, |b| b.len) })
    }
}

impl super::ModelRunner for TextRunner {
    fn run(&self, _input: &[f32]) -> Result<Vec<f32>, RunError> {
        Err(RunError::Inference("this model takes text (token ids), not an image".into()))
    }

    fn run_tokens(&self, ids: &[i64]) -> Result<Vec<f32>, RunError> {
        let b = self.bucket(ids.len())?;
        let pad = b.len - ids.len();
        let tensor = |v: Vec<i64>| Tensor::from_shape(&[1, b.len], &v).map(|t| t.into_tvalue());
        let mut inputs = TVec::new();
        for f in &self.feeds {
            let v = match f {
                Feed::Ids => ids.iter().copied().chain(std::iter::repeat_n(self.pad_id, pad)).collect(),
                Feed::Mask => std::iter::repeat_n(1, ids.len()).chain(std::iter::repeat_n(0, pad)).collect(),
                Feed::TypeIds => vec![0; b.len],
            };
            inputs.push(tensor(v).map_err(super::inference)?);
        }
        let out = b.plan.run(inputs).map_err(super::inference)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(super::inference)?;
        Ok(view.iter().copied().collect())
    }

    fn macs(&self) -> u64 {
        self.buckets.first().map_or(0, |b| b.macs)
    }

    fn macs_at(&self, tokens: usize) -> u64 {
        self.bucket(tokens).map_or_else(|_| self.buckets.last().map_or(0, |b| b.macs), |b| b.macs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buckets_double_from_16_and_end_at_the_longest_input() {
        assert_eq!(super::buckets(128), vec![16, 32, 64, 128]);
        assert_eq!(super::buckets(100), vec![16, 32, 64, 100]);
        assert_eq!(super::buckets(8), vec![8]);
        assert_eq!(super::buckets(16), vec![16]);
    }
}
