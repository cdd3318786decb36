//! The integer ops the int8 rewrite puts in tract's graph: `Int8Product` (a convolution or
//! matrix product with its requantization, int8 in, int8 out, on the kernel `dispatch` chose)
//! and `Int8Add` (a residual addition). With tract's thread pool (`--threads`), depthwise
//! channels and product rows are split between threads.

use edgecascade_kernels::{Depthwise, Gemm, Geometry, Requant};
use std::fmt;
use std::sync::Arc;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::multithread::{current_tract_executor, Executor};
use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// What kind of product a chain is.
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

/// A product as the rewrite found it, before a kernel is chosen: shapes, geometry, int8
/// weights, the i32 bias with the input's zero point folded in, the requantization.
pub struct ProductSpec {
    pub kind: Kind,
    pub geo: Geometry,
    pub in_shape: TVec<usize>,
    pub out_shape: TVec<usize>,
    /// Output channels (rows of the product).
    pub m: usize,
    /// Weights per output channel (the product's depth).
    pub k: usize,
    /// Columns of the product (output pixels); 0 for depthwise convolutions.
    pub n: usize,
    /// `[m, k]`, row-major.
    pub weights: Vec<i8>,
    /// Per output channel: the model's bias minus `x0 * sum(weights)`.
    pub bias: Vec<i32>,
    pub x0: i8,
    pub requant: Requant,
}

impl fmt::Debug for ProductSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} m={} k={} {:?}->{:?}", self.kind, self.m, self.k, self.in_shape, self.out_shape)
    }
}

