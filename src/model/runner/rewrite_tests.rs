//! Tests of `rewrite.rs`.

use super::super::ops::{Int8Add, Int8Product, Quantizer};
use super::super::{dispatch, KernelOptions, RunnerOptions, TractRunner};
use super::*;
use crate::core::policy::argmax;
use crate::model::manifest::Manifest;
use crate::model::preprocess;
use crate::model::runner::ModelRunner;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const LITE0: &str = "models/efficientnet-lite0-int8.onnx";

fn proto(name: &str) -> ModelProto {
    tract_onnx::onnx().proto_model_for_path(root().join(name)).unwrap()
}

fn dir() -> String {
    root().join("models").to_string_lossy().into_owned()
}

/// Lite0 int8 as tract runs it without the rewrite, typed.
fn unrewritten() -> TypedModel {
    let mut m = tract_onnx::onnx().model_for_path(root().join(LITE0)).unwrap();
    m.set_input_fact(0, f32::fact([1, 3, 224, 224]).into()).unwrap();
    m.into_typed().unwrap()
}

fn runner(opts: &RunnerOptions) -> TractRunner {
    TractRunner::load(&root().join(LITE0), &[1, 3, 224, 224], opts).unwrap()
}

/// The demo photos (photos/, in the repository), preprocessed for Lite0.
fn photo_inputs() -> Vec<(String, Vec<f32>)> {
    let manifest = Manifest::load(&root().join("models/efficientnet-lite0-int8.toml")).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "photos/ has {} images", files.len());
    files
        .iter()
        .map(|f| {
            let img = preprocess::decode(&std::fs::read(f).unwrap()).unwrap();
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                preprocess::to_tensor(&img, manifest.image().unwrap()),
            )
        })
        .collect()
}

fn tensor(input: &[f32]) -> TValue {
    Tensor::from_shape(&[1, 3, 224, 224], input).unwrap().into_tvalue()
}

/// Every rewritten layer, fed the int8 tensor tract's own (unrewritten) run of the model
/// computed at its input, on every kernel this CPU can run for it: all kernels give the same
/// int8 outputs, bit for bit, and those equal what the unrewritten chain (DequantizeLinear,
/// float product, QuantizeLinear) gave at its output, to one quantization step, on every
/// photo.
#[test]
fn every_rewritten_layer_matches_its_float_chain_on_every_kernel() {
    let (chains, skipped) = rewrite_proto(&mut proto(LITE0), Some(&dir())).unwrap();
    assert!(skipped.is_empty(), "left in float: {skipped:?}");
    let mut probe = unrewritten();
    let input = probe.input_outlets().unwrap()[0];
    let outlet = |name: &str| {
        probe
            .find_outlet_label(name)
            .or_else(|| (probe.node(input.node).name == name).then_some(input))
            .unwrap_or_else(|| panic!("no tensor {name}"))
    };
    let mut names: Vec<&str> =
        chains.iter().flat_map(|c| c.x.iter().map(|s| s.as_str()).chain([c.y.as_str()])).collect();
    names.sort();
    names.dedup();
    let outlets: Vec<OutletId> = names.iter().map(|n| outlet(n)).collect();
    let shapes: Vec<TVec<usize>> =
        outlets.iter().map(|&o| probe.outlet_fact(o).unwrap().shape.as_concrete().unwrap().into()).collect();
    probe.select_output_outlets(&outlets).unwrap();
    let plan = probe.into_runnable().unwrap();
    let at_name = |n: &str| names.iter().position(|x| *x == n).unwrap();
    // Every chain's op on every kernel (built once); the kinds as the shapes make them.
    let mut kinds = vec![];
    let ops: Vec<Vec<(String, Box<dyn TypedOp>)>> = chains
        .iter()
        .map(|c| match &c.op {
            ChainOp::Product(p) => {
                let spec = Arc::new(p.spec(&shapes[at_name(&c.x[0])]).unwrap());
                kinds.push(spec.kind);
                dispatch::candidates(spec.kind)
                    .into_iter()
                    .map(|k| {
                        let e = dispatch::build(&spec, k).unwrap();
                        (k.to_owned(), Box::new(Int8Product::new(spec.clone(), e, true)) as Box<dyn TypedOp>)
                    })
                    .collect()
            }
            ChainOp::Add(a) => {
                let op = Int8Add::new(a.clone(), shapes[at_name(&c.x[0])].clone());
                vec![("add".to_owned(), Box::new(op) as Box<dyn TypedOp>)]
            }
            &ChainOp::Quantize { inv_scale, zero_point } => {
                vec![("quantize".to_owned(), Box::new(Quantizer::Quantize { inv_scale, zero_point }) as _)]
            }
            &ChainOp::Dequantize { scale, zero_point } => {
                vec![("dequantize".to_owned(), Box::new(Quantizer::Dequantize { scale, zero_point }) as _)]
            }
        })
        .collect();
    let adds = chains.iter().filter(|c| matches!(c.op, ChainOp::Add(_))).count();
    let quantizers = chains.len() - kinds.len() - adds;
    // Quantizations of the input, the pooled features and their flattened copy;
    // dequantizations before the pooling, before the flatten and of the logits.
    assert_eq!(quantizers, 6, "{:?}", chains.iter().map(|c| &c.name).collect::<Vec<_>>());
    // Lite0: 16 depthwise convolutions; 32 pointwise ones and the classifier; the stem;
    // 9 residual additions.
    let r = report(&kinds, adds, vec![]);
    assert_eq!((r.depthwise, r.matmul, r.im2col, r.add), (16, 33, 1, 9));
    let kernels: std::collections::BTreeSet<&str> = ops.iter().flatten().map(|(k, _)| k.as_str()).collect();
    eprintln!("kernels compared on every layer: {kernels:?}");
    let (mut values, mut off_by_one, mut worst_layer) = (0usize, 0usize, (0usize, String::new()));
    for (file, input) in photo_inputs() {
        let outs = plan.run(tvec!(tensor(&input))).unwrap();
        let at = |n: &str| outs[at_name(n)].clone();
        for (chain, ops) in chains.iter().zip(&ops) {
            if let ChainOp::Dequantize { .. } = chain.op {
                let got = ops[0].1.eval_out_of_plan(tvec!(at(&chain.x[0]))).unwrap().unwrap();
                let (g, w) = (got[0].try_as_plain_ram().unwrap(), at(&chain.y));
                let w = w.try_as_plain_ram().unwrap();
                assert_eq!(g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap(), "{}", chain.name);
                continue;
            }
            let want = i8s(&at(&chain.y)).unwrap();
            let mut first: Option<(&str, Vec<i8>)> = None;
            for (kernel, op) in ops {
                let got = op.eval_out_of_plan(chain.x.iter().map(|x| at(x)).collect()).unwrap().unwrap();
                let got = i8s(&got[0]).unwrap();
                match &first {
                    Some((k0, g0)) => {
                        assert!(*g0 == got, "{} on {file}: kernel {kernel} differs from kernel {k0}", chain.name)
                    }
                    None => first = Some((kernel, got)),
                }
            }
            let (_, got) = first.unwrap();
            assert_eq!(got.len(), want.len());
            let mut off = 0;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let d = (*g as i32 - *w as i32).abs();
                assert!(d <= 1, "{} on {file}: value {i} is {g}, the float chain gives {w}", chain.name);
                off += d as usize;
            }
            values += got.len();
            off_by_one += off;
            if off > worst_layer.0 {
                worst_layer = (off, chain.name.clone());
            }
        }
    }
    eprintln!(
        "{} rewritten chains x 5 photos: {off_by_one} of {values} int8 values one step off the float chain ({:.4}%), \
         the rest equal; most in one layer on one photo: {} in {}",
        chains.len(),
        100.0 * off_by_one as f64 / values as f64,
        worst_layer.0,
        worst_layer.1
    );
    // Off-by-one values are ties and near-ties of the float rounding; they must stay rare.
    assert!((off_by_one as f64) < 0.01 * values as f64, "{off_by_one} of {values} values off by one");
}

