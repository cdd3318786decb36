//! The model-runner seam: `ModelRunner` runs one input tensor through a model and returns
//! its output vector. `TractRunner` is the implementation over tract, and this is the only
//! module that names tract. `ScriptedRunner` answers from a table, for tests and dry runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_hir::infer::Factoid;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("model file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("model file {path} is not a valid ONNX model: {msg}")]
    NotOnnx { path: PathBuf, msg: String },
    #[error("model {path} does not accept the input its manifest describes: {msg}")]
    Shape { path: PathBuf, msg: String },
    #[error("model {path} cannot be prepared for inference: {msg}")]
    Prepare { path: PathBuf, msg: String },
    #[error("input has {got} values, the model takes {want}")]
    InputLen { got: usize, want: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Sets how many threads tract's matrix products use, for every model run afterwards in this
/// process (1: single-threaded, tract's default). Returns the number in force.
pub fn set_threads(n: usize) -> usize {
    use tract_linalg::multithread::{set_default_executor, Executor};
    let n = n.max(1);
    set_default_executor(if n == 1 { Executor::SingleThread } else { Executor::multithread(n) });
    n
}

/// The CPU features that decide which of tract's kernels run here (NEON, dot product and
/// i8mm matrix instructions on arm64; AVX2, FMA, AVX-512 and VNNI on x86_64), e.g. why a Pi 5
/// (Cortex-A76: dot product) outruns a Pi 4 (Cortex-A72: NEON only) by more than its clock.
pub fn cpu_features() -> String {
    let found = probe_features();
    let list: Vec<String> = found.iter().map(|(n, on)| format!("{n} {}", if *on { "yes" } else { "no" })).collect();
    let list = if list.is_empty() { "no kernel features probed".to_owned() } else { list.join(", ") };
    format!("{}: {list}", std::env::consts::ARCH)
}

#[cfg(target_arch = "aarch64")]
fn probe_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_aarch64_feature_detected as has;
    vec![("neon", has!("neon")), ("dotprod", has!("dotprod")), ("i8mm", has!("i8mm")), ("fp16", has!("fp16"))]
}

#[cfg(target_arch = "x86_64")]
fn probe_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_x86_feature_detected as has;
    vec![("avx2", has!("avx2")), ("fma", has!("fma")), ("avx512f", has!("avx512f")), ("avx512vnni", has!("avx512vnni"))]
}

