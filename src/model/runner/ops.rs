//! The integer ops the int8 rewrite puts in tract's graph: `Int8Product` (a convolution or
//! matrix product with its requantization, int8 in, int8 out, on the kernel `dispatch` chose)
//! and `Int8Add` (a residual addition). With tract's thread pool (`--threads`), depthwise
//! channels and product rows are split between threads.

use edgecascade_kernels::{Depthwise, Gemm, Geometry, Requant};
use std::fmt;
use std::sync::Arc;

use tract_linalg::multithread::{current_tract_executor, Executor};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_hir::infer::*;
use tract_onnx::tract_hir::internal::{check_input_arity, check_output_arity, Expansion};

pub use super::pool::{in_pool, pool_threads, SPLIT_MACS};
pub use super::quantize::{Quantizer, QuantizerExpansion};
pub use super::tract_gemm::TractGemm;

/// What kind of product a chain is, once its input's shape is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One filter per channel (group = channels): a direct kernel.
    Depthwise,
    /// A pointwise convolution, or a Gemm/MatMul: `[m, k] x [k, n]` on the activations as
    /// they lie.
    Matmul,
    /// Any other convolution (the stem): an int8 im2col, then a matrix product.
    Im2col,
}

/// The product of a chain as the ONNX graph gives it, before shapes are known.
#[derive(Debug, Clone)]
pub enum ProductOp {
    /// A 2D NCHW convolution (OIHW weights, no dilation; group 1 or depthwise).
    Conv { kernel: [usize; 2], strides: [usize; 2], padding: PaddingSpec, group: usize, cin: usize },
    /// `[batch, k] x [k, m]`: Gemm or MatMul with constant weights.
    Gemm { k: usize },
}

impl ProductOp {
    pub fn conv(kernel: [usize; 2], strides: [usize; 2], padding: PaddingSpec, group: usize, cin: usize) -> ProductOp {
        ProductOp::Conv { kernel, strides, padding, group, cin }
    }
}

/// The chain's requantization: QuantizeLinear's `1 / scale` and zero point, and the clip bounds
/// before it, in float (infinite: none).
#[derive(Debug, Clone, Copy)]
pub struct OutputStage {
    pub inv_scale: f32,
    pub zero_point: i32,
    pub lo: f32,
    pub hi: f32,
}

/// A product as the rewrite found it in the ONNX graph: int8 weights `[m, k]` (row-major, one
/// row per output channel), the i32 bias with the input's zero point folded in, the
/// requantization. Its geometry waits for the input's shape ([`ProductParams::spec`]).
pub struct ProductParams {
    pub op: ProductOp,
    pub m: usize,
    /// Weights per output channel.
    pub k: usize,
    /// `[m, k]`; empty once the kernel has its own copy ([`ProductSpec::without_weights`]).
    pub weights: Vec<i8>,
    pub bias: Vec<i32>,
    pub x0: i8,
    pub requant: Requant,
}

impl fmt::Debug for ProductParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} m={} k={}", self.op, self.m, self.k)
    }
}

impl ProductParams {
    /// Folds the input's zero point into the bias (`acc = sum(w * x) - x0 * sum(w) + bias`;
    /// padding is filled with `x0`, so this holds at the borders too). A bias too large for the
    /// accumulators (QDQ exporters saturate the int32 bias of channels whose weights are all
    /// but zero) goes into the requantization as a float offset instead, computed in f64: the
    /// same value, without overflowing i32.
    pub fn new(
        op: ProductOp,
        m: usize,
        weights: Vec<i8>,
        bias: Vec<i32>,
        x0: i32,
        acc_scale: &[f32],
        out: &OutputStage,
    ) -> Result<ProductParams, String> {
        let x0 = i8::try_from(x0).map_err(|_| format!("input zero point {x0} is not an i8"))?;
        if m == 0 || !weights.len().is_multiple_of(m) || bias.len() != m || acc_scale.len() != m {
            return Err("weights or bias do not match the channels".into());
        }
        let k = weights.len() / m;
        let mut requant = Requant::new(acc_scale, out.inv_scale, out.zero_point, out.lo, out.hi);
        let (bias, offset): (Vec<i32>, Vec<f32>) = bias
            .iter()
            .enumerate()
            .map(|(c, &b)| {
                let b = b as i64 - x0 as i64 * weights[c * k..][..k].iter().map(|&w| w as i64).sum::<i64>();
                match i32::try_from(b) {
                    Ok(b) if b.unsigned_abs() <= 1 << 30 => (b, 0.0),
                    _ => (0, (b as f64 * requant.scale[c] as f64) as f32),
                }
            })
            .unzip();
        requant.offset = offset;
        Ok(ProductParams { op, m, k, weights, bias, x0, requant })
    }

