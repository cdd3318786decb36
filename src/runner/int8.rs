//! The int8 rewrite of QDQ models: after loading, every
//! `DequantizeLinear -> Conv/Gemm -> [Clip] -> QuantizeLinear` chain of tract's typed graph is
//! replaced by one `Int8Product` node that takes the int8 tensor the chain started from and
//! gives the int8 tensor the chain ended with, and every `DequantizeLinear + DequantizeLinear
//! -> Add -> QuantizeLinear` (a residual connection) by one `Int8Add`. Weights stay int8 (read
//! from the ONNX initializers behind the float constants tract folds them into, which go with
//! the chain), products accumulate in i32 with the bias and the activations' zero point folded
//! into one i32 bias per output channel, and the requantization (per-channel scale, output zero
//! point, the clip bounds) is applied to the accumulators as the product's output stage.
//!
//! Kernels (`edgecascade_kernels`, plain Rust compiled optimised in every profile): depthwise
//! convolutions (group = channels) run a direct int8 kernel (no im2col: per channel, a padded
//! i16 copy of the plane, products summed into i32 accumulators held in registers); pointwise
//! convolutions and the classifier's Gemm read the activations as they lie (NCHW is already
//! the `[k, n]` operand) and run tract-linalg's i8 x i8 -> i32 kernels with the bias fused in
//! the kernel, except on x86 CPUs whose best tract int8 kernel is the plain AVX2 one (measured
//! far slower than float there), which run the `vpmaddwd` kernel of `edgecascade_kernels`;
//! other convolutions (the stem) go through an int8 im2col into the same kernels. With tract's
//! thread pool (`--threads`), depthwise channels and product rows are split between threads.
//!
//! A chain that does not match exactly (weights not int8 and symmetric, a bias that is not the
//! int32 one QDQ exporters write, dilations, groups other than 1 or depthwise, more than one
//! consumer, ...) is left as tract runs it, with the reason logged.

use edgecascade_kernels::{Geometry, Requant};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul, Sub};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8};

/// What the rewrite did to a model.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    /// Depthwise convolutions now on the direct int8 kernel.
    pub depthwise: usize,
    /// Pointwise convolutions and Gemm/MatMul on int8 matrix kernels.
    pub matmul: usize,
    /// Other convolutions (im2col, then the int8 matrix kernels).
    pub im2col: usize,
    /// Additions of two int8 tensors (residual connections).
    pub add: usize,
    /// Candidate products left in float, each with its name and why.
    pub skipped: Vec<(String, String)>,
}

impl Rewrite {
    /// Products rewritten.
    pub fn products(&self) -> usize {
        self.depthwise + self.matmul + self.im2col
    }

    /// Chains rewritten.
    pub fn rewritten(&self) -> usize {
        self.products() + self.add
    }
}

/// The names of the new nodes end with this, after the name of the product they replace.
pub const SUFFIX: &str = ".int8";

/// The ONNX graph's DequantizeLinear nodes, by name: their inputs (tensor, scale, zero point)
/// and axis. tract folds a DequantizeLinear of a constant into a float constant named after
/// the node (`NAME.0`) when it types the graph; this is how the rewrite finds the int8 tensor
/// and the scales behind such a constant (tract keeps them, unused, as `INPUT.0` constants).
#[derive(Default, Clone)]
pub struct DqTable(HashMap<String, QConst>);

impl DqTable {
    /// Reads the DequantizeLinear nodes of constant initializers from the ONNX model
    /// (`dir`: the model's folder, for tensors stored outside the file).
    pub fn from_proto(proto: &tract_onnx::pb::ModelProto, dir: Option<&str>) -> TractResult<DqTable> {
        let mut t = HashMap::new();
        let Some(g) = &proto.graph else { return Ok(DqTable(t)) };
        let inits: HashMap<&str, &tract_onnx::pb::TensorProto> =
            g.initializer.iter().map(|i| (i.name.as_str(), i)).collect();
        let resolver = tract_onnx::data_resolver::default();
        let load = |name: &str| -> TractResult<Option<Tensor>> {
            inits.get(name).map(|i| tract_onnx::tensor::load_tensor(&*resolver, i, dir)).transpose()
        };
        for n in g.node.iter().filter(|n| n.op_type == "DequantizeLinear") {
            let axis = n.get_attr_opt::<i64>("axis")?.unwrap_or(1);
            let (Some(Some(values)), Some(Some(scales))) =
                (n.input.first().map(|x| load(x)).transpose()?, n.input.get(1).map(|x| load(x)).transpose()?)
            else {
                continue;
            };
            let zero_points = match n.input.get(2).filter(|z| !z.is_empty()) {
                Some(z) => match load(z)? {
                    Some(z) => i32s(&z),
                    None => continue,
                },
                None => Some(vec![0]),
            };
            let (Some(scales), Some(zero_points)) = (f32s(&scales), zero_points) else { continue };
            if !matches!(values.datum_type(), DatumType::I8 | DatumType::I32) {
                continue;
            }
            // Per-axis parameters must run along axis 0 (output channels).
            let rank = values.rank() as i64;
            if (scales.len() > 1 || zero_points.len() > 1) && axis != 0 && axis != -rank {
                continue;
            }
            t.insert(n.name.clone(), QConst { values: values.into_arc_tensor(), scales, zero_points });
        }
        Ok(DqTable(t))
    }

    /// The quantized constant behind a folded DequantizeLinear constant node.
    fn behind(&self, model: &TypedModel, node: &TypedNode) -> Option<QConst> {
        node.op_as::<Const>()?;
        let q = self.0.get(node.name.strip_suffix(".0")?)?;
        let fact = model.outlet_fact(OutletId::new(node.id, 0)).ok()?;
        (fact.shape.as_concrete()? == q.values.shape()).then(|| q.clone())
    }
}

/// Whether `model` is a QDQ graph: it dequantizes something.
pub fn is_qdq(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| n.op_is::<DequantizeLinearF32>())
}

/// Rewrites every matching chain of `model` (a typed model straight from `into_typed`, before
/// decluttering, when the QDQ nodes are still apart) in place.
pub fn rewrite(model: &mut TypedModel, dq: &DqTable) -> TractResult<Rewrite> {
    let (chains, skipped) = find_chains(model, dq)?;
    let mut report = Rewrite { skipped, ..Rewrite::default() };
    for chain in &chains {
        match chain.op.downcast_ref::<Int8Product>().map(|p| p.params.kind) {
            Some(Kind::Depthwise) => report.depthwise += 1,
            Some(Kind::Matmul) => report.matmul += 1,
            Some(Kind::Im2col) => report.im2col += 1,
            None => report.add += 1,
        }
    }
    apply(model, &chains)?;
    Ok(report)
}

