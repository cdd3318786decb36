#!/usr/bin/env python3
"""Lay out a model for a serving engine (Triton, KServe, MLServer) with a free batch axis.

The exported ONNX files fix the batch at 1 (input [1, 3, S, S]) and flatten with a constant
`Reshape [1, -1]`, as PyTorch traced them. A server that batches requests needs the batch
axis free. This rewrites a copy: the input's and output's first axis become the symbolic
`N`, and every constant Reshape target `[1, ...]` becomes `[0, ...]` (ONNX: keep that axis),
the same rewrite edgecascade's runner makes in memory when its host batches. It then checks
with ONNX Runtime that batch 1 gives the original's outputs and that a batch of 3 works.

    python3 scripts/serving_model.py models/efficientnet-lite2-fp32.onnx --repository triton-models \
        --name efficientnet-lite2-fp32 --max-batch 16

writes triton-models/efficientnet-lite2-fp32/1/model.onnx and a config.pbtxt with dynamic
batching (see the README's "Serving the large model in Triton or KServe").
Needs: onnx, onnxruntime, numpy.
"""
import argparse
import pathlib
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def free_batch(model: onnx.ModelProto) -> int:
    """Frees the batch axis in place; returns the number of Reshape targets rewritten."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    # Intermediate shapes recorded at batch 1 would contradict other batches.
    del model.graph.value_info[:]
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target = node.input[1]
        if target in inits:
            arr = numpy_helper.to_array(inits[target]).copy()
            if arr.ndim == 1 and arr.size and arr[0] == 1:
                arr[0] = 0
                inits[target].CopyFrom(numpy_helper.from_array(arr, target))
                rewritten += 1
        elif target in consts:
            attr = next(a for a in consts[target].attribute if a.name == "value")
            arr = numpy_helper.to_array(attr.t).copy()
            if arr.ndim == 1 and arr.size and arr[0] == 1:
                arr[0] = 0
                attr.t.CopyFrom(numpy_helper.from_array(arr))
                rewritten += 1
    return rewritten


def check(original: pathlib.Path, freed: pathlib.Path) -> float:
    import onnxruntime as ort

    a = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(freed), providers=["CPUExecutionProvider"])
    name = a.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in a.get_inputs()[0].shape]
    rng = np.random.default_rng(0)
    x = rng.standard_normal([3] + shape[1:]).astype(np.float32)
    want = np.concatenate([a.run(None, {name: x[i : i + 1]})[0] for i in range(3)])
    got = b.run(None, {name: x})[0]
    if got.shape != want.shape:
        sys.exit(f"{freed}: a batch of 3 gave shape {got.shape}, expected {want.shape}")
    return float(np.abs(got - want).max())


CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [ {{ name: "{input}", data_type: TYPE_FP32, dims: [ {in_dims} ] }} ]
output [ {{ name: "{output}", data_type: TYPE_FP32, dims: [ {out_dims} ] }} ]
# Triton's dynamic batcher: requests from many devices queue and run together.
dynamic_batching {{ max_queue_delay_microseconds: 5000 }}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=pathlib.Path)
    ap.add_argument("--repository", type=pathlib.Path, required=True, help="model repository folder to write into")
    ap.add_argument("--name", required=True, help="model name served (the device's link names it)")
    ap.add_argument("--max-batch", type=int, default=16)
    args = ap.parse_args()

    model = onnx.load(str(args.onnx))
    n = free_batch(model)
    onnx.checker.check_model(model)
    out_dir = args.repository / args.name / "1"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    onnx.save(model, str(target))
    diff = check(args.onnx, target)
    tensor_dims = lambda v: ", ".join(str(d.dim_value) for d in v.type.tensor_type.shape.dim[1:])
    (args.repository / args.name / "config.pbtxt").write_text(
        CONFIG.format(
            name=args.name,
            max_batch=args.max_batch,
            input=model.graph.input[0].name,
            in_dims=tensor_dims(model.graph.input[0]),
            output=model.graph.output[0].name,
            out_dims=tensor_dims(model.graph.output[0]),
        )
    )
    print(f"{target}: batch axis free ({n} Reshape target(s) rewritten); batch of 3 vs 3 single runs: max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