    /// The output's shape for an input of shape `input`, or why this product cannot take it.
    pub fn output_shape(&self, input: &[usize]) -> Result<TVec<usize>, String> {
        Ok(self.geometry(input)?.1)
    }

    /// The product's geometry on an input of shape `input`: its kind, the output shape, the
    /// convolution's geometry (per batch item) and the columns of its matrix product.
    fn geometry(&self, input: &[usize]) -> Result<(Kind, TVec<usize>, Geometry, usize), String> {
        let k = self.k;
        match &self.op {
            ProductOp::Gemm { k: depth } => {
                if input.len() != 2 || input[1] != *depth {
                    return Err(format!("input shaped {input:?}, the weights take [batch, {depth}]"));
                }
                let geo = Geometry { cin: k, h: 1, w: 1, kh: 1, kw: 1, sh: 1, sw: 1, pt: 0, pl: 0, oh: 1, ow: 1 };
                Ok((Kind::Matmul, tvec!(input[0], self.m), geo, 1))
            }
            ProductOp::Conv { kernel, strides, padding, group, cin } => {
                if input.len() != 4 || input[1] != *cin {
                    return Err(format!("input shaped {input:?}, the weights take [batch, {cin}, h, w]"));
                }
                let ps = PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec!(kernel[0], kernel[1]),
                    padding: padding.clone(),
                    dilations: None,
                    strides: Some(tvec!(strides[0], strides[1])),
                    input_channels: *cin,
                    output_channels: self.m,
                };
                let pads = ps.computed_padding(&input[2..]);
                let (oh, ow) = (pads[0].convoluted, pads[1].convoluted);
                let geo = Geometry {
                    cin: *cin,
                    h: input[2],
                    w: input[3],
                    kh: kernel[0],
                    kw: kernel[1],
                    sh: strides[0],
                    sw: strides[1],
                    pt: pads[0].pad_before,
                    pl: pads[1].pad_before,
                    oh,
                    ow,
                };
                let pointwise = kernel == &[1, 1]
                    && strides == &[1, 1]
                    && pads.iter().all(|p| p.pad_before == 0 && p.pad_after == 0);
                let kind = if *group > 1 {
                    Kind::Depthwise
                } else if pointwise {
                    Kind::Matmul
                } else {
                    Kind::Im2col
                };
                let n = if kind == Kind::Depthwise { 0 } else { oh * ow };
                Ok((kind, tvec!(input[0], self.m, oh, ow), geo, n))
            }
        }
    }

    /// The product on an input of shape `input`.
    pub fn spec(self: &Arc<Self>, input: &[usize]) -> Result<ProductSpec, String> {
        let (kind, out_shape, geo, n) = self.geometry(input)?;
        Ok(ProductSpec { params: self.clone(), kind, geo, in_shape: input.into(), out_shape, n })
    }
}

/// A product with its shapes: what a kernel is chosen for.
#[derive(Clone)]
pub struct ProductSpec {
    pub params: Arc<ProductParams>,
    pub kind: Kind,
    /// The convolution's geometry for one batch item.
    pub geo: Geometry,
    pub in_shape: TVec<usize>,
    pub out_shape: TVec<usize>,
    /// Columns of the matrix product per batch item (output pixels); 0 for depthwise.
    pub n: usize,
}

impl fmt::Debug for ProductSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} m={} k={} {:?}->{:?}", self.kind, self.m(), self.k(), self.in_shape, self.out_shape)
    }
}

impl ProductSpec {
    /// Output channels (rows of the product).
    pub fn m(&self) -> usize {
        self.params.m
    }

