//! The model-runner seam: `ModelRunner` runs one input tensor through a model and returns
//! its output vector. `TractRunner` is the implementation over tract; with its submodules (the
//! int8 rewrite of QDQ graphs in `rewrite`, its integer ops in `ops`, the kernel choice in
//! `dispatch`, the CPU probe in `cpu`) it is the only code that names tract. `ScriptedRunner`
//! answers from a table, for tests and dry runs.

pub mod cpu;
pub mod dispatch;
pub mod ops;
pub mod pool;
pub mod quantize;
pub mod rewrite;
pub mod text;
pub mod tract_gemm;

pub use cpu::cpu_features;
pub use dispatch::{ForcedKernels, KernelNameError, KernelOptions};
pub use pool::single_threaded;

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
    THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
    n
}

static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The number of threads `set_threads` put in force (1 before it is called).
pub fn threads() -> usize {
    THREADS.load(std::sync::atomic::Ordering::Relaxed)
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
    /// Prepares whatever batches up to `max` need, so the first ones do not wait for it, and
    /// returns the largest batch worth running at once (1: run inputs one at a time). With
    /// `measure` false every size up to `max` is taken as worth it, untimed.
    fn warm_batches(&self, _max: usize, _measure: bool) -> Result<usize, RunError> {
        Ok(1)
    }
    /// Runs a text model on one input's token ids (special tokens included, at most the
    /// model's length); image models refuse.
    fn run_tokens(&self, _ids: &[i64]) -> Result<Vec<f32>, RunError> {
        Err(RunError::Inference("this model takes images, not text".into()))
    }
    /// Multiply-accumulates per inference (a text model's at its shortest bucket).
    fn macs(&self) -> u64;
    /// Multiply-accumulates of an input of `tokens` tokens (a text model's work depends on
    /// the length; an image model's does not).
    fn macs_at(&self, _tokens: usize) -> u64 {
        self.macs()
    }
    /// Which kernels run the model's int8 products and how they were chosen, where that applies.
    fn kernels(&self) -> Option<&str> {
        None
    }
    /// Where one inference's time goes: per kind of op (or, with `per_node`, per node: its op
    /// and name), how many nodes of that kind ran and their mean time per inference in ms over
    /// `runs` runs of `input` (after one warm-up), slowest first. Empty for runners that cannot
    /// tell.
    fn profile(&self, _input: &[f32], _runs: usize, _per_node: bool) -> Result<Vec<OpTime>, RunError> {
        Ok(vec![])
    }
}

/// One line of a profile: a kind of op, how many nodes of it, mean ms per inference.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    pub op: String,
    pub nodes: usize,
    pub ms: f64,
}

/// A model loaded, checked against its expected input shape and optimised once by tract.
pub struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
    /// How the int8 products' kernels were chosen (none for models without them).
    kernels: Option<String>,
    macs: u64,
    outputs: usize,
    /// Loaded for batches: a plan per batch size.
    batches: Option<Batches>,
}

/// tract optimises best for fixed shapes (a symbolic batch axis ran batch 1 about 5x slower
/// here), so a runner loaded for batches keeps one plan per batch size, built on first use
/// (or by `warm_batches`), and runs a batch as power-of-two chunks.
struct Batches {
    path: PathBuf,
    opts: RunnerOptions,
    plans: std::sync::Mutex<HashMap<usize, Arc<TypedRunnableModel>>>,
    /// The largest batch size whose plan, measured by `warm_batches`, runs an input faster
    /// than single runs do; 1 when none does (then batches run one input at a time).
    best: std::sync::atomic::AtomicUsize,
}

impl Batches {
    fn plans(&self) -> Result<std::sync::MutexGuard<'_, HashMap<usize, Arc<TypedRunnableModel>>>, RunError> {
        self.plans.lock().map_err(|_| RunError::Inference("a thread failed while preparing batches".into()))
    }
}

/// A failure while running a model.
fn inference(e: TractError) -> RunError {
    RunError::Inference(format!("{e:#}"))
}

/// How a model is loaded and run: options that arrive as values from the command line (or a
/// test), never read from the environment here.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// QDQ models run on the int8 rewrite (true, the default) or on tract's own path (float
    /// products between quantize and dequantize steps: for comparison).
    pub int8_rewrite: bool,
    /// How the int8 rewrite's kernels are chosen.
    pub kernels: KernelOptions,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions { int8_rewrite: true, kernels: KernelOptions::default() }
    }
}

impl TractRunner {
    /// Loads `path`, fixes its input to `shape` (failing if the graph declares another), counts
    /// its multiply-accumulates and optimises it.
    pub fn load(path: &Path, shape: &[usize], opts: &RunnerOptions) -> Result<TractRunner, RunError> {
        Self::load_as(path, shape, false, opts)
    }

