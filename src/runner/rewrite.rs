//! The int8 rewrite of QDQ graphs: finds, in tract's typed graph, every
//! `DequantizeLinear -> Conv/Gemm -> [Clip] -> QuantizeLinear` chain (a product) and every
//! `DequantizeLinear + DequantizeLinear -> Add -> QuantizeLinear` (a residual addition), and
//! replaces each by one integer op (`ops`) that takes the int8 tensor the chain started from
//! and gives the int8 tensor it ended with. Weights stay int8 (read from the ONNX initializers
//! behind the float constants tract folds them into, which go with the chain), the bias and the
//! activations' zero point are folded into one i32 bias per output channel, and the
//! requantization (per-channel scale, output zero point, clip bounds) becomes the product's
//! output stage. Which kernel runs each product is `dispatch`'s choice.
//!
//! A chain that does not match exactly (weights not int8 and symmetric, a bias that is not the
//! int32 one QDQ exporters write, dilations, groups other than 1 or depthwise, more than one
//! consumer, ...) is left as tract runs it, with the reason logged.

use super::ops::{Int8Add, Kind, ProductSpec};
use edgecascade_kernels::{Geometry, Requant};
use std::collections::HashMap;
use std::sync::Arc;
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
    /// Depthwise convolutions now on a direct int8 kernel.
    pub depthwise: usize,
    /// Pointwise convolutions and Gemm/MatMul on int8 matrix kernels.
    pub matmul: usize,
    /// Other convolutions (im2col, then the int8 matrix kernels).
    pub im2col: usize,
    /// Additions of two int8 tensors (residual connections).
    pub add: usize,
    /// Candidate products left in float, each with its name and why.
    pub skipped: Skipped,
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

/// A chain of the unrewritten model that matched: where it starts (the int8 tensors its
/// DequantizeLinear nodes read), where it ends (its QuantizeLinear's output) and what replaces
/// it.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    /// The int8 inputs (one for products, two for additions).
    pub x: TVec<OutletId>,
    pub y: OutletId,
    pub op: ChainOp,
}

/// What replaces a chain: a product (its kernel still to be chosen) or an addition.
#[derive(Debug, Clone)]
pub enum ChainOp {
    Product(Arc<ProductSpec>),
    Add(Int8Add),
}

/// Candidate products left in float: each one's name and why.
pub type Skipped = Vec<(String, String)>;

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
                op: ChainOp::Product(Arc::new(p.spec)),
            }),
            Err(why) => {
                log::warn!("int8 rewrite: {} stays in float: {why}", node.name);
                skipped.push((node.name.clone(), why));
            }
        }
    }
    Ok((chains, skipped))
}

/// Counts what `chains` rewrite, beside what was `skipped`.
pub fn report(chains: &[Chain], skipped: Skipped) -> Rewrite {
    let mut report = Rewrite { skipped, ..Rewrite::default() };
    for chain in chains {
        match &chain.op {
            ChainOp::Product(p) => match p.kind {
                Kind::Depthwise => report.depthwise += 1,
                Kind::Matmul => report.matmul += 1,
                Kind::Im2col => report.im2col += 1,
            },
            ChainOp::Add(_) => report.add += 1,
        }
    }
    report
}

/// Replaces each chain by its op (`ops[i]` for `chains[i]`), one `TypedModelPatch` each: the
/// op taps the chain's int8 input (or the op that replaced the chain producing it) and takes
/// over every consumer of the chain's QuantizeLinear. The float nodes left without consumers
/// go at the next declutter.
pub fn apply(model: &mut TypedModel, chains: &[Chain], ops: Vec<Box<dyn TypedOp>>) -> TractResult<()> {
    ensure!(chains.len() == ops.len(), "{} chains, {} ops", chains.len(), ops.len());
    let mut replaced: HashMap<OutletId, OutletId> = HashMap::new();
    for (chain, op) in chains.iter().zip(ops) {
        let name = format!("{}{SUFFIX}", chain.name);
        let mut patch = TypedModelPatch::new(format!("int8 {}", chain.name));
        let mut tapped = tvec!();
        for x in &chain.x {
            tapped.push(patch.tap_model(model, replaced.get(x).copied().unwrap_or(*x))?);
        }
        let y = patch.wire_node(&name, op, &tapped)?;
        patch.shunt_outside(model, chain.y, y[0])?;
        patch.apply(model)?;
        let id = model.node_by_name(&name)?.id;
        replaced.insert(chain.y, OutletId::new(id, 0));
    }
    Ok(())
}

