//! tract-linalg's int8 matrix kernel as one candidate of the kernel choice, behind the same
//! call as this crate's kernels.

use super::ops::ProductSpec;
use edgecascade_kernels::Requant;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

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
        let (m, k) = (spec.m(), spec.k());
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
        let w = Tensor::from_shape(&[m, k], &spec.params.weights).map_err(err)?;
        let packed = mmm.packings()[packing].0.prepare_one(&w, 1, 0).map_err(err)?;
        let bias = Tensor::from_shape(&[m], &spec.params.bias).map_err(err)?;
        Ok(TractGemm { mmm, packing, packed, bias, m, k, requant: spec.params.requant.clone() })
    }

    /// tract's name for its kernel.
    pub fn kernel_name(&self) -> &str {
        self.mmm.name()
    }

    pub(super) fn run(&self, x: &[i8], n: usize, out: &mut [i8]) -> TractResult<()> {
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