impl ProductSpec {
    /// Folds the input's zero point into the bias (`acc = sum(w * x) - x0 * sum(w) + bias`;
    /// padding is filled with `x0`, so this holds at the borders too). A bias too large for the
    /// accumulators (QDQ exporters saturate the int32 bias of channels whose weights are all
    /// but zero) goes into the requantization as a float offset instead, computed in f64: the
    /// same value, without overflowing i32.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        geo: Geometry,
        in_shape: TVec<usize>,
        out_shape: TVec<usize>,
        m: usize,
        k: usize,
        weights: Vec<i8>,
        bias: Vec<i32>,
        x0: i32,
        mut requant: Requant,
    ) -> Result<ProductSpec, String> {
        let x0 = i8::try_from(x0).map_err(|_| format!("input zero point {x0} is not an i8"))?;
        if weights.len() != m * k || bias.len() != m {
            return Err("weights or bias do not match the channels".into());
        }
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
        let n = match kind {
            Kind::Depthwise => 0,
            Kind::Matmul => in_shape.iter().product::<usize>() / k,
            Kind::Im2col => geo.oh * geo.ow,
        };
        Ok(ProductSpec { kind, geo, in_shape, out_shape, m, k, n, weights, bias, x0, requant })
    }

    /// The shape as the kernel choice sees it: products of equal signatures run alike.
    pub fn signature(&self) -> String {
        let g = &self.geo;
        match self.kind {
            Kind::Depthwise => format!(
                "depthwise c={} {}x{} k={}x{} s={}x{} p={},{} -> {}x{}",
                g.cin, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.oh, g.ow
            ),
            Kind::Matmul | Kind::Im2col => format!("matrix m={} k={} n={}", self.m, self.k, self.n),
        }
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
    /// and it is large enough.
    pub fn run(&self, x: &[i8], n: usize, out: &mut [i8]) -> TractResult<()> {
        let pool = match current_tract_executor() {
            Executor::MultiThread(pool) if pool.current_num_threads() > 1 => Some(pool),
            _ => None,
        };
        match self {
            Engine::Depthwise(d) => {
                let g = d.geometry();
                let plane_out = g.oh * g.ow;
                match pool {
                    Some(pool) if g.cin * plane_out * g.kh * g.kw >= PARALLEL_MACS => {
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
                    Some(pool) if m * g.k() * n >= PARALLEL_MACS && blocks >= 2 => {
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

/// Below this many multiply-accumulates a product or convolution runs on one thread (handing
/// work to the pool costs more than it saves).
const PARALLEL_MACS: usize = 1 << 20;

/// tract-linalg's int8 matrix kernel for one product: the kernel, the index of its i8 x i8
/// packing, the weights packed once, the bias (added in the kernel), then the requantization
/// per row.
pub struct TractGemm {
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    packed: Box<dyn MMMInputValue>,
    bias: Tensor,
    m: usize,
    k: usize,
    requant: Requant,
}

impl TractGemm {
    /// tract-linalg's preferred i32-accumulator kernel for this shape.
    pub fn new(spec: &ProductSpec) -> Result<TractGemm, String> {
        let err = |e: TractError| format!("{e:#}");
        let (m, k) = (spec.m, spec.k);
        let mmm = tract_linalg::MmmDispatch::native()
            .preferred_kernel(DatumType::I32, Some(m), Some(k), Some(spec.n.max(1)))
            .ok_or("tract-linalg has no i32 matrix kernel here")?;
        let i8_fmt =
            |f: &dyn tract_linalg::mmm::MMMInputFormat| f.precursor() == tract_linalg::WeightType::Plain(DatumType::I8);
        let packing = mmm
            .packings()
            .iter()
            .position(|(a, b)| i8_fmt(&**a) && i8_fmt(&**b))
            .ok_or_else(|| format!("kernel {} has no i8 x i8 packing", mmm.name()))?;
        let w = Tensor::from_shape(&[m, k], &spec.weights).map_err(err)?;
        let packed = mmm.packings()[packing].0.prepare_one(&w, 1, 0).map_err(err)?;
        let bias = Tensor::from_shape(&[m], &spec.bias).map_err(err)?;
        Ok(TractGemm { mmm, packing, packed, bias, m, k, requant: spec.requant.clone() })
    }

    /// tract's name for its kernel.
    pub fn kernel_name(&self) -> &str {
        self.mmm.name()
    }

    fn run(&self, x: &[i8], n: usize, out: &mut [i8]) -> TractResult<()> {
        let (m, k) = (self.m, self.k);
        ensure!(x.len() == k * n && out.len() == m * n, "tract int8 product: bad sizes");
        let xt = Tensor::from_shape(&[k, n], x)?;
        let b = self.mmm.packings()[self.packing].1.prepare_one(&xt, 0, 1)?;
        let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, n])? };
        unsafe {
            let c = self.mmm.c_view(Some(0), Some(1)).wrap(&acc.view_mut());
            self.mmm.run(
                m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*self.packed),
                        b: AsInputValue::Borrowed(&*b),
                        packing: self.packing,
                    },
                    FusedSpec::BinPerRow(self.bias.view(), BinOp::Add),
                    FusedSpec::Store(c),
                ],
            )?;
        }
        let acc = acc.try_as_plain_ram()?;
        self.requant.rows(0, acc.as_slice::<i32>()?, n, out);
        Ok(())
    }
}

/// The op that replaces a product chain: int8 in, int8 out.
#[derive(Clone)]
pub struct Int8Product {
    spec: Arc<ProductSpec>,
    engine: Arc<Engine>,
}

impl Int8Product {
    pub fn new(spec: Arc<ProductSpec>, engine: Engine) -> Int8Product {
        Int8Product { spec, engine: Arc::new(engine) }
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
        let p = &self.spec;
        let kernel = match &*self.engine {
            Engine::Tract(t) => format!("tract {}", t.kernel_name()),
            e => e.name().to_owned(),
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
        let p = &*self.spec;
        let x = &inputs[0];
        ensure!(x.datum_type() == DatumType::I8 && x.shape() == &*p.in_shape, "int8 product: bad input {x:?}");
        let xs = x.try_as_plain_ram()?.as_slice::<i8>()?;
        let t = int8_output(&p.out_shape, |out| match p.kind {
            Kind::Depthwise | Kind::Matmul => self.engine.run(xs, p.n, out),
            Kind::Im2col => self.engine.run(&edgecascade_kernels::im2col(&p.geo, p.x0, xs), p.n, out),
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
        let per_out = if p.kind == Kind::Depthwise { p.geo.kh * p.geo.kw } else { p.k };
        let outs: usize = p.out_shape.iter().product();
        Ok(tvec!((Cost::FMA(DatumType::I32), (outs * per_out).to_dim())))
    }

    tract_onnx::tract_core::as_op!();
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

impl Int8Add {
    pub fn new(ka: f32, kb: f32, c: f32, y0: i32, lo: i32, hi: i32, shape: TVec<usize>) -> Int8Add {
        Int8Add { ka, kb, c, y0, lo, hi, shape }
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

/// An int8 tensor of `shape` whose values `fill` writes in place (the kernels write every one),
/// rather than a buffer copied into a tensor afterwards.
fn int8_output(shape: &[usize], fill: impl FnOnce(&mut [i8]) -> TractResult<()>) -> TractResult<Tensor> {
    let mut t = Tensor::zero::<i8>(shape)?;
    fill(t.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?)?;
    Ok(t)
}
