//! The int8 rewrite of QDQ models, on the ONNX graph itself, before tract builds its own:
//! every `DequantizeLinear -> Conv/Gemm/MatMul -> [Clip/Relu] -> QuantizeLinear` chain (a
//! product) and every `DequantizeLinear + DequantizeLinear -> Add -> QuantizeLinear` (a residual
//! addition) becomes one node that takes the int8 tensor the chain started from and gives the
//! int8 tensor it ended with; the weights' and biases' DequantizeLinear nodes go with it. tract
//! then never sees (nor types, nor copies into float) the quantized weights: they go from the
//! ONNX initializers straight into the integer ops (`ops`), with the bias and the input's zero
//! point folded into one i32 per output channel and the requantization (per-channel scale,
//! output zero point, clip bounds) as the product's output stage. Which kernel runs each
//! product is `dispatch`'s choice, once the shapes are known.
//!
//! A chain that does not match exactly (weights not int8 and symmetric, a bias that is not the
//! int32 one QDQ exporters write, dilations, groups other than 1 or depthwise, an output with
//! more than one consumer, ...) is left as tract runs it, with the reason logged.

use super::ops::{AddParams, Kind, ProductOp, ProductParams};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::PaddingSpec;

/// The op type of the nodes that replace chains. tract does not know it (it parses them as
/// placeholders); [`install`] puts the integer ops in their place.
pub const OP_TYPE: &str = "EdgecascadeInt8";

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

/// Candidate products left in float: each one's name and why.
pub type Skipped = Vec<(String, String)>;

/// A chain of the ONNX graph that matched: the int8 tensors it starts from, the int8 tensor it
/// ends with, and what replaces it.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The name of the node that replaces it (the product's or the addition's).
    pub name: String,
    /// The int8 inputs (one for products, two for additions), by tensor name.
    pub x: Vec<String>,
    pub y: String,
    pub op: ChainOp,
}

#[derive(Debug, Clone)]
pub enum ChainOp {
    Product(Arc<ProductParams>),
    Add(AddParams),
    /// A lone QuantizeLinear of a float tensor to int8 (the model's input), one scale.
    Quantize {
        inv_scale: f32,
        zero_point: i32,
    },
    /// A lone DequantizeLinear of an int8 tensor (before a float op, or the logits), one scale.
    Dequantize {
        scale: f32,
        zero_point: i32,
    },
}

/// Whether the ONNX graph dequantizes something (a QDQ model).
pub fn is_qdq(proto: &ModelProto) -> bool {
    proto.graph.as_ref().is_some_and(|g| g.node.iter().any(|n| n.op_type == "DequantizeLinear"))
}

/// Finds every chain of `proto` that matches and replaces it by one `OP_TYPE` node; removes the
/// nodes and initializers nothing reads any more. `dir` is the model's folder (for tensors
/// stored beside the file). Returns the chains, in graph order, and the products left in float.
pub fn rewrite_proto(proto: &mut ModelProto, dir: Option<&str>) -> TractResult<(Vec<Chain>, Skipped)> {
    let Some(graph) = proto.graph.as_mut() else { return Ok((vec![], vec![])) };
    let (chains, removed, skipped) = {
        let g = Graph::new(graph, dir);
        let mut chains = vec![];
        let mut removed: HashSet<usize> = HashSet::new();
        let mut skipped = vec![];
        for (i, node) in graph.node.iter().enumerate() {
            let name = node_name(node);
            let found = match node.op_type.as_str() {
                "Conv" | "Gemm" | "MatMul" => Some(g.product(i)),
                "Add" => g.addition(i).map(Ok),
                _ => None,
            };
            match found {
                Some(Ok((chain, nodes))) => {
                    removed.extend(nodes);
                    chains.push(chain);
                }
                Some(Err(why)) => {
                    log::warn!("int8 rewrite: {name} stays in float: {why}");
                    skipped.push((name, why));
                }
                None => {}
            }
        }
        (chains, removed, skipped)
    };
    // The chains' nodes make way for one node each, where the chain's last node was (its
    // inputs are all computed before that).
    let mut nodes = std::mem::take(&mut graph.node);
    let mut by_y: HashMap<&str, &Chain> = chains.iter().map(|c| (c.y.as_str(), c)).collect();
    let mut kept = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.drain(..).enumerate() {
        if let Some(chain) = node.output.first().and_then(|o| by_y.remove(o.as_str())) {
            kept.push(NodeProto {
                name: chain.name.clone(),
                op_type: OP_TYPE.into(),
                input: chain.x.clone(),
                output: vec![chain.y.clone()],
                ..NodeProto::default()
            });
        } else if !removed.contains(&i) {
            kept.push(node);
        }
    }
    graph.node = kept;
    drop_unused(graph);
    let mut chains = chains;
    chains.extend(rewrite_quantizers(graph, dir));
    Ok((chains, skipped))
}