#[cfg(target_arch = "arm")]
fn probe_features() -> Vec<(&'static str, bool)> {
    vec![("neon", cfg!(target_feature = "neon"))]
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64", target_arch = "arm")))]
fn probe_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

/// Runs a model on one input, or on a batch of inputs.
pub trait ModelRunner: Send + Sync {
    /// Runs one input (flat, in the shape given at load) and returns the flat first output.
    fn run(&self, input: &[f32]) -> Result<Vec<f32>, RunError>;
    /// Runs several inputs, each shaped as for `run`, and returns one output per input. The
    /// default runs them one at a time; a runner loaded for batches stacks them along the
    /// first axis and runs them in one pass.
    fn run_batch(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, RunError> {
        inputs.iter().map(|i| self.run(i)).collect()
    }
    /// Multiply-accumulates per inference.
    fn macs(&self) -> u64;
}

/// A model loaded, checked against its expected input shape and optimised once by tract.
pub struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
    macs: u64,
    outputs: usize,
    /// Optimised with a symbolic first axis: `run_batch` runs a whole batch in one pass.
    batched: bool,
}

impl TractRunner {
    /// Loads `path`, fixes its input to `shape` (failing if the graph declares another), counts
    /// its multiply-accumulates and optimises it.
    pub fn load(path: &Path, shape: &[usize]) -> Result<TractRunner, RunError> {
        Self::load_as(path, shape, false)
    }

    /// As `load`, but optimised with a symbolic batch axis (the first of `shape`), so that
    /// `run_batch` runs any number of inputs in one pass: for a host that batches requests.
    pub fn load_batched(path: &Path, shape: &[usize]) -> Result<TractRunner, RunError> {
        Self::load_as(path, shape, true)
    }

    fn load_as(path: &Path, shape: &[usize], batched: bool) -> Result<TractRunner, RunError> {
        if !path.is_file() {
            return Err(RunError::Missing { path: path.to_owned() });
        }
        let not_onnx = |e: TractError| RunError::NotOnnx { path: path.to_owned(), msg: format!("{e:#}") };
        let bad_shape = |msg: String| RunError::Shape { path: path.to_owned(), msg };
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(not_onnx)?;
        if model.input_outlets().map_err(not_onnx)?.len() != 1 {
            return Err(bad_shape("it does not have exactly one input".into()));
        }
        let declared = model.input_fact(0).map_err(not_onnx)?.clone();
        let dims: Vec<Option<i64>> =
            declared.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
        let matches =
            dims.len() == shape.len() && dims.iter().zip(shape).all(|(d, &s)| d.is_none_or(|d| d == s as i64));
        if declared.shape.dims().next().is_some() && !matches {
            let shown: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
            return Err(bad_shape(format!("the graph's input is [{}], the manifest says {shape:?}", shown.join(","))));
        }
        let prepare = |e: TractError| RunError::Prepare { path: path.to_owned(), msg: format!("{e:#}") };
        let batch = batched.then(|| model.symbols.sym("N"));
        let fact: InferenceFact = match &batch {
            Some(n) if !shape.is_empty() => {
                let dims: TVec<TDim> =
                    std::iter::once(n.to_dim()).chain(shape[1..].iter().map(|&d| d.to_dim())).collect();
                InferenceFact::dt_shape(f32::datum_type(), dims)
            }
            _ => f32::fact(shape).into(),
        };
        model.set_input_fact(0, fact).map_err(not_onnx)?;
        // The output's own declared shape (batch 1) would contradict a symbolic batch, and so
        // would a flatten exported as a fixed `Reshape [1, -1]`.
        if batched {
            model.set_output_fact(0, InferenceFact::default()).map_err(not_onnx)?;
            free_batch_in_reshapes(&mut model).map_err(prepare)?;
        }
        let typed = model.into_typed().and_then(|m| m.into_decluttered()).map_err(prepare)?;
        // Counts and sizes are per input: a symbolic batch counts as 1.
        let one = match &batch {
            Some(n) => SymbolValues::default().with(n, 1),
            None => SymbolValues::default(),
        };
        let macs = count_macs(&typed, &one).map_err(prepare)?;
        let out_shape = &typed.output_fact(0).map_err(prepare)?.shape;
        let outputs = out_shape
            .iter()
            .map(|d| d.eval(&one).to_i64().ok().map(|d| d as usize))
            .product::<Option<usize>>()
            .ok_or_else(|| bad_shape("the output's shape is not fixed".into()))?;
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(prepare)?;
        Ok(TractRunner { plan, shape: shape.to_vec(), macs, outputs, batched })
    }

    /// Number of values in the first output.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// Rewrites every `Reshape` whose target shape is a constant `[1, ...]` (an exporter's
/// flatten traced at batch 1) to `[0, ...]`, ONNX's "keep this axis": the batch passes through.
fn free_batch_in_reshapes(model: &mut InferenceModel) -> TractResult<usize> {
    use tract_onnx::tract_hir::ops::konst::Const;
    let mut patched = 0;
    for id in 0..model.nodes().len() {
        let node = &model.nodes()[id];
        if node.op.name() != "Reshape" || node.inputs.len() < 2 {
            continue;
        }
        let src = node.inputs[1];
        let Some(k) = model.nodes()[src.node].op_as::<Const>() else { continue };
        let t = k.val();
        if t.datum_type() != i64::datum_type() || t.rank() != 1 {
            continue;
        }
        let mut shape: Vec<i64> = t.to_plain_array_view::<i64>()?.iter().copied().collect();
        if shape.first() != Some(&1) {
            continue;
        }
        shape[0] = 0;
        let freed = tensor1(&shape).into_arc_tensor();
        model.nodes_mut()[src.node].op = Box::new(Const::new(freed.clone())?);
        model.set_outlet_fact(src, TypedFact::try_from(freed)?.into())?;
        patched += 1;
    }
    Ok(patched)
}

/// Sums the multiply-accumulate counts tract's cost model gives each node, with `values` for
/// its symbols.
fn count_macs(model: &TypedModel, values: &SymbolValues) -> TractResult<u64> {
    let mut total = 0i64;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let inputs = model.node_input_facts(id)?;
        for (cost, n) in node.op.cost(&inputs)? {
            if matches!(cost, Cost::FMA(_)) {
                total += n.eval(values).to_i64()?;
            }
        }
    }
    Ok(total.max(0) as u64)
}

impl ModelRunner for TractRunner {
    fn run(&self, input: &[f32]) -> Result<Vec<f32>, RunError> {
        let want: usize = self.shape.iter().product();
        if input.len() != want {
            return Err(RunError::InputLen { got: input.len(), want });
        }
        let tensor = Tensor::from_shape(&self.shape, input).map_err(|e| RunError::Inference(format!("{e:#}")))?;
        let out = self.plan.run(tvec!(tensor.into_tvalue())).map_err(|e| RunError::Inference(format!("{e:#}")))?;
        let view = out[0].to_plain_array_view::<f32>().map_err(|e| RunError::Inference(format!("{e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    fn run_batch(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, RunError> {
        if !self.batched || inputs.len() < 2 {
            return inputs.iter().map(|i| self.run(i)).collect();
        }
        let want: usize = self.shape.iter().product();
        let mut flat = Vec::with_capacity(want * inputs.len());
        for i in inputs {
            if i.len() != want {
                return Err(RunError::InputLen { got: i.len(), want });
            }
            flat.extend_from_slice(i);
        }
        let mut shape = self.shape.clone();
        shape[0] = inputs.len();
        let err = |e: TractError| RunError::Inference(format!("{e:#}"));
        let tensor = Tensor::from_shape(&shape, &flat).map_err(err)?;
        let out = self.plan.run(tvec!(tensor.into_tvalue())).map_err(err)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(err)?;
        let all: Vec<f32> = view.iter().copied().collect();
        if all.len() != self.outputs * inputs.len() {
            return Err(RunError::Inference(format!(
                "a batch of {} gave {} outputs, expected {} per input",
                inputs.len(),
                all.len(),
                self.outputs
            )));
        }
        Ok(all.chunks(self.outputs).map(|c| c.to_vec()).collect())
    }

    fn macs(&self) -> u64 {
        self.macs
    }
}

/// A runner that answers from a table keyed by the input's first value, for tests and dry
/// runs without model files. An input not in the table is an inference error.
pub struct ScriptedRunner {
    pub answers: HashMap<u32, Vec<f32>>,
    pub macs: u64,
}

impl ModelRunner for ScriptedRunner {
    fn run(&self, input: &[f32]) -> Result<Vec<f32>, RunError> {
        let key = input.first().map_or(0, |v| v.to_bits());
        self.answers.get(&key).cloned().ok_or_else(|| RunError::Inference(format!("no scripted answer for {key:#x}")))
    }

    fn macs(&self) -> u64 {
        self.macs
    }
}