/// Candidate products left in float: each one's name and why.
pub type Skipped = Vec<(String, String)>;

/// tract-linalg's kernel, the index of its i8 x i8 packing, the packed weights, the bias.
type TractMmm = (Box<dyn MatMatMul>, usize, Box<dyn MMMInputValue>, Tensor);

/// A chain of the unrewritten model that matched: where it starts (the int8 tensor its
/// DequantizeLinear reads), where it ends (its QuantizeLinear's output) and the op that
/// replaces it.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    /// The int8 inputs (one for products, two for additions).
    pub x: TVec<OutletId>,
    pub y: OutletId,
    pub op: Box<dyn TypedOp>,
}

/// Every chain of `model` that matches, and every candidate product that does not, with the
/// reason (logged as a warning: that product stays in float).
pub fn find_chains(model: &TypedModel, dq: &DqTable) -> TractResult<(Vec<Chain>, Skipped)> {
    let mut chains = vec![];
    let mut skipped = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(chain) = plan_add(model, node) {
            chains.push(chain);
            continue;
        }
        if !(node.op_is::<Conv>() || node.op_is::<EinSum>()) {
            continue;
        }
        match plan(model, dq, id) {
            Ok(p) => chains.push(Chain {
                name: node.name.clone(),
                x: tvec!(p.x),
                y: p.y,
                op: Box::new(Int8Product { params: Arc::new(p.params) }),
            }),
            Err(why) => {
                log::warn!("int8 rewrite: {} stays in float: {why}", node.name);
                skipped.push((node.name.clone(), why));
            }
        }
    }
    Ok((chains, skipped))
}

/// Replaces each chain by its op, one `TypedModelPatch` each: the op taps the chain's int8
/// input (or the op that replaced the chain producing it) and takes over every consumer of
/// the chain's QuantizeLinear. The float nodes left without consumers go at the next
/// declutter.
pub fn apply(model: &mut TypedModel, chains: &[Chain]) -> TractResult<()> {
    let mut replaced: HashMap<OutletId, OutletId> = HashMap::new();
    for chain in chains {
        let name = format!("{}{SUFFIX}", chain.name);
        let mut patch = TypedModelPatch::new(format!("int8 {}", chain.name));
        let mut tapped = tvec!();
        for x in &chain.x {
            tapped.push(patch.tap_model(model, replaced.get(x).copied().unwrap_or(*x))?);
        }
        let y = patch.wire_node(&name, chain.op.clone(), &tapped)?;
        patch.shunt_outside(model, chain.y, y[0])?;
        patch.apply(model)?;
        let id = model.node_by_name(&name)?.id;
        replaced.insert(chain.y, OutletId::new(id, 0));
    }
    Ok(())
}

/// `DequantizeLinear(a) + DequantizeLinear(b) -> QuantizeLinear`, both int8 and the same
/// shape (a residual connection): one `Int8Add`. Anything else is not a QDQ addition and is
/// left alone without a word.
fn plan_add(model: &TypedModel, node: &TypedNode) -> Option<Chain> {
    if !node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>()) || node.inputs.len() != 2 {
        return None;
    }
    let (a, sa, a0) = trace_input(model, node.inputs[0]).ok()?;
    let (b, sb, b0) = trace_input(model, node.inputs[1]).ok()?;
    let shape = shape_of(model, a).ok()?;
    if shape_of(model, b).ok()? != shape || shape_of(model, OutletId::new(node.id, 0)).ok()? != shape {
        return None;
    }
    let (y, inv_y_scale, y0, lo, hi) = match trace_requant(model, OutletId::new(node.id, 0)) {
        Ok(r) => r,
        Err(why) => {
            log::warn!("int8 rewrite: {} stays in float: {why}", node.name);
            return None;
        }
    };
    let (lo, hi) = Requant::bounds(inv_y_scale, y0, lo, hi);
    let (ka, kb) = (sa * inv_y_scale, sb * inv_y_scale);
    let op = Int8Add { ka, kb, c: -(a0 as f32 * ka + b0 as f32 * kb), y0, lo, hi, shape };
    Some(Chain { name: node.name.clone(), x: tvec!(a, b), y, op: Box::new(op) })
}

/// `clamp(round_half_even(a * ka + b * kb + c) + y0, lo, hi)` element-wise over two int8
/// tensors: a residual addition with both dequantizations and the requantization folded into
/// two scales and an offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Add {
    ka: f32,
    kb: f32,
    c: f32,
    y0: i32,
    lo: i32,
    hi: i32,
    shape: TVec<usize>,
}

impl Eq for Int8Add {}