/// The QuantizeLinear and DequantizeLinear nodes left between float ops and the integer ones
/// (the model's input, a pooling in float, the logits) with one scale and an int8 zero point
/// become `OP_TYPE` nodes too, on vectorised kernels.
fn rewrite_quantizers(graph: &mut tract_onnx::pb::GraphProto, dir: Option<&str>) -> Vec<Chain> {
    let mut found = vec![];
    {
        let g = Graph::new(graph, dir);
        for (i, node) in graph.node.iter().enumerate() {
            let quantize = match node.op_type.as_str() {
                "QuantizeLinear" => true,
                "DequantizeLinear" => false,
                _ => continue,
            };
            let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else { continue };
            if g.inits.contains_key(x.as_str()) {
                continue;
            }
            let Ok(scale) = g.scalar_f32(node.input.get(1)) else { continue };
            let zp = node.input.get(2).filter(|z| !z.is_empty()).and_then(|z| g.init(z).ok().flatten());
            let Some(zp) = zp.filter(|z| z.datum_type() == DatumType::I8 && z.len() == 1) else { continue };
            let Ok(zp) = i32s(&zp) else { continue };
            let op = if quantize {
                ChainOp::Quantize { inv_scale: 1.0 / scale, zero_point: zp[0] }
            } else {
                ChainOp::Dequantize { scale, zero_point: zp[0] }
            };
            found.push((i, Chain { name: node_name(node), x: vec![x.clone()], y: y.clone(), op }));
        }
    }
    for (i, chain) in &found {
        graph.node[*i] = NodeProto {
            name: chain.name.clone(),
            op_type: OP_TYPE.into(),
            input: chain.x.clone(),
            output: vec![chain.y.clone()],
            ..NodeProto::default()
        };
    }
    found.into_iter().map(|(_, c)| c).collect()
}

/// Removes, until none is left, the nodes none of whose outputs is read (by a node or as a
/// graph output), then the initializers no node reads.
fn drop_unused(graph: &mut tract_onnx::pb::GraphProto) {
    loop {
        let read: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .collect();
        let before = graph.node.len();
        graph.node.retain(|n| n.output.iter().any(|o| read.contains(o)));
        if graph.node.len() == before {
            let read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(|s| s.as_str())).collect();
            graph.initializer.retain(|t| read.contains(t.name.as_str()));
            return;
        }
    }
}

/// Puts the integer ops in place of the `OP_TYPE` placeholders tract parsed.
pub fn install(model: &mut InferenceModel, chains: &[Chain]) -> TractResult<()> {
    use super::ops::{Int8AddExpansion, Int8ProductExpansion, QuantizerExpansion};
    use tract_onnx::tract_hir::internal::expand;
    for chain in chains {
        let id = model.node_by_name(&chain.name)?.id;
        model.node_mut(id).op = match &chain.op {
            ChainOp::Product(p) => expand(Int8ProductExpansion(p.clone())),
            ChainOp::Add(a) => expand(Int8AddExpansion(a.clone())),
            &ChainOp::Quantize { inv_scale, zero_point } => {
                expand(QuantizerExpansion::Quantize { inv_scale, zero_point })
            }
            &ChainOp::Dequantize { scale, zero_point } => expand(QuantizerExpansion::Dequantize { scale, zero_point }),
        };
    }
    Ok(())
}

