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
/// i8mm matrix instructions on arm64; AVX2, FMA, AVX-512 and VNNI on x86_64), then the
/// instruction sets tract itself found and the matrix-product kernels it picks with them, e.g.
/// why a Pi 5 (Cortex-A76: dot product) and a Pi 4 (Cortex-A72: NEON only) differ:
/// `aarch64: neon yes, dotprod no, i8mm no, fp16 no; tract isa aarch64: float products
/// arm64simd_mmm_f32_8x8_gen, int8 products arm64simd_mmm_i32_8x8` on a Pi 4, `dotprod yes` and
/// the SDOT kernel `arm64simd_mmm_i32_8x8_dot` on a Pi 5.
pub fn cpu_features() -> String {
    let found = probe_features();
    let list: Vec<String> = found.iter().map(|(n, on)| format!("{n} {}", if *on { "yes" } else { "no" })).collect();
    let list = if list.is_empty() { "no kernel features probed".to_owned() } else { list.join(", ") };
    format!("{}: {list}; {}", std::env::consts::ARCH, tract_kernels())
}

/// The instruction sets tract-linalg probed (its own detection, which `TRACT_CPU_ISA` can edit)
/// and the kernels its dispatch prefers for a float (f32 accumulator) and an integer (i32
/// accumulator: int8 operands) matrix product of a convolution's shape. tract runs the QDQ
/// int8 model's convolutions in float (see FINDINGS), so the float kernel is the one that
/// carries it; the integer kernel serves integer operators such as QLinearConv.
fn tract_kernels() -> String {
    use tract_linalg::{isa, MmmDispatch};
    let isa = isa::native();
    let dispatch = MmmDispatch::native();
    // A pointwise convolution of Lite0's middle blocks: 80 x 480 weights over 14 x 14 pixels.
    let kernel = |acc: DatumType| {
        dispatch
            .preferred_kernel(acc, Some(80), Some(480), Some(196))
            .map_or_else(|| "tract's generic one".to_owned(), |k| k.name().to_owned())
    };
    format!("tract isa {isa:?}: float products {}, int8 products {}", kernel(DatumType::F32), kernel(DatumType::I32))
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
    // The armv7 target does not assume NEON at compile time and std cannot probe it on stable:
    // ask tract, which reads /proc/cpuinfo at run time (under qemu-user, the host's: "no").
    use tract_linalg::isa::{native, Isa};
    vec![("neon", native().has(Isa::ArmNeon))]
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64", target_arch = "arm")))]
fn probe_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

/// Runs a model on one input at a time (batch 1).
pub trait ModelRunner: Send + Sync {
    /// Runs one input (flat, in the shape given at load) and returns the flat first output.
    fn run(&self, input: &[f32]) -> Result<Vec<f32>, RunError>;
    /// Multiply-accumulates per inference.
    fn macs(&self) -> u64;
}

/// A model loaded, checked against its expected input shape and optimised once by tract.
pub struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
    macs: u64,
    outputs: usize,
}

impl TractRunner {
    /// Loads `path`, fixes its input to `shape` (failing if the graph declares another), counts
    /// its multiply-accumulates and optimises it.
    pub fn load(path: &Path, shape: &[usize]) -> Result<TractRunner, RunError> {
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
        model.set_input_fact(0, f32::fact(shape).into()).map_err(not_onnx)?;
        let prepare = |e: TractError| RunError::Prepare { path: path.to_owned(), msg: format!("{e:#}") };
        let typed = model.into_typed().and_then(|m| m.into_decluttered()).map_err(prepare)?;
        let macs = count_macs(&typed).map_err(prepare)?;
        let outputs = typed
            .output_fact(0)
            .map_err(prepare)?
            .shape
            .as_concrete()
            .map(|s| s.iter().product())
            .ok_or_else(|| bad_shape("the output's shape is not fixed".into()))?;
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(prepare)?;
        Ok(TractRunner { plan, shape: shape.to_vec(), macs, outputs })
    }

    /// Number of values in the first output.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// Sums the multiply-accumulate counts tract's cost model gives each node.
fn count_macs(model: &TypedModel) -> TractResult<u64> {
    let mut total = 0i64;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let inputs = model.node_input_facts(id)?;
        for (cost, n) in node.op.cost(&inputs)? {
            if matches!(cost, Cost::FMA(_)) {
                total += n.to_i64()?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_features_name_the_features_and_the_kernels_tract_picks() {
        let s = super::cpu_features();
        assert!(s.starts_with(std::env::consts::ARCH), "{s}");
        assert!(s.contains("; tract isa ") && s.contains("float products") && s.contains("int8 products"), "{s}");
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is baseline on aarch64; tract's int8 products take the NEON SDOT kernel when
            // the CPU has the dot product (a Pi 5's Cortex-A76), never without it (a Pi 4's
            // Cortex-A72). CPUs with SVE2 (qemu's default `max`) get SVE kernels instead.
            use std::arch::is_aarch64_feature_detected as has;
            assert!(s.contains("neon yes"), "{s}");
            if std::env::var_os("TRACT_DOTPROD_DISABLE").is_none() && std::env::var_os("TRACT_CPU_ISA").is_none() {
                let dot = has!("dotprod");
                assert!(s.contains(if dot { "dotprod yes" } else { "dotprod no" }), "{s}");
                if !dot {
                    assert!(s.contains("int8 products arm64simd_mmm_i32_8x8") && !s.contains("_dot"), "{s}");
                } else if !has!("sve2") {
                    assert!(s.contains("int8 products arm64simd_mmm_i32_8x8_dot"), "{s}");
                }
            }
        }
    }
}