impl Op for Int8Add {
    fn name(&self) -> StaticName {
        "Int8Add".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "a x {} + b x {} + {}, y0={} clamp [{}, {}]",
            self.ka, self.kb, self.c, self.y0, self.lo, self.hi
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Int8Add {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        ensure!(
            a.datum_type() == DatumType::I8
                && b.datum_type() == DatumType::I8
                && a.shape() == &*self.shape
                && b.shape() == &*self.shape,
            "int8 add: bad inputs {a:?} {b:?}"
        );
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let (a, b) = (a.as_slice::<i8>()?, b.as_slice::<i8>()?);
        let t = int8_output(&self.shape, |out| {
            edgecascade_kernels::add(a, b, self.ka, self.kb, self.c, self.y0, self.lo, self.hi, out);
            Ok(())
        })?;
        Ok(tvec!(t.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Int8Add {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(DatumType::I8.fact(&*self.shape)))
    }

    tract_onnx::tract_core::as_op!();
}

/// A matched chain: the int8 outlet it starts from, the int8 outlet it ends with, the op.
struct Plan {
    x: OutletId,
    y: OutletId,
    params: Params,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Depthwise,
    Matmul,
    Im2col,
}

/// A constant that is the dequantization of an integer tensor: `(values - zero point) * scale`
/// with one scale and zero point, or one per element of axis 0.
#[derive(Clone)]
struct QConst {
    values: Arc<Tensor>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

fn konst(model: &TypedModel, o: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(o).ok()?.konst.clone()
}

fn f32s(t: &Tensor) -> Option<Vec<f32>> {
    let t = t.cast_to::<f32>().ok()?;
    Some(t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
}

/// An int8 tensor's values (weights, which `weight_scales` has checked are int8).
fn i8s(t: &Tensor) -> Result<Vec<i8>, String> {
    Ok(t.try_as_plain_ram().map_err(|e| e.to_string())?.as_slice::<i8>().map_err(|_| "weights are not i8")?.to_vec())
}

fn i32s(t: &Tensor) -> Option<Vec<i32>> {
    let t = t.cast_to::<i32>().ok()?;
    Some(t.try_as_plain_ram().ok()?.as_slice::<i32>().ok()?.to_vec())
}

/// Follows `o` back through the ops tract wires for a DequantizeLinear of a constant (per
/// tensor: `DequantizeLinearF32`; per axis: cast, sub, mul) and through casts to f32 and
/// removed unit axes.
fn trace_qconst(model: &TypedModel, dq: &DqTable, o: OutletId) -> Option<QConst> {
    let node = model.node(o.node);
    if let Some(q) = dq.behind(model, node) {
        return Some(q);
    }
    let int = |t: &Arc<Tensor>| matches!(t.datum_type(), DatumType::I8 | DatumType::I32);
    if let Some(c) = node.op_as::<Cast>() {
        let from = model.outlet_fact(node.inputs[0]).ok()?.datum_type;
        return (c.to == DatumType::F32 && from == DatumType::F32).then(|| trace_qconst(model, dq, node.inputs[0]))?;
    }
    if let Some(AxisOp::Rm(_) | AxisOp::Add(_)) = node.op_as::<AxisOp>() {
        return trace_qconst(model, dq, node.inputs[0]);
    }
    if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
        let values = konst(model, node.inputs[0]).filter(int)?;
        return Some(QConst { values, scales: vec![dq.scale], zero_points: vec![dq.zero_point] });
    }
    let bin = node.op_as::<TypedBinOp>()?;
    if !bin.0.is::<Mul>() || node.inputs.len() != 2 {
        return None;
    }
    // A product by a constant 1 (ONNX Gemm's beta) passes the other side through.
    let one = |i: usize| konst(model, node.inputs[i]).is_some_and(|t| t.len() == 1 && f32s(&t) == Some(vec![1.0]));
    if one(0) || one(1) {
        return trace_qconst(model, dq, node.inputs[if one(0) { 1 } else { 0 }]);
    }
    let scales = f32s(&*konst(model, node.inputs[1])?)?;
    let sub = model.node(node.inputs[0].node);
    if !sub.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Sub>()) || sub.inputs.len() != 2 {
        return None;
    }
    let zp = f32s(&*konst(model, sub.inputs[1])?)?;
    if zp.iter().any(|z| z.fract() != 0.0) {
        return None;
    }
    let cast = model.node(sub.inputs[0].node);
    if cast.op_as::<Cast>().is_none_or(|c| c.to != DatumType::F32) {
        return None;
    }
    let values = konst(model, cast.inputs[0]).filter(int)?;
    Some(QConst { values, scales, zero_points: zp.iter().map(|&z| z as i32).collect() })
}

/// The per-output-channel value of a parameter given once or per channel.
fn per_channel<T: Copy>(v: &[T], c: usize, channels: usize) -> Option<T> {
    match v.len() {
        1 => Some(v[0]),
        n if n == channels => Some(v[c]),
        _ => None,
    }
}

/// The requantization after the product: the single consumer of `o`, through scalar
/// Max/Min (Clip, ReLU6), must be a QuantizeLinear to i8. Returns the quantizer's outlet,
/// `1 / y_scale`, the zero point and the clip bounds in float (before quantization).
fn trace_requant(model: &TypedModel, mut o: OutletId) -> Result<(OutletId, f32, i32, f32, f32), String> {
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    loop {
        if model.outputs.contains(&o) {
            return Err("the product's float output is a model output".into());
        }
        let succs = &model.outlet_successors(o);
        if succs.len() != 1 {
            return Err(format!("the product's output has {} consumers, not one QuantizeLinear", succs.len()));
        }
        let next = model.node(succs[0].node);
        if let Some(ew) = next.op_as::<ElementWiseOp>() {
            if let Some(q) = ew.0.downcast_ref::<QuantizeLinearI8>() {
                return Ok((OutletId::new(next.id, 0), q.scale, q.zero_point as i32, lo, hi));
            }
            return Err(format!("followed by {}, not QuantizeLinear to int8", next.op.name()));
        }
        if let Some(bin) = next.op_as::<TypedBinOp>() {
            let other = next.inputs.iter().find(|i| **i != o).copied();
            let bound =
                other.and_then(|i| konst(model, i)).filter(|t| t.len() == 1).and_then(|t| f32s(&t)).map(|v| v[0]);
            match bound {
                Some(b) if bin.0.is::<Max>() => lo = lo.max(b),
                Some(b) if bin.0.is::<Min>() => hi = hi.min(b),
                _ => return Err(format!("followed by {}, not a clip or QuantizeLinear", next.op.name())),
            }
            o = OutletId::new(next.id, 0);
            continue;
        }
        return Err(format!("followed by {}, not QuantizeLinear", next.op.name()));
    }
}

/// The int8 input of a product: its input must be a per-tensor DequantizeLinear of an i8
/// tensor. Returns that tensor's outlet, the scale and the zero point.
fn trace_input(model: &TypedModel, o: OutletId) -> Result<(OutletId, f32, i32), String> {
    let node = model.node(o.node);
    let dq = node
        .op_as::<DequantizeLinearF32>()
        .ok_or_else(|| format!("input from {}, not DequantizeLinear", node.op.name()))?;
    let from = node.inputs[0];
    let dt = model.outlet_fact(from).map_err(|e| e.to_string())?.datum_type;
    if dt != DatumType::I8 {
        return Err(format!("input quantized as {dt:?}, not i8"));
    }
    Ok((from, dq.scale, dq.zero_point))
}

/// Per output channel: the scale of the weights, and the check that they are int8 and
/// symmetric.
fn weight_scales(w: &QConst, cout: usize) -> Result<Vec<f32>, String> {
    if w.values.datum_type() != DatumType::I8 {
        return Err(format!("weights are {:?}, not i8", w.values.datum_type()));
    }
    if w.zero_points.iter().any(|&z| z != 0) {
        return Err("weights have a non-zero zero point".into());
    }
    (0..cout)
        .map(|c| {
            per_channel(&w.scales, c, cout)
                .ok_or_else(|| "weight scales are neither per tensor nor per output channel".into())
        })
        .collect()
}

/// The i32 bias of each output channel, from a bias that dequantizes with scale
/// `x_scale * w_scale[c]` (what QDQ exporters write), or from a float constant that is exactly
/// such a bias (when tract folded a short one).
fn int_bias(model: &TypedModel, dq: &DqTable, o: Option<OutletId>, acc_scale: &[f32]) -> Result<Vec<i32>, String> {
    let cout = acc_scale.len();
    let Some(o) = o else { return Ok(vec![0; cout]) };
    if let Some(q) = trace_qconst(model, dq, o) {
        if q.values.len() != cout && q.values.len() != 1 {
            return Err(format!("bias has {} values for {cout} channels", q.values.len()));
        }
        let v = i32s(&q.values).ok_or("bias is not integer")?;
        let mut out = Vec::with_capacity(cout);
        for (c, want) in acc_scale.iter().enumerate() {
            let s = per_channel(&q.scales, c, cout).ok_or("bias scales do not match the channels")?;
            let z = per_channel(&q.zero_points, c, cout).ok_or("bias zero points do not match the channels")?;
            if ((s - want) / want).abs() > 1e-5 {
                return Err(format!("bias scale {s} is not input scale x weight scale {want}"));
            }
            out.push(per_channel(&v, c, cout).unwrap_or(0) - z);
        }
        return Ok(out);
    }
    let b = konst(model, o).and_then(|t| f32s(&t)).ok_or("bias is neither a quantized nor a float constant")?;
    let mut out = Vec::with_capacity(cout);
    for (c, s) in acc_scale.iter().enumerate() {
        let f = per_channel(&b, c, cout).ok_or("bias length does not match the channels")?;
        let q = (f / s).round();
        if (q * s - f).abs() > 1e-6 * f.abs().max(1e-3) || q.abs() > 2e9 {
            return Err("float bias is not a multiple of input scale x weight scale".into());
        }
        out.push(q as i32);
    }
    Ok(out)
}

fn shape_of(model: &TypedModel, o: OutletId) -> Result<TVec<usize>, String> {
    let fact = model.outlet_fact(o).map_err(|e| e.to_string())?;
    fact.shape.as_concrete().map(|s| s.into()).ok_or_else(|| "shape is not fixed".into())
}

fn plan(model: &TypedModel, dq: &DqTable, id: usize) -> Result<Plan, String> {
    let node = model.node(id);
    if let Some(conv) = node.op_as::<Conv>() {
        plan_conv(model, dq, node, conv)
    } else if let Some(einsum) = node.op_as::<EinSum>() {
        plan_gemm(model, dq, node, einsum)
    } else {
        Err("not a product".into())
    }
}

fn plan_conv(model: &TypedModel, dq: &DqTable, node: &TypedNode, conv: &Conv) -> Result<Plan, String> {
    if conv.q_params.is_some() || node.inputs.len() != 3 {
        return Err("already a quantized convolution".into());
    }
    let ps = &conv.pool_spec;
    if ps.data_format != DataFormat::NCHW || conv.kernel_fmt != KernelFormat::OIHW || ps.kernel_shape.len() != 2 {
        return Err("not a 2D NCHW/OIHW convolution".into());
    }
    if ps.dilations().iter().any(|&d| d != 1) {
        return Err("dilated".into());
    }
    let (x, x_scale, x0) = trace_input(model, node.inputs[0])?;
    let in_shape = shape_of(model, x)?;
    let out_shape = shape_of(model, OutletId::new(node.id, 0))?;
    if in_shape.len() != 4 || in_shape[0] != 1 || out_shape.len() != 4 {
        return Err(format!("input shape {in_shape:?}: only batch 1 NCHW"));
    }
    let (cin, cout, group) = (ps.input_channels, ps.output_channels, conv.group);
    let depthwise = group > 1 && group == cin && group == cout;
    if group != 1 && !depthwise {
        return Err(format!("group {group} is neither 1 nor depthwise"));
    }
    let w = trace_qconst(model, dq, node.inputs[1]).ok_or("weights are not a dequantized int8 constant")?;
    let (kh, kw) = (ps.kernel_shape[0], ps.kernel_shape[1]);
    let per_c = cin / group * kh * kw;
    if w.values.shape() != [cout, cin / group, kh, kw] {
        return Err(format!("weights shaped {:?}", w.values.shape()));
    }
    let w_scales = weight_scales(&w, cout)?;
    let acc_scale: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
    let bias = int_bias(model, dq, Some(node.inputs[2]), &acc_scale)?;
    let (y, inv_y_scale, y0, lo, hi) = trace_requant(model, OutletId::new(node.id, 0))?;
    let pads = ps.computed_padding(&in_shape[2..]);
    let strides = ps.strides();
    let (h, wd) = (in_shape[2], in_shape[3]);
    let (oh, ow) = (pads[0].convoluted, pads[1].convoluted);
    if out_shape.as_slice() != [1, cout, oh, ow] {
        return Err(format!("output shape {out_shape:?} is not [1, {cout}, {oh}, {ow}]"));
    }
    let weights = i8s(&w.values)?;
    let pointwise = kh == 1
        && kw == 1
        && strides.iter().all(|&s| s == 1)
        && pads.iter().all(|p| p.pad_before == 0 && p.pad_after == 0);
    let kind = if depthwise {
        Kind::Depthwise
    } else if pointwise {
        Kind::Matmul
    } else {
        Kind::Im2col
    };
    let geo = Geometry {
        cin,
        h,
        w: wd,
        kh,
        kw,
        sh: strides[0],
        sw: strides[1],
        pt: pads[0].pad_before,
        pl: pads[1].pad_before,
        oh,
        ow,
    };
    let params = Params::new(
        kind,
        geo,
        in_shape,
        out_shape,
        cout,
        per_c,
        weights,
        bias,
        x0,
        Requant::new(&acc_scale, inv_y_scale, y0, lo, hi),
    )?;
    Ok(Plan { x, y, params })
}

/// ONNX Gemm and MatMul with a constant right-hand side, as tract types them: an EinSum
/// `mk,nk->mn` (or `mk,kn->mn`) of a `[1, k]` input, then an optional bias Add.
fn plan_gemm(model: &TypedModel, dq: &DqTable, node: &TypedNode, einsum: &EinSum) -> Result<Plan, String> {
    if einsum.q_params.is_some() || node.inputs.len() != 2 {
        return Err("already a quantized product".into());
    }
    let (x, x_scale, x0) = trace_input(model, node.inputs[0])?;
    let in_shape = shape_of(model, x)?;
    let w = trace_qconst(model, dq, node.inputs[1]).ok_or("weights are not a dequantized int8 constant")?;
    let ws = w.values.shape().to_vec();
    if in_shape.len() != 2 || in_shape[0] != 1 || ws.len() != 2 {
        return Err(format!("input {in_shape:?} and weights {ws:?}: only [1, k] x 2D weights"));
    }
    let k = in_shape[1];
    // Where the input's k axis sits in the weights: axis 1 for Gemm with transB ([m, k]),
    // axis 0 for MatMul ([k, m]).
    let k_in_w = einsum
        .axes
        .axis((InOut::In(0), 1))
        .ok()
        .map(|a| a.inputs[1].clone())
        .filter(|p| p.len() == 1 && ws[p[0]] == k)
        .ok_or_else(|| format!("einsum {} does not contract the input's k with the weights", einsum.axes))?;
    let transposed = k_in_w[0] == 1;
    let m = if transposed { ws[0] } else { ws[1] };
    let out_shape = shape_of(model, OutletId::new(node.id, 0))?;
    if out_shape.as_slice() != [1, m] {
        return Err(format!("output {out_shape:?} is not [1, {m}]"));
    }
    let values = i8s(&w.values)?;
    // Per output channel along the output axis: the quantization axis must be the m axis.
    let w_scales = if w.scales.len() == 1 || (w.scales.len() == m && transposed) {
        weight_scales(&w, m)?
    } else {
        return Err("weight scales are not per output".into());
    };
    let weights: Vec<i8> = if transposed {
        values
    } else {
        (0..m).flat_map(|j| (0..k).map(move |i| (i, j))).map(|(i, j)| values[i * m + j]).collect()
    };
    let acc_scale: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
    // An Add of a constant after the product is the Gemm's bias.
    let mut after = OutletId::new(node.id, 0);
    let mut bias_outlet = None;
    let succs = model.outlet_successors(after);
    if succs.len() == 1 {
        let next = model.node(succs[0].node);
        if next.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>()) {
            let other = next.inputs.iter().copied().find(|&i| i != after);
            if let Some(b) = other.filter(|&b| konst(model, b).is_some() || trace_qconst(model, dq, b).is_some()) {
                bias_outlet = Some(b);
                after = OutletId::new(next.id, 0);
            }
        }
    }
    let bias = int_bias(model, dq, bias_outlet, &acc_scale)?;
    let (y, inv_y_scale, y0, lo, hi) = trace_requant(model, after)?;
    let geo = Geometry { cin: k, h: 1, w: 1, kh: 1, kw: 1, sh: 1, sw: 1, pt: 0, pl: 0, oh: 1, ow: 1 };
    let params = Params::new(
        Kind::Matmul,
        geo,
        in_shape,
        out_shape,
        m,
        k,
        weights,
        bias,
        x0,
        Requant::new(&acc_scale, inv_y_scale, y0, lo, hi),
    )?;
    Ok(Plan { x, y, params })
}

/// Everything an `Int8Product` needs, shared by its clones.
struct Params {
    kind: Kind,
    geo: Geometry,
    in_shape: TVec<usize>,
    out_shape: TVec<usize>,
    /// Output channels (rows of the product).
    m: usize,
    /// Weights per output channel (the product's depth).
    k: usize,
    /// `[m, k]`, int8, where a kernel reads them as they are (depthwise, one-column
    /// products); empty where a kernel keeps its own packed copy.
    weights: Vec<i8>,
    /// Per output channel: the model's bias minus `x0 * sum(weights)`.
    bias: Vec<i32>,
    x0: i8,
    requant: Requant,
    /// The matrix products' kernel; none for depthwise convolutions (their kernel reads
    /// `weights`).
    matrix: Option<MatrixKernel>,
}

/// The kernel a matrix product (pointwise convolution, the stem's im2col, the classifier)
/// runs on.
enum MatrixKernel {
    /// tract-linalg's int8 kernel, its i8 x i8 packing, the packed weights, the bias.
    Tract(TractMmm),
    /// On x86_64 with AVX2 and no better int8 instructions: the `vpmaddwd` kernel on its own
    /// packed copy of the weights.
    Avx2Gemm(edgecascade_kernels::avx2::PackedWeights),
    /// The same machines, one column (the classifier): the matrix-vector kernel, which reads
    /// the rows of `weights` as they are.
    Avx2Matvec,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} m={} k={} {:?}->{:?}", self.kind, self.m, self.k, self.in_shape, self.out_shape)
    }
}