/// Counts what `chains` rewrite (products by the kind their shapes make them, known once typed:
/// `kinds`), beside what was skipped.
pub fn report(kinds: &[Kind], adds: usize, skipped: Skipped) -> Rewrite {
    let mut r = Rewrite { add: adds, skipped, ..Rewrite::default() };
    for k in kinds {
        match k {
            Kind::Depthwise => r.depthwise += 1,
            Kind::Matmul => r.matmul += 1,
            Kind::Im2col => r.im2col += 1,
        }
    }
    r
}

fn node_name(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_else(|| node.op_type.clone())
    }
}

/// The ONNX graph, indexed: who produces and who reads each tensor, the initializers.
struct Graph<'a> {
    nodes: &'a [NodeProto],
    producer: HashMap<&'a str, usize>,
    readers: HashMap<&'a str, usize>,
    outputs: HashSet<&'a str>,
    inits: HashMap<&'a str, &'a TensorProto>,
    dir: Option<&'a str>,
}

/// A constant that is the dequantization of an integer tensor: `(values - zero point) * scale`
/// with one scale and zero point, or one per element of axis 0.
struct QConst {
    values: Tensor,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

/// Where a chain ends: the QuantizeLinear after the product (and its clip).
struct Quantizer {
    /// The QuantizeLinear's output.
    y: String,
    inv_scale: f32,
    zero_point: i32,
    /// The clip bounds in float, before quantization (infinite: none).
    lo: f32,
    hi: f32,
    /// The nodes from the product's output to the QuantizeLinear.
    nodes: Vec<usize>,
}

impl<'a> Graph<'a> {
    fn new(graph: &'a tract_onnx::pb::GraphProto, dir: Option<&'a str>) -> Graph<'a> {
        let mut producer = HashMap::new();
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for x in n.input.iter().filter(|x| !x.is_empty()) {
                *readers.entry(x.as_str()).or_default() += 1;
            }
        }
        Graph {
            nodes: &graph.node,
            producer,
            readers,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
            inits: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            dir,
        }
    }

    fn init(&self, name: &str) -> Result<Option<Tensor>, String> {
        let Some(t) = self.inits.get(name) else { return Ok(None) };
        let resolver = tract_onnx::data_resolver::default();
        tract_onnx::tensor::load_tensor(&*resolver, t, self.dir).map(Some).map_err(|e| format!("{name}: {e:#}"))
    }

    fn producer(&self, tensor: &str) -> Option<&'a NodeProto> {
        self.producer.get(tensor).map(|&i| &self.nodes[i])
    }

    /// The only node reading `tensor`, when it is not also a graph output.
    fn sole_reader(&self, tensor: &str) -> Result<usize, String> {
        if self.outputs.contains(tensor) {
            return Err(format!("{tensor} is a model output"));
        }
        let n = self.readers.get(tensor).copied().unwrap_or(0);
        if n != 1 {
            return Err(format!("{tensor} has {n} consumers, not one"));
        }
        self.nodes.iter().position(|node| node.input.iter().any(|x| x == tensor)).ok_or("no consumer".into())
    }

    /// The input of a product or addition: a per-tensor DequantizeLinear of an int8 tensor that
    /// is not a constant. Returns that tensor's name, the scale and the zero point.
    fn activation(&self, tensor: &str) -> Result<(String, f32, i32), String> {
        let dq = self.producer(tensor).filter(|n| n.op_type == "DequantizeLinear");
        let dq = dq.ok_or_else(|| format!("input {tensor} is not dequantized"))?;
        let x = dq.input.first().ok_or("DequantizeLinear without input")?;
        if self.inits.contains_key(x.as_str()) {
            return Err(format!("input {tensor} is a constant"));
        }
        let scale = self.scalar_f32(dq.input.get(1))?;
        let zp = match dq.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => self.init(z)?.ok_or_else(|| format!("zero point {z} is not a constant"))?,
            None => return Err(format!("input {x} is quantized as u8 (no zero point), not i8")),
        };
        if zp.datum_type() != DatumType::I8 || zp.len() != 1 {
            return Err(format!("input {x} is quantized as {:?}, not one i8 zero point", zp.datum_type()));
        }
        Ok((x.clone(), scale, i32s(&zp)?[0]))
    }

    fn scalar_f32(&self, name: Option<&String>) -> Result<f32, String> {
        let name = name.ok_or("missing scale")?;
        let t = self.init(name)?.ok_or_else(|| format!("{name} is not a constant"))?;
        let v = f32s(&t)?;
        if v.len() != 1 {
            return Err(format!("{name} has {} values, not one", v.len()));
        }
        Ok(v[0])
    }

    /// A DequantizeLinear of a constant integer tensor, per tensor or along axis 0.
    fn qconst(&self, tensor: &str) -> Result<QConst, String> {
        let dq = self.producer(tensor).filter(|n| n.op_type == "DequantizeLinear");
        let dq = dq.ok_or_else(|| format!("{tensor} is not a dequantized constant"))?;
        let values = dq.input.first().ok_or("DequantizeLinear without input")?;
        let values = self.init(values)?.ok_or_else(|| format!("{tensor} is not a dequantized constant"))?;
        let scale_name = dq.input.get(1).ok_or("missing scale")?;
        let scales = f32s(&self.init(scale_name)?.ok_or_else(|| format!("{scale_name} is not a constant"))?)?;
        let zero_points = match dq.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => i32s(&self.init(z)?.ok_or_else(|| format!("{z} is not a constant"))?)?,
            None => vec![0],
        };
        let axis = dq.attribute.iter().find(|a| a.name == "axis").map_or(1, |a| a.i);
        let rank = values.rank() as i64;
        if (scales.len() > 1 || zero_points.len() > 1) && axis != 0 && axis != -rank {
            return Err(format!("{tensor} is quantized along axis {axis}, not the output channels"));
        }
        Ok(QConst { values, scales, zero_points })
    }

    /// The requantization after the product: the single consumer of `tensor`, through Clip or
    /// Relu with constant bounds, must be a QuantizeLinear to int8 with one scale and zero point.
    fn quantizer(&self, tensor: &str) -> Result<Quantizer, String> {
        let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
        let mut nodes = vec![];
        let mut t = tensor.to_owned();
        loop {
            let i = self.sole_reader(&t)?;
            let next = &self.nodes[i];
            nodes.push(i);
            match next.op_type.as_str() {
                "QuantizeLinear" => {
                    let inv_scale = 1.0 / self.scalar_f32(next.input.get(1))?;
                    let zp = next.input.get(2).filter(|z| !z.is_empty()).ok_or("QuantizeLinear to u8, not i8")?;
                    let zp = self.init(zp)?.ok_or("the output zero point is not a constant")?;
                    if zp.datum_type() != DatumType::I8 || zp.len() != 1 {
                        return Err(format!("quantized as {:?}, not one i8 zero point", zp.datum_type()));
                    }
                    let y = next.output.first().ok_or("QuantizeLinear without output")?.clone();
                    return Ok(Quantizer { y, inv_scale, zero_point: i32s(&zp)?[0], lo, hi, nodes });
                }
                "Relu" => lo = lo.max(0.0),
                "Clip" => {
                    // Bounds as inputs (opset 11 and later) or attributes (before).
                    let bound = |ix: usize, attr: &str| -> Result<Option<f32>, String> {
                        match next.input.get(ix).filter(|s| !s.is_empty()) {
                            Some(_) => self.scalar_f32(next.input.get(ix)).map(Some),
                            None => Ok(next.attribute.iter().find(|a| a.name == attr).map(|a| a.f)),
                        }
                    };
                    if let Some(b) = bound(1, "min")? {
                        lo = lo.max(b);
                    }
                    if let Some(b) = bound(2, "max")? {
                        hi = hi.min(b);
                    }
                }
                other => return Err(format!("followed by {other}, not QuantizeLinear")),
            }
            t = next.output.first().ok_or("a node without output")?.clone();
        }
    }

    /// `DequantizeLinear(a) + DequantizeLinear(b) -> QuantizeLinear` of two int8 activations:
    /// one addition. Anything else is not a QDQ addition and is left alone without a word.
    fn addition(&self, i: usize) -> Option<(Chain, Vec<usize>)> {
        let node = &self.nodes[i];
        if node.input.len() != 2 {
            return None;
        }
        let (a, sa, a0) = self.activation(&node.input[0]).ok()?;
        let (b, sb, b0) = self.activation(&node.input[1]).ok()?;
        let q = match self.quantizer(node.output.first()?) {
            Ok(q) => q,
            Err(why) => {
                log::warn!("int8 rewrite: {} stays in float: {why}", node_name(node));
                return None;
            }
        };
        let params = AddParams::new(sa, a0, sb, b0, q.inv_scale, q.zero_point, q.lo, q.hi);
        let mut nodes = q.nodes;
        nodes.push(i);
        Some((Chain { name: node_name(node), x: vec![a, b], y: q.y, op: ChainOp::Add(params) }, nodes))
    }

    /// A Conv, Gemm or MatMul between a dequantized int8 activation, dequantized int8 weights
    /// (symmetric, per tensor or per output channel), an optional int32 bias dequantized with
    /// the product's scale, and a QuantizeLinear to int8.
    fn product(&self, i: usize) -> Result<(Chain, Vec<usize>), String> {
        let node = &self.nodes[i];
        let attr_i = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
        let attr_ints = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone());
        let (x, x_scale, x0) = self.activation(node.input.first().ok_or("no input")?)?;
        let w = self.qconst(node.input.get(1).ok_or("no weights")?)?;
        if w.values.datum_type() != DatumType::I8 {
            return Err(format!("weights are {:?}, not i8", w.values.datum_type()));
        }
        if w.zero_points.iter().any(|&z| z != 0) {
            return Err("weights have a non-zero zero point".into());
        }
        let ws = w.values.shape().to_vec();
        let values = i8s(&w.values)?;
        let (kind, m, weights) = match node.op_type.as_str() {
            "Conv" => {
                if ws.len() != 4 {
                    return Err(format!("weights shaped {ws:?}: only 2D convolutions"));
                }
                if attr_ints("dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
                    return Err("dilated".into());
                }
                let group = attr_i("group").unwrap_or(1).max(1) as usize;
                let kernel = [ws[2], ws[3]];
                if attr_ints("kernel_shape").is_some_and(|k| k.iter().map(|&k| k as usize).ne(kernel)) {
                    return Err("kernel_shape does not match the weights".into());
                }
                let strides = attr_ints("strides").map_or([1, 1], |s| [s[0] as usize, s[1] as usize]);
                let auto_pad = node.attribute.iter().find(|a| a.name == "auto_pad").map(|a| a.s.clone());
                let padding = match (attr_ints("pads"), auto_pad.as_deref()) {
                    (Some(p), _) if p.len() == 4 => {
                        PaddingSpec::Explicit(tvec!(p[0] as usize, p[1] as usize), tvec!(p[2] as usize, p[3] as usize))
                    }
                    (Some(p), _) => return Err(format!("pads {p:?}")),
                    (None, None | Some(b"NOTSET")) => PaddingSpec::Explicit(tvec!(0, 0), tvec!(0, 0)),
                    (None, Some(b"VALID")) => PaddingSpec::Valid,
                    (None, Some(b"SAME_UPPER")) => PaddingSpec::SameUpper,
                    (None, Some(b"SAME_LOWER")) => PaddingSpec::SameLower,
                    (None, Some(other)) => return Err(format!("auto_pad {}", String::from_utf8_lossy(other))),
                };
                let cout = ws[0];
                let cin = ws[1] * group;
                if group != 1 && !(group == cin && group == cout) {
                    return Err(format!("group {group} is neither 1 nor depthwise"));
                }
                (ProductOp::conv(kernel, strides, padding, group, cin), cout, values)
            }
            "Gemm" | "MatMul" => {
                if ws.len() != 2 {
                    return Err(format!("weights shaped {ws:?}"));
                }
                let gemm = node.op_type == "Gemm";
                let f = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.f);
                if gemm && (f("alpha").is_some_and(|a| a != 1.0) || f("beta").is_some_and(|b| b != 1.0)) {
                    return Err("alpha or beta is not 1".into());
                }
                if gemm && attr_i("transA").is_some_and(|t| t != 0) {
                    return Err("transA".into());
                }
                // Gemm with transB holds [m, k]; MatMul and Gemm without it, [k, m].
                let transposed = gemm && attr_i("transB").is_some_and(|t| t != 0);
                let (m, k) = if transposed { (ws[0], ws[1]) } else { (ws[1], ws[0]) };
                if w.scales.len() > 1 && !transposed {
                    return Err("weight scales are not per output".into());
                }
                let weights = if transposed {
                    values
                } else {
                    (0..m).flat_map(|j| (0..k).map(move |i| (i, j))).map(|(i, j)| values[i * m + j]).collect()
                };
                (ProductOp::Gemm { k }, m, weights)
            }
            other => return Err(format!("{other} is not a product")),
        };
        let w_scales = (0..m)
            .map(|c| per_channel(&w.scales, c, m).ok_or("weight scales are neither per tensor nor per output channel"))
            .collect::<Result<Vec<f32>, _>>()?;
        let acc_scale: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
        let bias_name = node.input.get(2).filter(|b| !b.is_empty());
        let bias = self.bias(bias_name.map(|s| s.as_str()), &acc_scale)?;
        let q = self.quantizer(node.output.first().ok_or("no output")?)?;
        let params = ProductParams::new(kind, m, weights, bias, x0, &acc_scale, &q_params(&q))?;
        let mut nodes = q.nodes;
        nodes.push(i);
        Ok((Chain { name: node_name(node), x: vec![x], y: q.y, op: ChainOp::Product(Arc::new(params)) }, nodes))
    }

    /// The i32 bias of each output channel, from a bias that dequantizes with scale
    /// `x_scale * w_scale[c]` (what QDQ exporters write), or from a float constant that is
    /// exactly such a bias.
    fn bias(&self, tensor: Option<&str>, acc_scale: &[f32]) -> Result<Vec<i32>, String> {
        let cout = acc_scale.len();
        let Some(tensor) = tensor else { return Ok(vec![0; cout]) };
        if let Ok(q) = self.qconst(tensor) {
            if q.values.len() != cout && q.values.len() != 1 {
                return Err(format!("bias has {} values for {cout} channels", q.values.len()));
            }
            if !matches!(q.values.datum_type(), DatumType::I32 | DatumType::I8) {
                return Err(format!("bias is {:?}, not integer", q.values.datum_type()));
            }
            let v = i32s(&q.values)?;
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
        let b = f32s(&self.init(tensor)?.ok_or("bias is neither a quantized nor a float constant")?)?;
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
}

fn q_params(q: &Quantizer) -> super::ops::OutputStage {
    super::ops::OutputStage { inv_scale: q.inv_scale, zero_point: q.zero_point, lo: q.lo, hi: q.hi }
}

/// The per-output-channel value of a parameter given once or per channel.
fn per_channel<T: Copy>(v: &[T], c: usize, channels: usize) -> Option<T> {
    match v.len() {
        1 => Some(v[0]),
        n if n == channels => Some(v[c]),
        _ => None,
    }
}

fn f32s(t: &Tensor) -> Result<Vec<f32>, String> {
    let t = t.cast_to::<f32>().map_err(|e| e.to_string())?;
    Ok(t.try_as_plain_ram().map_err(|e| e.to_string())?.as_slice::<f32>().map_err(|e| e.to_string())?.to_vec())
}

fn i32s(t: &Tensor) -> Result<Vec<i32>, String> {
    let t = t.cast_to::<i32>().map_err(|e| e.to_string())?;
    Ok(t.try_as_plain_ram().map_err(|e| e.to_string())?.as_slice::<i32>().map_err(|e| e.to_string())?.to_vec())
}

/// An int8 tensor's values.
pub(crate) fn i8s(t: &Tensor) -> Result<Vec<i8>, String> {
    Ok(t.try_as_plain_ram().map_err(|e| e.to_string())?.as_slice::<i8>().map_err(|_| "not i8")?.to_vec())
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