/// The whole rewritten model against tract's own run of it: the same class on every photo,
/// logits a few output steps apart at most (per-layer steps compound over 50 layers), and
/// no float product left.
#[test]
fn rewritten_model_agrees_with_the_unrewritten_one() {
    let a = unrewritten().into_optimized().unwrap().into_runnable().unwrap();
    let b = runner(&RunnerOptions::default());
    let ops: Vec<String> = b.plan.model().nodes().iter().map(|n| n.op.name().to_string()).collect();
    let count = |p: &str| ops.iter().filter(|n| n.starts_with(p)).count();
    assert_eq!(count("Int8") - count("Int8Quantize") - count("Int8Dequantize"), 59, "{ops:?}");
    assert_eq!((count("Int8Quantize"), count("Int8Dequantize")), (3, 3), "{ops:?}");
    assert!(!ops.iter().any(|n| (n.contains("Conv") || n.contains("MatMul")) && !n.starts_with("Int8")), "{ops:?}");
    const STEP: f32 = 0.0737;
    let mut worst = 0f32;
    for (file, input) in photo_inputs() {
        let x = a.run(tvec!(tensor(&input))).unwrap();
        let x = x[0].try_as_plain_ram().unwrap();
        let x = x.as_slice::<f32>().unwrap();
        let y = b.run(&input).unwrap();
        assert!(x[argmax(&y)] >= x[argmax(x)] - 1.01 * STEP, "{file}: class {} against {}", argmax(&y), argmax(x));
        let d = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        worst = worst.max(d);
    }
    eprintln!(
        "rewritten vs unrewritten Lite0 int8 on the photos: max |logit difference| = {worst} ({:.1} steps)",
        worst / STEP
    );
    assert!(worst <= 4.0 * STEP, "logits {worst} apart");
}