impl Params {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        geo: Geometry,
        in_shape: TVec<usize>,
        out_shape: TVec<usize>,
        m: usize,
        k: usize,
        weights: Vec<i8>,
        bias: Vec<i32>,
        x0: i32,
        requant: Requant,
    ) -> Result<Params, String> {
        let x0 = i8::try_from(x0).map_err(|_| format!("input zero point {x0} is not an i8"))?;
        if weights.len() != m * k || bias.len() != m {
            return Err("weights or bias do not match the channels".into());
        }
        // Padding (depthwise, im2col) is filled with x0, so one correction per channel
        // covers every position: acc = sum(w * x) - x0 * sum(w) + bias.
        let bias: Vec<i64> = bias
            .iter()
            .enumerate()
            .map(|(c, &b)| b as i64 - x0 as i64 * weights[c * k..][..k].iter().map(|&w| w as i64).sum::<i64>())
            .collect();
        // A bias too large for the accumulators (QDQ exporters saturate the int32 bias of
        // channels whose weights are all but zero) goes into the requantization as a float
        // offset instead, computed in f64: the same value, without overflowing i32.
        let mut requant = requant;
        let (bias, offset): (Vec<i32>, Vec<f32>) = bias
            .iter()
            .enumerate()
            .map(|(c, &b)| match i32::try_from(b) {
                Ok(b) if b.unsigned_abs() <= 1 << 30 => (b, 0.0),
                _ => (0, (b as f64 * requant.scale[c] as f64) as f32),
            })
            .unzip();
        requant.offset = offset;
        let n = match kind {
            Kind::Depthwise => 0,
            Kind::Matmul => in_shape.iter().product::<usize>() / k,
            Kind::Im2col => geo.oh * geo.ow,
        };
        let mut weights = weights;
        let matrix = match kind {
            Kind::Depthwise => None,
            _ => {
                // Which instruction set tract's int8 kernels have here, from its choice for a
                // product of this depth with many columns (for one column it picks others).
                let wide = tract_linalg::MmmDispatch::native().preferred_kernel(
                    DatumType::I32,
                    Some(m),
                    Some(k),
                    Some(n.max(64)),
                );
                // Only the one-column AVX2 product reads `weights`; the others keep a packed copy.
                let avx2 = wide.is_some_and(|w| use_avx2(&*w));
                Some(match (avx2, n) {
                    (true, 1) => MatrixKernel::Avx2Matvec,
                    (true, _) => MatrixKernel::Avx2Gemm(edgecascade_kernels::avx2::PackedWeights::new(
                        &std::mem::take(&mut weights),
                        m,
                        k,
                    )),
                    (false, _) => MatrixKernel::Tract(prepare_mmm(m, k, n, &std::mem::take(&mut weights), &bias)?),
                })
            }
        };
        Ok(Params { kind, geo, in_shape, out_shape, m, k, weights, bias, x0, requant, matrix })
    }
}