/// A matched product: the int8 outlet it starts from, the int8 outlet it ends with, the product.
struct Plan {
    x: OutletId,
    y: OutletId,
    spec: ProductSpec,
}

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
    let q = match trace_requant(model, OutletId::new(node.id, 0)) {
        Ok(r) => r,
        Err(why) => {
            log::warn!("int8 rewrite: {} stays in float: {why}", node.name);
            return None;
        }
    };
    let (lo, hi) = Requant::bounds(q.inv_scale, q.zero_point, q.lo, q.hi);
    let (ka, kb) = (sa * q.inv_scale, sb * q.inv_scale);
    let op = Int8Add::new(ka, kb, -(a0 as f32 * ka + b0 as f32 * kb), q.zero_point, lo, hi, shape);
    Some(Chain { name: node.name.clone(), x: tvec!(a, b), y: q.y, op: ChainOp::Add(op) })
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

/// Where a chain ends: the QuantizeLinear after the product (and its clip), and what it does.
struct Quantizer {
    /// The QuantizeLinear's output.
    y: OutletId,
    inv_scale: f32,
    zero_point: i32,
    /// The clip bounds in float, before quantization (infinite: none).
    lo: f32,
    hi: f32,
}

/// The requantization after the product: the single consumer of `o`, through scalar
/// Max/Min (Clip, ReLU6), must be a QuantizeLinear to i8.
fn trace_requant(model: &TypedModel, mut o: OutletId) -> Result<Quantizer, String> {
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
                return Ok(Quantizer {
                    y: OutletId::new(next.id, 0),
                    inv_scale: q.scale,
                    zero_point: q.zero_point as i32,
                    lo,
                    hi,
                });
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
    let q = trace_requant(model, OutletId::new(node.id, 0))?;
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
    let spec = ProductSpec::new(
        kind,
        geo,
        in_shape,
        out_shape,
        cout,
        per_c,
        weights,
        bias,
        x0,
        Requant::new(&acc_scale, q.inv_scale, q.zero_point, q.lo, q.hi),
    )?;
    Ok(Plan { x, y: q.y, spec })
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
    let q = trace_requant(model, after)?;
    let geo = Geometry { cin: k, h: 1, w: 1, kh: 1, kw: 1, sh: 1, sw: 1, pt: 0, pl: 0, oh: 1, ow: 1 };
    let spec = ProductSpec::new(
        Kind::Matmul,
        geo,
        in_shape,
        out_shape,
        m,
        k,
        weights,
        bias,
        x0,
        Requant::new(&acc_scale, q.inv_scale, q.zero_point, q.lo, q.hi),
    )?;
    Ok(Plan { x, y: q.y, spec })
}

#[cfg(test)]
mod tests {
    use super::super::ops::Int8Product;
    use super::super::{dispatch, int8_rewrite, KernelOptions};
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