    /// Weights per output channel (the product's depth).
    pub fn k(&self) -> usize {
        self.params.k
    }

    /// The same product without its weights, for when its kernel holds them (packed its own
    /// way): they are not kept twice.
    pub fn without_weights(&self) -> ProductSpec {
        let p = &self.params;
        let params = ProductParams {
            op: p.op.clone(),
            m: p.m,
            k: p.k,
            weights: Vec::new(),
            bias: p.bias.clone(),
            x0: p.x0,
            requant: p.requant.clone(),
        };
        ProductSpec { params: Arc::new(params), ..self.clone() }
    }

    /// The shape as the kernel choice sees it: products of equal signatures run alike.
    pub fn signature(&self) -> String {
        let g = &self.geo;
        match self.kind {
            Kind::Depthwise => format!(
                "depthwise c={} {}x{} k={}x{} s={}x{} p={},{} -> {}x{}",
                g.cin, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.oh, g.ow
            ),
            Kind::Matmul | Kind::Im2col => format!("matrix m={} k={} n={}", self.m(), self.k(), self.n),
        }
    }

    /// Multiply-accumulates of one batch item.
    pub fn macs(&self) -> usize {
        let per_out = if self.kind == Kind::Depthwise { self.geo.kh * self.geo.kw } else { self.k() };
        self.out_shape[1..].iter().product::<usize>() * per_out
    }

    /// Values of one batch item's input and output.
    fn item_sizes(&self) -> (usize, usize) {
        (self.in_shape[1..].iter().product(), self.out_shape[1..].iter().product())
    }
}

/// The shape-free parameters of an addition of two int8 tensors: both dequantizations and the
/// requantization folded into two scales and an offset, and the output's clip bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct AddParams {
    ka: f32,
    kb: f32,
    c: f32,
    y0: i32,
    lo: i32,
    hi: i32,
}

impl AddParams {
    /// From the inputs' scales and zero points and the output's quantization and clip bounds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(sa: f32, a0: i32, sb: f32, b0: i32, inv_y: f32, y0: i32, lo: f32, hi: f32) -> AddParams {
        let (lo, hi) = Requant::bounds(inv_y, y0, lo, hi);
        let (ka, kb) = (sa * inv_y, sb * inv_y);
        AddParams { ka, kb, c: -(a0 as f32 * ka + b0 as f32 * kb), y0, lo, hi }
    }
}

/// The integer product as tract's parser sees it: it types the output from the input's shape,
/// then wires a [`PendingProduct`] (its kernel is chosen once every product's shape is known).
#[derive(Debug, Clone)]
pub struct Int8ProductExpansion(pub Arc<ProductParams>);