/// A chain that does not match exactly stays in float, with its reason, and the rest of
/// the model is rewritten and still runs: here one convolution's output gets a second
/// consumer (a graph output).
#[test]
fn a_chain_that_does_not_match_stays_in_float() {
    let mut p = proto(LITE0);
    let g = p.graph.as_mut().unwrap();
    let conv = g.node.iter().find(|n| n.op_type == "Conv").unwrap().clone();
    let mut extra = g.output[0].clone();
    extra.name = conv.output[0].clone();
    g.output.push(extra);
    let (chains, skipped) = rewrite_proto(&mut p, Some(&dir())).unwrap();
    assert_eq!(chains.iter().filter(|c| matches!(c.op, ChainOp::Product(_))).count(), 49);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, conv.name);
    assert!(skipped[0].1.contains("model output"), "{skipped:?}");
    let mut model = tract_onnx::onnx().parse(&p, Some(&dir())).unwrap().model;
    install(&mut model, &chains).unwrap();
    model.set_input_fact(0, f32::fact([1, 3, 224, 224]).into()).unwrap();
    let mut typed = model.into_typed().unwrap();
    super::super::choose_kernels(&mut typed, "test", &KernelOptions::default()).unwrap();
    let plan = typed.into_optimized().unwrap().into_runnable().unwrap();
    let (_, input) = photo_inputs().remove(0);
    assert_eq!(plan.run(tvec!(tensor(&input))).unwrap().len(), 2);
}

/// With tract's pool of two threads (channels and rows split between them) the rewritten
/// model gives exactly what it gives on one, on the portable kernels and on the measured
/// choice.
#[test]
fn two_threads_give_the_same_results() {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    let plain = KernelOptions { forced: dispatch::ForcedKernels::parse("plain").unwrap(), cache_dir: None };
    for kernels in [plain, KernelOptions::default()] {
        let r = runner(&RunnerOptions { kernels: kernels.clone(), ..RunnerOptions::default() });
        for (file, input) in photo_inputs().into_iter().take(2) {
            let one = r.run(&input).unwrap();
            let two = multithread_tract_scope(Executor::multithread(2), || r.run(&input)).unwrap();
            assert_eq!(one, two, "{file} ({:?})", kernels.forced);
        }
    }
}

/// Several callers share one pool of two threads, as a host serving several devices does:
/// each gets its own answer, float and int8 alike, and none trips over another's scratch
/// space (a pool thread waiting inside one inference used to pick up another whole one).
#[test]
fn concurrent_callers_share_one_pool() {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    let pool = Executor::multithread(2);
    let float = TractRunner::load(
        &root().join("models/efficientnet-lite0-fp32.onnx"),
        &[1, 3, 224, 224],
        &RunnerOptions::default(),
    )
    .unwrap();
    let runners = std::sync::Arc::new([runner(&RunnerOptions::default()), float]);
    let inputs = std::sync::Arc::new(photo_inputs());
    let want: Vec<Vec<Vec<f32>>> =
        runners.iter().map(|r| inputs.iter().map(|(_, x)| r.run(x).unwrap()).collect()).collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (runners, inputs, pool) = (runners.clone(), inputs.clone(), pool.clone());
            std::thread::spawn(move || {
                (0..20)
                    .map(|k| {
                        let (m, i) = (t % 2, (t + k) % inputs.len());
                        let got = multithread_tract_scope(pool.clone(), || runners[m].run(&inputs[i].1));
                        (m, i, got.unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (m, i, got) in t.join().unwrap() {
            assert_eq!(got, want[m][i], "model {m}, {}", inputs[i].0);
        }
    }
}

/// A float model has nothing to rewrite.
#[test]
fn float_models_are_not_qdq() {
    assert!(!is_qdq(&proto("models/efficientnet-lite0-fp32.onnx")));
    assert!(is_qdq(&proto(LITE0)));
}

/// The products run on the kernels that were forced.
#[test]
fn forced_kernels_are_used() {
    let forced = dispatch::ForcedKernels::parse("matrix=tract,depthwise=plain").unwrap();
    let r = runner(&RunnerOptions { kernels: KernelOptions { forced, cache_dir: None }, ..Default::default() });
    let mut seen = 0;
    for n in r.plan.model().nodes() {
        if let Some(p) = n.op_as::<Int8Product>() {
            let want = if n.op.name() == "Int8Depthwise" { "plain" } else { "tract" };
            assert_eq!(p.kernel(), want, "{}", n.name);
            seen += 1;
        }
    }
    assert_eq!(seen, 50);
}

/// A batch of two runs each item as a batch of one does.
#[test]
fn a_batch_runs_each_item_alike() {
    let one = runner(&RunnerOptions::default());
    let batched = TractRunner::load_batched(&root().join(LITE0), &[1, 3, 224, 224], &RunnerOptions::default()).unwrap();
    let inputs = photo_inputs();
    assert_eq!(batched.warm_batches(2, false).unwrap(), 2);
    let outs = batched.run_batch(&[&inputs[0].1, &inputs[1].1]).unwrap();
    assert_eq!(outs[0], one.run(&inputs[0].1).unwrap());
    assert_eq!(outs[1], one.run(&inputs[1].1).unwrap());
}