    /// As `load`, but ready to run batches (the first axis of `shape` free): for a host that
    /// batches requests.
    pub fn load_batched(path: &Path, shape: &[usize], opts: &RunnerOptions) -> Result<TractRunner, RunError> {
        Self::load_as(path, shape, true, opts)
    }

    fn load_as(path: &Path, shape: &[usize], batched: bool, opts: &RunnerOptions) -> Result<TractRunner, RunError> {
        let (typed, kernels) = typed_model(path, shape, batched, opts)?;
        let prepare = |e: TractError| RunError::Prepare { path: path.to_owned(), msg: format!("{e:#}") };
        let macs = count_macs(&typed).map_err(prepare)?;
        let outputs =
            typed.output_fact(0).map_err(prepare)?.shape.as_concrete().map(|s| s.iter().product()).ok_or_else(
                || RunError::Shape { path: path.to_owned(), msg: "the output's shape is not fixed".into() },
            )?;
        let t = std::time::Instant::now();
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(prepare)?;
        log::debug!("{}: optimised in {:.1} ms", path.display(), t.elapsed().as_secs_f64() * 1e3);
        let batches = batched.then(|| Batches {
            path: path.to_owned(),
            opts: opts.clone(),
            plans: std::sync::Mutex::new(HashMap::from([(1, plan.clone())])),
            best: std::sync::atomic::AtomicUsize::new(usize::MAX),
        });
        release_freed_memory();
        Ok(TractRunner { plan, shape: shape.to_vec(), kernels, macs, outputs, batches })
    }

    /// The plan for batches of `n` (built on first use, then kept).
    fn batch_plan(&self, n: usize) -> Result<Arc<TypedRunnableModel>, RunError> {
        let Some(b) = &self.batches else { return Err(RunError::Inference("not loaded for batches".into())) };
        if let Some(p) = b.plans()?.get(&n) {
            return Ok(p.clone());
        }
        let mut shape = self.shape.clone();
        shape[0] = n;
        let started = std::time::Instant::now();
        let plan = typed_model(&b.path, &shape, true, &b.opts)?
            .0
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| RunError::Prepare { path: b.path.clone(), msg: format!("{e:#}") })?;
        log::info!("{}: prepared batches of {n} in {:.1} s", b.path.display(), started.elapsed().as_secs_f64());
        b.plans()?.insert(n, plan.clone());
        Ok(plan)
    }

    /// Number of values in the first output.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// Gives the heap memory freed once a model is loaded back to the system: loading holds the