impl Expansion for Int8ProductExpansion {
    fn name(&self) -> StaticName {
        "Int8Product".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, DatumType::I8)?;
        s.equals(&outputs[0].datum_type, DatumType::I8)?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        let params = self.0.clone();
        s.given(&inputs[0].shape, move |s, shape| {
            let Some(dims) = shape.iter().map(|d| d.to_usize().ok()).collect::<Option<Vec<usize>>>() else {
                return Ok(());
            };
            let out = params.output_shape(&dims).map_err(TractError::msg)?;
            let out: TVec<TDim> = out.iter().map(|d| d.to_dim()).collect();
            s.equals(&outputs[0].shape, ShapeFactoid::from(out))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        let shape = fact.shape.as_concrete().with_context(|| format!("{prefix}: the input's shape is not fixed"))?;
        let spec = self.0.spec(shape).map_err(|e| TractError::msg(format!("{prefix}: {e}")))?;
        model.wire_node(prefix, PendingProduct(Arc::new(spec)), inputs)
    }
}

/// A product whose kernel is not chosen yet: the typed graph holds it between typing and the
/// kernel choice, which replaces it by an [`Int8Product`].
#[derive(Debug, Clone)]
pub struct PendingProduct(pub Arc<ProductSpec>);

impl PartialEq for PendingProduct {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for PendingProduct {}

impl Op for PendingProduct {
    fn name(&self) -> StaticName {
        "Int8Product (no kernel yet)".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for PendingProduct {
    fn eval(&self, _ctx: &EvalContext, _inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        bail!("int8 product {:?}: no kernel was chosen", self.0)
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for PendingProduct {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(DatumType::I8.fact(&*self.0.out_shape)))
    }

    tract_onnx::tract_core::as_op!();
}

/// The integer addition as tract's parser sees it: both inputs and the output share one shape.
#[derive(Debug, Clone)]
pub struct Int8AddExpansion(pub AddParams);

impl Expansion for Int8AddExpansion {
    fn name(&self) -> StaticName {
        "Int8Add".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        for t in [&inputs[0], &inputs[1], &outputs[0]] {
            s.equals(&t.datum_type, DatumType::I8)?;
        }
        s.equals(&inputs[0].shape, &inputs[1].shape)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (a, b) = (model.outlet_fact(inputs[0])?, model.outlet_fact(inputs[1])?);
        let shape = a.shape.as_concrete().with_context(|| format!("{prefix}: the input's shape is not fixed"))?;
        ensure!(
            b.shape.as_concrete() == Some(shape),
            "{prefix}: an int8 addition of differently shaped tensors ({:?} and {:?}); load the model with --qdq float",
            a.shape,
            b.shape
        );
        model.wire_node(prefix, Int8Add::new(self.0.clone(), shape.into()), inputs)
    }
}

/// The kernel a product runs on.
pub enum Engine {
    Depthwise(Depthwise),
    /// One of `edgecascade_kernels`' matrix kernels.
    Gemm(Gemm),
    /// tract-linalg's int8 matrix kernel.
    Tract(TractGemm),
}

impl Engine {
    /// The kernel's name, as logs, caches and `--int8-kernel` say it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Depthwise(d) => d.kernel().name(),
            Engine::Gemm(g) => g.kernel().name(),
            Engine::Tract(_) => "tract",
        }
    }

    /// [`Engine::run`] on this thread only.
    pub fn run_single(&self, x: &[i8], n: usize, out: &mut [i8]) -> TractResult<()> {
        match self {
            Engine::Depthwise(d) => d.run(x, out),
            Engine::Gemm(g) => g.run(x, n, out),
            Engine::Tract(t) => return t.run(x, n, out),
        }
        Ok(())
    }

    /// Runs the product on `x` (its input, as the graph holds it; for an im2col product, the
    /// columns) into `out`, splitting the work between tract's threads when there are several
    /// and `split` says the product is worth it.
    pub fn run(&self, x: &[i8], n: usize, out: &mut [i8], split: bool) -> TractResult<()> {
        let pool = match current_tract_executor() {
            Executor::MultiThread(pool) if split && pool.current_num_threads() > 1 => Some(pool),
            _ => None,
        };
        match self {
            Engine::Depthwise(d) => {
                let g = d.geometry();
                let plane_out = g.oh * g.ow;
                match pool {
                    Some(pool) => {
                        let per = g.cin.div_ceil(pool.current_num_threads().min(g.cin));
                        pool.scope(|s| {
                            for (i, o) in out.chunks_mut(per * plane_out).enumerate() {
                                let c = i * per..(i * per + o.len() / plane_out);
                                s.spawn(move |_| d.run_channels(c, x, o));
                            }
                        });
                    }
                    _ => d.run(x, out),
                }
                Ok(())
            }
            Engine::Gemm(g) => {
                let (m, b) = (g.m(), g.row_block());
                let blocks = m.div_ceil(b);
                match pool {
                    // Rows split between the threads, whole row blocks each.
                    Some(pool) if blocks >= 2 => {
                        let per = blocks.div_ceil(pool.current_num_threads().min(blocks)) * b;
                        pool.scope(|s| {
                            for (i, rows) in out.chunks_mut(per * n).enumerate() {
                                let r = i * per..(i * per + rows.len() / n);
                                s.spawn(move |_| g.run_rows(r, x, n, rows));
                            }
                        });
                    }
                    _ => g.run(x, n, out),
                }
                Ok(())
            }
            Engine::Tract(t) => t.run(x, n, out),
        }
    }
}

/// The op that replaces a product chain: int8 in, int8 out.
#[derive(Clone)]
pub struct Int8Product {
    spec: Arc<ProductSpec>,
    engine: Arc<Engine>,
    /// Whether the product is split between tract's threads (when there are several).
    split: bool,
}

impl Int8Product {
    /// `split`: whether to split the product between tract's threads, when there are several.
    pub fn new(spec: Arc<ProductSpec>, engine: Engine, split: bool) -> Int8Product {
        Int8Product { spec, engine: Arc::new(engine), split }
    }