    /// Lite0 int8 rewritten with `kernels` (no cache).
    fn rewritten(kernels: KernelOptions) -> (TypedModel, Rewrite) {
        let mut model = typed("efficientnet-lite0-int8.onnx");
        let (report, _) =
            int8_rewrite(&mut model, &dq_table("efficientnet-lite0-int8.onnx"), "test", &kernels).unwrap();
        (model, report)
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
    /// on every kernel this CPU can run for it: all kernels give the same int8 outputs, bit for
    /// bit, and those equal what the unrewritten chain (DequantizeLinear, float product,
    /// QuantizeLinear) gave at its output, to one quantization step, on every photo.
    #[test]
    fn every_rewritten_layer_matches_its_float_chain_on_every_kernel() {
        let model = typed("efficientnet-lite0-int8.onnx");
        let (chains, skipped) = find_chains(&model, &dq_table("efficientnet-lite0-int8.onnx")).unwrap();
        assert!(skipped.is_empty(), "left in float: {skipped:?}");
        let r = report(&chains, vec![]);
        // Lite0: 16 depthwise convolutions; 32 pointwise ones and the classifier; the stem;
        // 9 residual additions.
        assert_eq!((r.depthwise, r.matmul, r.im2col, r.add), (16, 33, 1, 9));
        let mut probe = model.clone();
        let mut outlets: Vec<OutletId> = chains.iter().flat_map(|c| c.x.iter().copied().chain([c.y])).collect();
        outlets.sort();
        outlets.dedup();
        probe.select_output_outlets(&outlets).unwrap();
        let plan = probe.into_runnable().unwrap();
        // Every chain's op on every kernel (built once).
        let ops: Vec<Vec<(String, Box<dyn TypedOp>)>> = chains
            .iter()
            .map(|c| match &c.op {
                ChainOp::Product(p) => dispatch::candidates(p.kind)
                    .into_iter()
                    .map(|k| {
                        let e = dispatch::build(p, k).unwrap();
                        (k.to_owned(), Box::new(Int8Product::new(p.clone(), e)) as Box<dyn TypedOp>)
                    })
                    .collect(),
                ChainOp::Add(a) => vec![("add".to_owned(), Box::new(a.clone()) as Box<dyn TypedOp>)],
            })
            .collect();
        let kernels: std::collections::BTreeSet<&str> = ops.iter().flatten().map(|(k, _)| k.as_str()).collect();
        eprintln!("kernels compared on every layer: {kernels:?}");
        let (mut values, mut off_by_one, mut worst_layer) = (0usize, 0usize, (0usize, String::new()));
        for (file, input) in photo_inputs() {
            let outs = plan.run(tvec!(input.into_tvalue())).unwrap();
            let at = |o: OutletId| outs[outlets.iter().position(|x| *x == o).unwrap()].clone();
            for (chain, ops) in chains.iter().zip(&ops) {
                let want = i8s(&at(chain.y)).unwrap();
                let mut first: Option<(&str, Vec<i8>)> = None;
                for (kernel, op) in ops {
                    let got = op.eval_out_of_plan(chain.x.iter().map(|&x| at(x)).collect()).unwrap().unwrap();
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

    /// The whole rewritten model against the unrewritten one: the same class on every photo,
    /// logits a few output steps apart at most (per-layer steps compound over 50 layers).
    #[test]
    fn rewritten_model_agrees_with_the_unrewritten_one() {
        let original = typed("efficientnet-lite0-int8.onnx");
        let (rewritten, report) = rewritten(KernelOptions::default());
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
        let (report, _) =
            int8_rewrite(&mut model, &dq_table("efficientnet-lite0-int8.onnx"), "test", &KernelOptions::default())
                .unwrap();
        assert_eq!(report.products(), 49);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].0, name);
        assert!(report.skipped[0].1.contains("2 consumers"), "{:?}", report.skipped);
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let (_, input) = photo_inputs().remove(0);
        assert_eq!(plan.run(tvec!(input.into_tvalue())).unwrap().len(), 2);
    }

    /// With tract's pool of two threads (channels and rows split between them) the rewritten
    /// model gives exactly what it gives on one, on the portable kernels and on the measured
    /// choice.
    #[test]
    fn two_threads_give_the_same_results() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let plain = KernelOptions { forced: dispatch::ForcedKernels::parse("plain").unwrap(), cache_dir: None };
        for kernels in [plain, KernelOptions::default()] {
            let (model, _) = rewritten(kernels.clone());
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            for (file, input) in photo_inputs().into_iter().take(2) {
                let one = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
                let two =
                    multithread_tract_scope(Executor::multithread(2), || plan.run(tvec!(input.into_tvalue()))).unwrap();
                assert_eq!(
                    one[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    two[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    "{file} ({:?})",
                    kernels.forced
                );
            }
        }
    }

    /// A float model has nothing to rewrite.
    #[test]
    fn float_models_are_not_qdq() {
        assert!(!is_qdq(&typed("efficientnet-lite0-fp32.onnx")));
        assert!(is_qdq(&typed("efficientnet-lite0-int8.onnx")));
    }

    /// The products run on the kernels that were forced, and every one of them is a kernel
    /// this CPU can run.
    #[test]
    fn forced_kernels_are_used() {
        let forced = dispatch::ForcedKernels::parse("matrix=tract,depthwise=plain").unwrap();
        let (model, _) = rewritten(KernelOptions { forced, cache_dir: None });
        for n in model.nodes() {
            if let Some(p) = n.op_as::<Int8Product>() {
                let want = if n.op.name() == "Int8Depthwise" { "plain" } else { "tract" };
                assert_eq!(p.kernel(), want, "{}", n.name);
            }
        }
    }
}