/// Whether the `vpmaddwd` kernel replaces tract-linalg's: where tract's best int8 kernel is its
/// plain AVX/AVX2 one (no VNNI, no AMX) and `EDGECASCADE_INT8_KERNEL` is not `tract`.
fn use_avx2(tract: &dyn MatMatMul) -> bool {
    let forced_tract = std::env::var("EDGECASCADE_INT8_KERNEL").is_ok_and(|v| v.eq_ignore_ascii_case("tract"));
    !forced_tract
        && edgecascade_kernels::avx2::available()
        && (tract.name().starts_with("avx2_") || tract.name().starts_with("avx_"))
}

/// tract-linalg's preferred i32-accumulator kernel for this shape, the index of its i8 x i8
/// packing, the weights packed once, and the bias as a tensor for the fused per-row add.
fn prepare_mmm(m: usize, k: usize, n: usize, weights: &[i8], bias: &[i32]) -> Result<TractMmm, String> {
    let err = |e: TractError| format!("{e:#}");
    let mmm = tract_linalg::MmmDispatch::native()
        .preferred_kernel(DatumType::I32, Some(m), Some(k), Some(n))
        .ok_or("tract-linalg has no i32 matrix kernel here")?;
    let i8_fmt =
        |f: &dyn tract_linalg::mmm::MMMInputFormat| f.precursor() == tract_linalg::WeightType::Plain(DatumType::I8);
    let packing = mmm
        .packings()
        .iter()
        .position(|(a, b)| i8_fmt(&**a) && i8_fmt(&**b))
        .ok_or_else(|| format!("kernel {} has no i8 x i8 packing", mmm.name()))?;
    let w = Tensor::from_shape(&[m, k], weights).map_err(err)?;
    let packed = mmm.packings()[packing].0.prepare_one(&w, 1, 0).map_err(err)?;
    let bias = Tensor::from_shape(&[m], bias).map_err(err)?;
    Ok((mmm, packing, packed, bias))
}