    /// The chosen kernel's name.
    pub fn kernel(&self) -> &'static str {
        self.engine.name()
    }
}

impl fmt::Debug for Int8Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Int8Product({:?} on {})", self.spec, self.engine.name())
    }
}

impl PartialEq for Int8Product {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.spec, &other.spec) && Arc::ptr_eq(&self.engine, &other.engine)
    }
}
impl Eq for Int8Product {}

impl Op for Int8Product {
    fn name(&self) -> StaticName {
        match self.spec.kind {
            Kind::Depthwise => "Int8Depthwise".into(),
            Kind::Matmul => "Int8MatMul".into(),
            Kind::Im2col => "Int8Im2colConv".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (p, q) = (&self.spec, &self.spec.params);
        let kernel = match &*self.engine {
            Engine::Tract(t) => format!("tract {}", t.kernel_name()),
            e => e.name().to_owned(),
        };
        Ok(vec![format!(
            "{p:?} kernel {kernel} x0={} y0={} clamp [{}, {}]",
            q.x0, q.requant.y0, q.requant.lo, q.requant.hi
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Int8Product {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.spec;
        let x = &inputs[0];
        ensure!(x.datum_type() == DatumType::I8 && x.shape() == &*p.in_shape, "int8 product: bad input {x:?}");
        let xs = x.try_as_plain_ram()?.as_slice::<i8>()?;
        let (item_in, item_out) = p.item_sizes();
        let t = int8_output(&p.out_shape, |out| {
            // Batch items one after the other (a batch of 1 is the usual case).
            for (x, out) in xs.chunks_exact(item_in).zip(out.chunks_exact_mut(item_out)) {
                match p.kind {
                    Kind::Depthwise | Kind::Matmul => self.engine.run(x, p.n, out, self.split)?,
                    Kind::Im2col => {
                        let cols = edgecascade_kernels::im2col(&p.geo, p.params.x0, x);
                        self.engine.run(&cols, p.n, out, self.split)?
                    }
                }
            }
            Ok(())
        })?;
        Ok(tvec!(t.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Int8Product {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(DatumType::I8.fact(&*self.spec.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let p = &self.spec;
        let per_out = if p.kind == Kind::Depthwise { p.geo.kh * p.geo.kw } else { p.k() };
        let outs: usize = p.out_shape.iter().product();
        Ok(tvec!((Cost::FMA(DatumType::I32), (outs * per_out).to_dim())))
    }

    tract_onnx::tract_core::as_op!();
}

/// `clamp(round_half_even(a * ka + b * kb + c) + y0, lo, hi)` element-wise over two int8
/// tensors of one shape: a residual addition with both dequantizations and the requantization
/// folded into two scales and an offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Add {
    p: AddParams,
    shape: TVec<usize>,
}

impl Int8Add {
    pub fn new(p: AddParams, shape: TVec<usize>) -> Int8Add {
        Int8Add { p, shape }
    }
}

impl Eq for Int8Add {}

impl Op for Int8Add {
    fn name(&self) -> StaticName {
        "Int8Add".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "a x {} + b x {} + {}, y0={} clamp [{}, {}]",
            self.p.ka, self.p.kb, self.p.c, self.p.y0, self.p.lo, self.p.hi
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
            let p = &self.p;
            edgecascade_kernels::add(a, b, p.ka, p.kb, p.c, p.y0, p.lo, p.hi, out);
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

/// An int8 tensor of `shape` whose values `fill` writes in place (the kernels write every one),
/// rather than a buffer copied into a tensor afterwards.
pub(super) fn int8_output(shape: &[usize], fill: impl FnOnce(&mut [i8]) -> TractResult<()>) -> TractResult<Tensor> {
    let mut t = Tensor::zero::<i8>(shape)?;
    fill(t.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?)?;
    Ok(t)
}
