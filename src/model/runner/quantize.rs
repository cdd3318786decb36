//! The lone quantizations of the rewritten graph (the model's input, the pooled features, the
//! logits): QuantizeLinear and DequantizeLinear with one scale, as parsed (`QuantizerExpansion`)
//! and as run (`Quantizer`, on the loops of `edgecascade_kernels`).

use super::ops::int8_output;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::infer::*;
use tract_onnx::tract_hir::internal::{check_input_arity, check_output_arity, Expansion};

/// A lone QuantizeLinear (float to int8) or DequantizeLinear (int8 to float) with one scale, as
/// tract's parser sees it: the output has the input's shape.
#[derive(Debug, Clone)]
pub enum QuantizerExpansion {
    Quantize { inv_scale: f32, zero_point: i32 },
    Dequantize { scale: f32, zero_point: i32 },
}

impl Expansion for QuantizerExpansion {
    fn name(&self) -> StaticName {
        match self {
            QuantizerExpansion::Quantize { .. } => "Int8Quantize".into(),
            QuantizerExpansion::Dequantize { .. } => "Int8Dequantize".into(),
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        match self {
            QuantizerExpansion::Quantize { .. } => s.equals(&outputs[0].datum_type, DatumType::I8)?,
            QuantizerExpansion::Dequantize { .. } => {
                s.equals(&inputs[0].datum_type, DatumType::I8)?;
                s.equals(&outputs[0].datum_type, DatumType::F32)?
            }
        }
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        match *self {
            // A float input other than f32 (rare): tract's own quantizer.
            QuantizerExpansion::Quantize { inv_scale, zero_point } if dt != DatumType::F32 => model.wire_node(
                prefix,
                tract_onnx::tract_core::ops::quant::quantize_linear_i8(inv_scale, zero_point as i8),
                inputs,
            ),
            QuantizerExpansion::Quantize { inv_scale, zero_point } => {
                model.wire_node(prefix, Quantizer::Quantize { inv_scale, zero_point }, inputs)
            }
            QuantizerExpansion::Dequantize { scale, zero_point } => {
                model.wire_node(prefix, Quantizer::Dequantize { scale, zero_point }, inputs)
            }
        }
    }
}

/// QuantizeLinear f32 to int8, or DequantizeLinear int8 to f32, one scale, on the vectorised
/// loops of `edgecascade_kernels`.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantizer {
    Quantize { inv_scale: f32, zero_point: i32 },
    Dequantize { scale: f32, zero_point: i32 },
}

impl Eq for Quantizer {}

impl Op for Quantizer {
    fn name(&self) -> StaticName {
        match self {
            Quantizer::Quantize { .. } => "Int8Quantize".into(),
            Quantizer::Dequantize { .. } => "Int8Dequantize".into(),
        }
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Quantizer {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let t = match *self {
            Quantizer::Quantize { inv_scale, zero_point } => {
                let xs = x.try_as_plain_ram()?;
                let xs = xs.as_slice::<f32>()?;
                int8_output(x.shape(), |out| {
                    edgecascade_kernels::quantize(xs, inv_scale, zero_point, out);
                    Ok(())
                })?
            }
            Quantizer::Dequantize { scale, zero_point } => {
                let xs = x.try_as_plain_ram()?;
                let xs = xs.as_slice::<i8>()?;
                let mut t = Tensor::zero::<f32>(x.shape())?;
                edgecascade_kernels::dequantize(
                    xs,
                    scale,
                    zero_point,
                    t.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                );
                t
            }
        };
        Ok(tvec!(t.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Quantizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = match self {
            Quantizer::Quantize { .. } => DatumType::I8,
            Quantizer::Dequantize { .. } => DatumType::F32,
        };
        Ok(tvec!(dt.fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}