/// The op that replaces a chain: int8 in, int8 out.
#[derive(Debug, Clone)]
pub struct Int8Product {
    params: Arc<Params>,
}

impl PartialEq for Int8Product {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.params, &other.params)
    }
}
impl Eq for Int8Product {}

impl Op for Int8Product {
    fn name(&self) -> StaticName {
        match self.params.kind {
            Kind::Depthwise => "Int8Depthwise".into(),
            Kind::Matmul => "Int8MatMul".into(),
            Kind::Im2col => "Int8Im2colConv".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.params;
        let kernel = match &p.matrix {
            Some(MatrixKernel::Tract(m)) => m.0.name().to_owned(),
            Some(MatrixKernel::Avx2Gemm(_)) => "avx2 vpmaddwd".to_owned(),
            Some(MatrixKernel::Avx2Matvec) => "avx2 vpmaddwd matrix-vector".to_owned(),
            None => "direct".to_owned(),
        };
        Ok(vec![format!(
            "{p:?} kernel {kernel} x0={} y0={} clamp [{}, {}]",
            p.x0, p.requant.y0, p.requant.lo, p.requant.hi
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Int8Product {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.params;
        let x = &inputs[0];
        ensure!(x.datum_type() == DatumType::I8 && x.shape() == &*p.in_shape, "int8 product: bad input {x:?}");
        let xs = x.try_as_plain_ram()?.as_slice::<i8>()?;
        let t = int8_output(&p.out_shape, |out| match p.kind {
            Kind::Depthwise => {
                depthwise(p, xs, out);
                Ok(())
            }
            Kind::Matmul => matmul(p, x, out),
            Kind::Im2col => {
                let cols =
                    Tensor::from_shape(&[p.k, p.geo.oh * p.geo.ow], &edgecascade_kernels::im2col(&p.geo, p.x0, xs))?;
                matmul(p, &cols, out)
            }
        })?;
        Ok(tvec!(t.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Int8Product {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(DatumType::I8.fact(&*self.params.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let p = &self.params;
        let per_out = if p.kind == Kind::Depthwise { p.geo.kh * p.geo.kw } else { p.k };
        let outs: usize = p.out_shape.iter().product();
        Ok(tvec!((Cost::FMA(DatumType::I32), (outs * per_out).to_dim())))
    }

    tract_onnx::tract_core::as_op!();
}

/// An int8 tensor of `shape` whose values `fill` writes in place (the kernels write every one),
/// rather than a buffer copied into a tensor afterwards.
fn int8_output(shape: &[usize], fill: impl FnOnce(&mut [i8]) -> TractResult<()>) -> TractResult<Tensor> {
    let mut t = Tensor::zero::<i8>(shape)?;
    fill(t.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?)?;
    Ok(t)
}

/// Below this many multiply-accumulates a product or convolution runs on one thread (handing
/// work to the pool costs more than it saves).
const PARALLEL_MACS: usize = 1 << 20;

use tract_linalg::multithread::{current_tract_executor, Executor};

/// The depthwise kernel, its channels split between tract's threads when there are several.
fn depthwise(p: &Params, x: &[i8], out: &mut [i8]) {
    let g = p.geo;
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    // tract's thread pool, when `--threads` (`runner::set_threads`) asked for more than one.
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 && g.cin * plane_out * taps >= PARALLEL_MACS => {
            let per = g.cin.div_ceil(pool.current_num_threads().min(g.cin));
            pool.scope(|s| {
                for (i, o) in out.chunks_mut(per * plane_out).enumerate() {
                    let c = i * per..(i * per + o.len() / plane_out);
                    s.spawn(move |_| {
                        let sub = edgecascade_kernels::Geometry { cin: c.len(), ..g };
                        edgecascade_kernels::depthwise(
                            &sub,
                            &p.weights[c.start * taps..c.end * taps],
                            &p.bias[c.clone()],
                            p.x0,
                            &p.requant.channels(c.clone()),
                            &x[c.start * plane_in..c.end * plane_in],
                            o,
                        )
                    });
                }
            });
        }
        _ => edgecascade_kernels::depthwise(&g, &p.weights, &p.bias, p.x0, &p.requant, x, out),
    }
}

/// `weights [m, k] x x [k, n]` on the product's kernel: tract-linalg's int8 kernel (bias added
/// in the kernel, then the requantization per row, here) or the AVX2 ones.
fn matmul(p: &Params, x: &Tensor, out: &mut [i8]) -> TractResult<()> {
    let (m, k) = (p.m, p.k);
    let n = x.len() / k;
    let (mmm, packing, packed, bias) = match p.matrix.as_ref().context("no matrix kernel prepared")? {
        MatrixKernel::Tract(t) => t,
        MatrixKernel::Avx2Matvec => {
            ensure!(n == 1, "the matrix-vector kernel got {n} columns");
            let xs = x.try_as_plain_ram()?;
            edgecascade_kernels::avx2::matvec(&p.weights, p.m, xs.as_slice::<i8>()?, &p.bias, &p.requant, out);
            return Ok(());
        }
        MatrixKernel::Avx2Gemm(w) => return avx2_gemm(p, w, x, n, out),
    };
    let (shape, strides) = ([k, n], [n as isize, 1]);
    let view = unsafe { TensorView::from_bytes(x, 0, &shape, &strides) };
    let b = mmm.packings()[*packing].1.prepare_one_view(&view, 0, 1)?;
    let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, n])? };
    unsafe {
        let c = mmm.c_view(Some(0), Some(1)).wrap(&acc.view_mut());
        mmm.run(
            m,
            n,
            &[
                FusedSpec::AddMatMul {
                    a: AsInputValue::Borrowed(&**packed),
                    b: AsInputValue::Borrowed(&*b),
                    packing: *packing,
                },
                FusedSpec::BinPerRow(bias.view(), BinOp::Add),
                FusedSpec::Store(c),
            ],
        )?;
    }
    let acc = acc.try_as_plain_ram()?;
    let acc = acc.as_slice::<i32>()?;
    for (c, (a, o)) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
        p.requant.row(c, a, o);
    }
    Ok(())
}

/// `weights [m, k] x x [k, n]` on the AVX2 `vpmaddwd` kernel, the bias and requantization in
/// its output stage.
fn avx2_gemm(
    p: &Params,
    w: &edgecascade_kernels::avx2::PackedWeights,
    x: &Tensor,
    n: usize,
    out: &mut [i8],
) -> TractResult<()> {
    use edgecascade_kernels::avx2;
    let xs = x.try_as_plain_ram()?;
    let xs = xs.as_slice::<i8>()?;
    let panels = avx2::panels(p.m);
    match current_tract_executor() {
        // Rows split between the threads, whole weight panels each (every thread packs the
        // activations for itself).
        Executor::MultiThread(pool)
            if pool.current_num_threads() > 1 && p.m * p.k * n >= PARALLEL_MACS && panels >= 2 =>
        {
            let per = panels.div_ceil(pool.current_num_threads().min(panels));
            pool.scope(|s| {
                for (i, rows) in out.chunks_mut(per * avx2::MR * n).enumerate() {
                    s.spawn(move |_| {
                        avx2::gemm_panels(w, i * per..((i + 1) * per).min(panels), xs, n, &p.bias, &p.requant, rows)
                    });
                }
            });
        }
        _ => avx2::gemm(w, xs, n, &p.bias, &p.requant, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::policy::argmax;
    use crate::preprocess;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn typed(name: &str) -> TypedModel {
        let mut m = tract_onnx::onnx().model_for_path(root().join("models").join(name)).unwrap();
        m.set_input_fact(0, f32::fact([1, 3, 224, 224]).into()).unwrap();
        m.into_typed().unwrap()
    }

    fn dq_table(name: &str) -> DqTable {
        let proto = tract_onnx::onnx().proto_model_for_path(root().join("models").join(name)).unwrap();
        DqTable::from_proto(&proto, root().join("models").to_str()).unwrap()
    }

    /// The demo photos (photos/, in the repository), preprocessed for Lite0.
    fn photo_inputs() -> Vec<(String, Tensor)> {
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
                let input = preprocess::to_tensor(&img, &manifest.input);
                (
                    f.file_name().unwrap().to_string_lossy().into_owned(),
                    Tensor::from_shape(&[1, 3, 224, 224], &input).unwrap(),
                )
            })
            .collect()
    }

    /// Every rewritten layer, fed the int8 tensor the unrewritten graph computed at its input,
    /// gives what the unrewritten chain (DequantizeLinear, float product, QuantizeLinear) gave
    /// at its output, to one quantization step, on every photo.
    #[test]
    fn every_rewritten_layer_matches_its_float_chain() {
        let model = typed("efficientnet-lite0-int8.onnx");
        let (chains, skipped) = find_chains(&model, &dq_table("efficientnet-lite0-int8.onnx")).unwrap();
        assert!(skipped.is_empty(), "left in float: {skipped:?}");
        let count = |k: &str| chains.iter().filter(|c| c.op.name() == k).count();
        // Lite0: 16 depthwise convolutions; 32 pointwise ones and the classifier; the stem;
        // 9 residual additions.
        assert_eq!(
            (count("Int8Depthwise"), count("Int8MatMul"), count("Int8Im2colConv"), count("Int8Add")),
            (16, 33, 1, 9)
        );
        let mut probe = model.clone();
        let mut outlets: Vec<OutletId> = chains.iter().flat_map(|c| c.x.iter().copied().chain([c.y])).collect();
        outlets.sort();
        outlets.dedup();
        probe.select_output_outlets(&outlets).unwrap();
        let plan = probe.into_runnable().unwrap();
        let (mut values, mut off_by_one, mut worst_layer) = (0usize, 0usize, (0usize, String::new()));
        for (file, input) in photo_inputs() {
            let outs = plan.run(tvec!(input.into_tvalue())).unwrap();
            let at = |o: OutletId| outs[outlets.iter().position(|x| *x == o).unwrap()].clone();
            for chain in &chains {
                let got = chain.op.eval_out_of_plan(chain.x.iter().map(|&x| at(x)).collect()).unwrap().unwrap();
                let (got, want) = (i8s(&got[0]).unwrap(), i8s(&at(chain.y)).unwrap());
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

    /// The whole rewritten model against the unrewritten one: the same class on every photo,
    /// logits a few output steps apart at most (per-layer steps compound over 50 layers).
    #[test]
    fn rewritten_model_agrees_with_the_unrewritten_one() {
        let original = typed("efficientnet-lite0-int8.onnx");
        let mut rewritten = original.clone();
        let report = rewrite(&mut rewritten, &dq_table("efficientnet-lite0-int8.onnx")).unwrap();
        assert_eq!((report.products(), report.add), (50, 9));
        let names: Vec<String> = rewritten.nodes().iter().map(|n| n.op.name().to_string()).collect();
        let a = original.into_optimized().unwrap().into_runnable().unwrap();
        let b = rewritten.into_optimized().unwrap();
        let names_after: Vec<String> = b.nodes().iter().map(|n| n.op.name().to_string()).collect();
        assert_eq!(names_after.iter().filter(|n| n.starts_with("Int8")).count(), 59, "{names:?}");
        // No float convolution or matrix product is left.
        assert!(!names_after.iter().any(|n| n.contains("Conv") && !n.starts_with("Int8")), "{names_after:?}");
        let b = b.into_runnable().unwrap();
        const STEP: f32 = 0.0737;
        let mut worst = 0f32;
        for (file, input) in photo_inputs() {
            let x = a.run(tvec!(input.clone().into_tvalue())).unwrap();
            let y = b.run(tvec!(input.into_tvalue())).unwrap();
            let (x, y) = (x[0].try_as_plain_ram().unwrap(), y[0].try_as_plain_ram().unwrap());
            let (x, y) = (x.as_slice::<f32>().unwrap(), y.as_slice::<f32>().unwrap());
            assert!(x[argmax(y)] >= x[argmax(x)] - 1.01 * STEP, "{file}: class {} against {}", argmax(y), argmax(x));
            let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
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
    /// consumer.
    #[test]
    fn a_chain_that_does_not_match_stays_in_float() {
        let mut model = typed("efficientnet-lite0-int8.onnx");
        let conv = model.nodes().iter().find(|n| n.op_is::<Conv>()).unwrap().id;
        let name = model.node(conv).name.clone();
        let extra = model
            .wire_node("extra consumer", tract_onnx::tract_core::ops::math::abs(), &[OutletId::new(conv, 0)])
            .unwrap();
        let mut outputs = model.output_outlets().unwrap().to_vec();
        outputs.push(extra[0]);
        model.select_output_outlets(&outputs).unwrap();
        let report = rewrite(&mut model, &dq_table("efficientnet-lite0-int8.onnx")).unwrap();
        assert_eq!(report.products(), 49);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].0, name);
        assert!(report.skipped[0].1.contains("2 consumers"), "{:?}", report.skipped);
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let (_, input) = photo_inputs().remove(0);
        assert_eq!(plan.run(tvec!(input.into_tvalue())).unwrap().len(), 2);
    }

    fn xorshift(seed: u32) -> impl FnMut() -> i8 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as i8
        }
    }

    /// The AVX2 product equals the plain one, requantized the same way, at awkward sizes.
    #[test]
    fn avx2_product_equals_the_plain_one() {
        use edgecascade_kernels::avx2;
        if !avx2::available() {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        let mut rnd = xorshift(12345);
        for (m, k, n) in
            [(1, 1, 1), (5, 3, 17), (16, 32, 196), (7, 1280, 1), (3, 37, 1), (33, 27, 40), (4, 2, 16), (8, 33, 48)]
        {
            let w: Vec<i8> = (0..m * k).map(|_| rnd()).collect();
            let x: Vec<i8> = (0..k * n).map(|_| rnd()).collect();
            let bias: Vec<i32> = (0..m).map(|i| i as i32 * 1000 - 3000).collect();
            let acc_scale: Vec<f32> = (0..m).map(|i| 1e-4 * (1 + i % 7) as f32).collect();
            let rq = Requant::new(&acc_scale, 3.0, -5, f32::NEG_INFINITY, f32::INFINITY);
            let mut want = vec![0i8; m * n];
            for r in 0..m {
                let acc: Vec<i32> = (0..n)
                    .map(|j| bias[r] + (0..k).map(|i| w[r * k + i] as i32 * x[i * n + j] as i32).sum::<i32>())
                    .collect();
                rq.row(r, &acc, &mut want[r * n..][..n]);
            }
            let mut got = vec![0i8; m * n];
            avx2::gemm(&avx2::PackedWeights::new(&w, m, k), &x, n, &bias, &rq, &mut got);
            assert_eq!(got, want, "m={m} k={k} n={n}");
            if n == 1 {
                let mut mv = vec![0i8; m];
                avx2::matvec(&w, m, &x, &bias, &rq, &mut mv);
                assert_eq!(mv, want, "matvec m={m} k={k}");
            }
        }
    }

    /// The direct depthwise kernel equals a plain convolution with zero-point padding, for
    /// strides 1 and 2, kernels 3 and 5, symmetric and asymmetric pads.
    #[test]
    fn depthwise_kernel_equals_the_plain_convolution() {
        let mut rnd = xorshift(777);
        for (c, h, w, k, s, pt, pl, pb, pr) in [
            (3, 7, 9, 3, 1, 1, 1, 1, 1),
            (4, 8, 8, 3, 2, 0, 0, 1, 1),
            (2, 11, 6, 5, 2, 1, 1, 2, 2),
            (2, 5, 5, 5, 1, 2, 2, 2, 2),
        ] {
            let oh = (h + pt + pb - k) / s + 1;
            let ow = (w + pl + pr - k) / s + 1;
            let g = Geometry { cin: c, h, w, kh: k, kw: k, sh: s, sw: s, pt, pl, oh, ow };
            let x: Vec<i8> = (0..c * h * w).map(|_| rnd()).collect();
            let wt: Vec<i8> = (0..c * k * k).map(|_| rnd()).collect();
            let x0: i8 = -7;
            let bias: Vec<i32> = (0..c).map(|i| 100 * i as i32 - 50).collect();
            let rq = Requant::new(&vec![2e-3; c], 1.0, 3, f32::NEG_INFINITY, f32::INFINITY);
            let mut want = vec![0i8; c * oh * ow];
            for ch in 0..c {
                for oy in 0..oh {
                    let acc: Vec<i32> = (0..ow)
                        .map(|ox| {
                            let mut a = bias[ch];
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) =
                                        ((oy * s + ky) as isize - pt as isize, (ox * s + kx) as isize - pl as isize);
                                    let v = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        x[(ch * h + iy as usize) * w + ix as usize]
                                    } else {
                                        x0
                                    };
                                    a += wt[(ch * k + ky) * k + kx] as i32 * v as i32;
                                }
                            }
                            a
                        })
                        .collect();
                    rq.row(ch, &acc, &mut want[(ch * oh + oy) * ow..][..ow]);
                }
            }
            let mut got = vec![0i8; c * oh * ow];
            edgecascade_kernels::depthwise(&g, &wt, &bias, x0, &rq, &x, &mut got);
            assert_eq!(got, want, "c={c} h={h} w={w} k={k} s={s}");
        }
    }

    /// With tract's pool of two threads (channels and rows split between them) the rewritten
    /// model gives exactly what it gives on one.
    #[test]
    fn two_threads_give_the_same_results() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let mut model = typed("efficientnet-lite0-int8.onnx");
        rewrite(&mut model, &dq_table("efficientnet-lite0-int8.onnx")).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        for (file, input) in photo_inputs().into_iter().take(2) {
            let one = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
            let two =
                multithread_tract_scope(Executor::multithread(2), || plan.run(tvec!(input.into_tvalue()))).unwrap();
            assert_eq!(
                one[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                two[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                "{file}"
            );
        }
    }

    /// A float model has nothing to rewrite.
    #[test]
    fn float_models_are_not_qdq() {
        assert!(!is_qdq(&typed("efficientnet-lite0-fp32.onnx")));
        assert!(is_qdq(&typed("efficientnet-lite0-int8.onnx")));
    }
}
