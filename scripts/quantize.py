"""Quantize EfficientNet-Lite0 to int8 (QDQ) with ONNX Runtime.

Input:  models/efficientnet-lite0-fp32.onnx (from export_models.py).
Output: models/efficientnet-lite0-int8.onnx.

quantize_static with QuantFormat.QDQ, int8 activations and weights,
per-channel weights, MinMax calibration. Calibration uses 200 images of
imagenet-sample: every 5th file of the name-sorted list (indices 0, 5, 10,
...), preprocessed by refprep with Lite0's int8 manifest. The graph ends in
the classifier's Gemm (logits, no Softmax), so no Softmax gets quantized.

Run from the repository root:
    python scripts/quantize.py [--data-root ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from refprep import MODELS_DIR, add_data_root_arg, load_manifest, preprocess, read_labels, sha256

CALIB_SET = "imagenet-sample"
CALIB_STRIDE = 5
CALIB_COUNT = 200


def calibration_files(data_root: Path) -> list[Path]:
    set_dir = data_root / CALIB_SET
    names = sorted(p.name for p in set_dir.iterdir() if p.name != "labels.csv" and p.is_file())
    # Cross-check against labels.csv so a stray file cannot slip in.
    labelled = {f for f, _ in read_labels(set_dir)}
    if set(names) != labelled:
        raise RuntimeError(f"{set_dir}: files and labels.csv disagree")
    chosen = names[::CALIB_STRIDE][:CALIB_COUNT]
    if len(chosen) != CALIB_COUNT:
        raise RuntimeError(f"expected {CALIB_COUNT} calibration images, got {len(chosen)}")
    return [set_dir / n for n in chosen]


class RefprepReader(CalibrationDataReader):
    def __init__(self, files: list[Path], manifest: dict):
        self._input = manifest["input"]["name"]
        self._tensors = [preprocess(f, manifest) for f in files]
        self._it = iter(self._tensors)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self._input: x}

    def rewind(self):
        self._it = iter(self._tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_root_arg(ap)
    ap.add_argument("--src", type=Path, default=MODELS_DIR / "efficientnet-lite0-fp32.onnx")
    ap.add_argument("--out", type=Path, default=MODELS_DIR / "efficientnet-lite0-int8.onnx")
    args = ap.parse_args()

    manifest = load_manifest("efficientnet-lite0-int8")
    files = calibration_files(args.data_root)
    print(f"calibrating on {len(files)} images of {CALIB_SET} ({files[0].name} ... {files[-1].name})")
    reader = RefprepReader(files, manifest)

    src = onnx.load(str(args.src))
    if any(n.op_type == "Softmax" for n in src.graph.node):
        raise RuntimeError("the float graph contains a Softmax; it must output logits")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Write to a temp file, check it, then save it to the final path.
        tmp_out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(args.src),
            str(tmp_out),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        m = onnx.load(str(tmp_out))
        if any(n.op_type == "Softmax" for n in m.graph.node):
            raise RuntimeError("quantized graph contains a Softmax")
        onnx.save(m, str(args.out))

    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"ops: {dict(sorted(ops.items()))}")
    print(f"{args.out}: {args.out.stat().st_size} bytes  sha256 {sha256(args.out)}")


if __name__ == "__main__":
    main()
