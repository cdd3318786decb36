"""Count multiply-accumulates (MACs) per inference and parameters of ONNX models.

MACs: only Conv, Gemm and MatMul nodes are counted (the element-wise Add,
Clip, pooling and quantize/dequantize work is left out):
  Conv:   output elements x (input channels / group) x kernel h x kernel w
  Gemm:   M x N x K
  MatMul: product of the output dims x K
Shapes come from onnx.shape_inference on the (fixed-shape) graph.

Parameters: elements of the learned initializers. Integer shape constants
(int64) and the scale / zero-point inputs of QuantizeLinear and
DequantizeLinear and the bounds of Clip are not parameters; an int8 weight counts the same as the
float weight it replaces, so the float and int8 Lite0 give the same count.

Usage (from the repository root):
    python scripts/count_macs.py [model.onnx ...]   (default: all in models/)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, shape_inference

from refprep import MODEL_NAMES, load_manifest


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count(path) -> tuple[int, int]:
    """(MACs per inference, parameters) of one ONNX file."""
    model = onnx.load(str(path))
    shapes = _shapes(model)
    g = model.graph

    macs = 0
    for n in g.node:
        if n.op_type == "Conv":
            out = shapes[n.output[0]]
            w = shapes[n.input[1]]  # [M, C/group, kh, kw]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            out = shapes[n.output[0]]
            k = a[0] if _attr(n, "transA", 0) else a[1]
            macs += out[0] * out[1] * k
        elif n.op_type == "MatMul":
            a = shapes[n.input[0]]
            out = shapes[n.output[0]]
            macs += int(np.prod(out)) * a[-1]

    not_params = set()
    for n in g.node:
        # quantization scales / zero points and Clip (ReLU6) bounds
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip"):
            not_params.update(n.input[1:])
    params = 0
    for init in g.initializer:
        if init.name in not_params or init.data_type == TensorProto.INT64:
            continue
        params += int(np.prod(init.dims)) if len(init.dims) else 1
    return macs, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    args = ap.parse_args()
    paths = args.models or [load_manifest(n)["_onnx_path"] for n in MODEL_NAMES]
    print(f"| model | MACs | params |")
    print(f"|---|---:|---:|")
    for p in paths:
        macs, params = count(p)
        print(f"| {Path(p).stem} | {macs:,} ({macs / 1e6:.0f} M) | {params:,} ({params / 1e6:.2f} M) |")


if __name__ == "__main__":
    main()