/// parsed file, tract's intermediate graphs and (for QDQ models) float copies of the weights
/// for a moment, and glibc's allocator keeps what was freed unless asked.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only hands free pages of the heap back to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Parses `path`, checks its declared input against `shape`, fixes the input to `shape` and
/// declutters. With `free_batch`, the first axis of `shape` may differ from the graph's
/// declared batch (its output's declared shape and any fixed flatten are freed).
/// Also returns how the int8 kernels were chosen, for a QDQ model on the int8 rewrite.
fn typed_model(
    path: &Path,
    shape: &[usize],
    free_batch: bool,
    opts: &RunnerOptions,
) -> Result<(TypedModel, Option<String>), RunError> {
    if !path.is_file() {
        return Err(RunError::Missing { path: path.to_owned() });
    }
    let not_onnx = |e: TractError| RunError::NotOnnx { path: path.to_owned(), msg: format!("{e:#}") };
    let bad_shape = |msg: String| RunError::Shape { path: path.to_owned(), msg };
    // The file is read and decoded once: its checksum keys the kernel choices, and the int8
    // rewrite takes the QDQ weights from its initializers before tract builds its graph.
    let t = std::time::Instant::now();
    let phase = |what: &str, t: &mut std::time::Instant| {
        log::debug!("{}: {what} in {:.1} ms", path.display(), t.elapsed().as_secs_f64() * 1e3);
        *t = std::time::Instant::now();
    };
    let mut t = t;
    let bytes = std::fs::read(path).map_err(|e| not_onnx(e.into()))?;
    let onnx = tract_onnx::onnx();
    let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(not_onnx)?;
    let dir = path.parent().and_then(|d| d.to_str());
    phase("read and decoded", &mut t);
    let int8 = opts.int8_rewrite && rewrite::is_qdq(&proto);
    let (chains, skipped) =
        if int8 { rewrite::rewrite_proto(&mut proto, dir).map_err(not_onnx)? } else { (vec![], vec![]) };
    let sha = int8.then(|| {
        use sha2::{Digest, Sha256};
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    drop(bytes);
    if free_batch {
        // Shapes recorded in the file (an exporter's value_info) hold the batch it was traced at.
        if let Some(g) = proto.graph.as_mut() {
            g.value_info.clear();
        }
    }
    phase("rewritten (ONNX)", &mut t);
    let parsed = onnx.parse(&proto, dir).map_err(not_onnx)?;
    drop(proto);
    if !parsed.unresolved_inputs.is_empty() {
        return Err(not_onnx(TractError::msg(format!(
            "unresolved inputs at top level: {:?}",
            parsed.unresolved_inputs
        ))));
    }
    let mut model = parsed.model;
    rewrite::install(&mut model, &chains).map_err(not_onnx)?;
    let adds = chains.iter().filter(|c| matches!(c.op, rewrite::ChainOp::Add(_))).count();
    drop(chains);
    phase("parsed", &mut t);
    if model.input_outlets().map_err(not_onnx)?.len() != 1 {
        return Err(bad_shape("it does not have exactly one input".into()));
    }
    let declared = model.input_fact(0).map_err(not_onnx)?.clone();
    let dims: Vec<Option<i64>> = declared.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
    let skip = free_batch as usize;
    let matches =
        dims.len() == shape.len() && dims.iter().zip(shape).skip(skip).all(|(d, &s)| d.is_none_or(|d| d == s as i64));
    if declared.shape.dims().next().is_some() && !matches {
        let shown: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
        return Err(bad_shape(format!("the graph's input is [{}], the manifest says {shape:?}", shown.join(","))));
    }
    let prepare = |e: TractError| RunError::Prepare { path: path.to_owned(), msg: format!("{e:#}") };
    model.set_input_fact(0, f32::fact(shape).into()).map_err(not_onnx)?;
    if free_batch {
        model.set_output_fact(0, InferenceFact::default()).map_err(not_onnx)?;
        free_batch_in_reshapes(&mut model).map_err(prepare)?;
    }
    let mut typed = model.into_typed().map_err(prepare)?;
    phase("typed", &mut t);
    let mut kernels = None;
    if let Some(sha) = sha {
        let (kinds, choices) = choose_kernels(&mut typed, &sha, &opts.kernels)
            .map_err(|msg| RunError::Prepare { path: path.to_owned(), msg })?;
        let report = rewrite::report(&kinds, adds, skipped);
        log::info!(
            "{}: int8 rewrite: {} chains on integer kernels ({} depthwise, {} matrix, {} im2col convolutions, {} additions), {} products left in float; kernels: {}",
            path.display(),
            report.rewritten(),
            report.depthwise,
            report.matmul,
            report.im2col,
            report.add,
            report.skipped.len(),
            choices.summary()
        );
        phase("kernels chosen", &mut t);
        kernels = Some(choices.summary());
    }
    let typed = typed.into_decluttered().map_err(prepare)?;
    phase("decluttered", &mut t);
    Ok((typed, kernels))
}

/// Chooses the kernel of every int8 product of `model` (typed: every shape known) and puts
/// each product on it. Returns the products' kinds, in graph order, and how they were chosen.
fn choose_kernels(
    model: &mut TypedModel,
    model_sha256: &str,
    kernels: &KernelOptions,
) -> Result<(Vec<ops::Kind>, dispatch::Choices), String> {
    let pending: Vec<(usize, Arc<ops::ProductSpec>)> = model
        .eval_order()
        .map_err(|e| format!("{e:#}"))?
        .into_iter()
        .filter_map(|id| model.node(id).op_as::<ops::PendingProduct>().map(|p| (id, p.0.clone())))
        .collect();
    let specs: Vec<Arc<ops::ProductSpec>> = pending.iter().map(|(_, s)| s.clone()).collect();
    let (engines, choices) = dispatch::choose(&specs, model_sha256, kernels)?;
    for ((id, spec), (engine, split)) in pending.into_iter().zip(engines) {
        model.node_mut(id).op = Box::new(ops::Int8Product::new(Arc::new(spec.without_weights()), engine, split));
    }
    Ok((specs.iter().map(|s| s.kind).collect(), choices))
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
        let tensor = Tensor::from_shape(&self.shape, input).map_err(inference)?;
        let out = ops::in_pool(|| self.plan.run(tvec!(tensor.into_tvalue()))).map_err(inference)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(inference)?;
        Ok(view.iter().copied().collect())
    }

    fn run_batch(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, RunError> {
        let best = self.batches.as_ref().map_or(1, |b| b.best.load(std::sync::atomic::Ordering::Relaxed));
        if best < 2 || inputs.len() < 2 {
            return inputs.iter().map(|i| self.run(i)).collect();
        }
        let want: usize = self.shape.iter().product();
        if let Some(i) = inputs.iter().find(|i| i.len() != want) {
            return Err(RunError::InputLen { got: i.len(), want });
        }
        let mut outs = Vec::with_capacity(inputs.len());
        let mut rest = inputs;
        while !rest.is_empty() {
            // The largest power of two that fits (and pays): few plans, no padding.
            let n = 1usize << rest.len().min(best).ilog2();
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let plan = self.batch_plan(n)?;
            let mut shape = self.shape.clone();
            shape[0] = n;
            let flat: Vec<f32> = chunk.iter().flat_map(|i| i.iter().copied()).collect();
            let tensor = Tensor::from_shape(&shape, &flat).map_err(inference)?;
            let out = ops::in_pool(|| plan.run(tvec!(tensor.into_tvalue()))).map_err(inference)?;
            let view = out[0].to_plain_array_view::<f32>().map_err(inference)?;
            let all: Vec<f32> = view.iter().copied().collect();
            if all.len() != self.outputs * n {
                return Err(RunError::Inference(format!(
                    "a batch of {n} gave {} outputs, expected {} per input",
                    all.len(),
                    self.outputs
                )));
            }
            outs.extend(all.chunks(self.outputs).map(|c| c.to_vec()));
        }
        Ok(outs)
    }

    /// Builds the plans for batches up to `max` and times each against single runs on the
    /// same zero inputs: only sizes that run an input faster are used. (tract runs these
    /// depthwise-heavy convolution nets slower per input in batches on the CPUs measured so
    /// far; a batching host then still queues and bounds its work, but runs inputs singly.)
    /// Unmeasured, it builds the plans of every power of two up to `max` and uses them all.
    fn warm_batches(&self, max: usize, measure: bool) -> Result<usize, RunError> {
        use std::time::Instant;
        let Some(b) = &self.batches else { return Ok(1) };
        if !measure {
            let mut n = 2;
            while n <= max {
                self.batch_plan(n)?;
                n *= 2;
            }
            b.best.store(max.max(1), std::sync::atomic::Ordering::Relaxed);
            return Ok(max.max(1));
        }
        let per_input = |n: usize| -> Result<f64, RunError> {
            let plan = self.batch_plan(n)?;
            let mut shape = self.shape.clone();
            shape[0] = n;
            let t = Tensor::zero::<f32>(&shape).map_err(inference)?;
            let mut best = f64::MAX;
            for _ in 0..3 {
                let start = Instant::now();
                ops::in_pool(|| plan.run(tvec!(t.clone().into_tvalue()))).map_err(inference)?;
                best = best.min(start.elapsed().as_secs_f64() / n as f64);
            }
            Ok(best)
        };
        let single = per_input(1)?;
        let mut chosen = 1;
        let mut n = 2;
        while n <= max {
            let each = per_input(n)?;
            log::info!(
                "{}: batches of {n} take {:.1} ms per input, single runs {:.1} ms",
                b.path.display(),
                each * 1e3,
                single * 1e3
            );
            if each < single * 0.95 {
                chosen = n;
            } else if n >= 4 {
                break;
            }
            n *= 2;
        }
        b.best.store(chosen, std::sync::atomic::Ordering::Relaxed);
        // Plans that will not be used only hold memory.
        b.plans()?.retain(|&n, _| n <= chosen);
        if chosen == 1 {
            log::info!("{}: batched plans are not faster here; requests run one input at a time", b.path.display());
        }
        Ok(chosen)
    }

    fn macs(&self) -> u64 {
        self.macs
    }

    fn kernels(&self) -> Option<&str> {
        self.kernels.as_deref()
    }

    fn profile(&self, input: &[f32], runs: usize, per_node: bool) -> Result<Vec<OpTime>, RunError> {
        use std::time::Instant;
        let want: usize = self.shape.iter().product();
        if input.len() != want {
            return Err(RunError::InputLen { got: input.len(), want });
        }
        let tensor = Tensor::from_shape(&self.shape, input).map_err(inference)?;
        let mut state = self.plan.spawn().map_err(inference)?;
        let mut by_op: HashMap<String, (f64, std::collections::HashSet<usize>)> = HashMap::new();
        for run in 0..=runs {
            state
                .run_plan_with_eval(tvec!(tensor.clone().into_tvalue()), |ctx, st, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                    if run > 0 {
                        let key = if per_node {
                            format!("{} {}", node.op.name(), node.name)
                        } else {
                            node.op.name().to_string()
                        };
                        let e = by_op.entry(key).or_default();
                        e.0 += t.elapsed().as_secs_f64() * 1e3;
                        e.1.insert(node.id);
                    }
                    out
                })
                .map_err(inference)?;
        }
        let mut out: Vec<OpTime> = by_op
            .into_iter()
            .map(|(op, (ms, nodes))| OpTime { op, nodes: nodes.len(), ms: ms / runs.max(1) as f64 })
            .collect();
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(out)
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
