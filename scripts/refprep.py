"""Reference image preprocessing for edgecascade, plus small shared helpers.

Every other script imports this module. The Rust runtime reimplements
`preprocess` bit-exactly, so the arithmetic below must not change:

    1. decode with Pillow and convert to RGB;
    2. centre square crop whose side is floor(min(w, h) * crop_fraction + 0.5)
       (never Python's round(), which rounds halves to even), at least 1 px;
    3. Pillow BICUBIC resize of the crop to size x size (no reducing_gap);
    4. float32 (pixel - mean) / std per channel, mean and std as float32;
    5. HWC -> NCHW with batch 1, float32, C-contiguous.

size, crop_fraction, mean and std come from the model's TOML manifest in
models/ (the single source of truth).
"""

from __future__ import annotations

import argparse
import csv
import math
import tomllib
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_DATA_ROOT = REPO_ROOT / ".." / "shared" / "data"

# The models the scripts know about, in the order tables list them.
MODEL_NAMES = [
    "efficientnet-lite0-int8",
    "efficientnet-lite0-fp32",
    "efficientnet-lite1-fp32",
    "efficientnet-lite2-fp32",
]
DATA_SETS = ["imagenet-val-a", "imagenet-sample"]


# ---------------------------------------------------------------- manifests

def manifest_path(name: str, models_dir: Path = MODELS_DIR) -> Path:
    return Path(models_dir) / f"{name}.toml"


def load_manifest(name_or_path, models_dir: Path = MODELS_DIR) -> dict:
    """Load a manifest by model name or by path.

    Adds two keys that are not in the file: `_path` (the manifest) and
    `_onnx_path` (the model file, resolved relative to the manifest).
    """
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = manifest_path(str(name_or_path), models_dir)
    with open(p, "rb") as f:
        m = tomllib.load(f)
    m["_path"] = p
    m["_onnx_path"] = p.parent / m["onnx"]
    m["_classes_path"] = p.parent / m["classes"]
    return m


def input_params(manifest: dict):
    """(size, crop_fraction, mean, std) from a manifest."""
    inp = manifest["input"]
    if inp["layout"] != "nchw" or inp["resize"] != "bicubic":
        raise ValueError(f"unsupported input spec in {manifest.get('_path')}: {inp}")
    return int(inp["size"]), float(inp["crop_fraction"]), list(inp["mean"]), list(inp["std"])


# ------------------------------------------------------------ preprocessing

def crop_box(w: int, h: int, crop_fraction: float):
    """Centre square crop box (left, top, right, bottom) for a w x h image."""
    side = max(1, int(math.floor(min(w, h) * crop_fraction + 0.5)))
    left = (w - side) // 2
    top = (h - side) // 2
    return (left, top, left + side, top + side)


def resized_image(path, size: int, crop_fraction: float) -> Image.Image:
    """Steps 1-3: the cropped and resized uint8 RGB PIL image."""
    img = Image.open(path)
    img = img.convert("RGB")
    w, h = img.size
    crop = img.crop(crop_box(w, h, crop_fraction))
    return crop.resize((size, size), Image.Resampling.BICUBIC)


def normalize(resized: Image.Image, mean, std) -> np.ndarray:
    """Steps 4-5: float32 NCHW tensor of shape [1, 3, size, size]."""
    arr = np.asarray(resized, dtype=np.float32)
    x = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess(path, manifest: dict) -> np.ndarray:
    """The reference preprocessing for one image and one model manifest."""
    size, crop_fraction, mean, std = input_params(manifest)
    return normalize(resized_image(path, size, crop_fraction), mean, std)


def resized_for_manifest(path, manifest: dict) -> Image.Image:
    size, crop_fraction, _, _ = input_params(manifest)
    return resized_image(path, size, crop_fraction)


# ------------------------------------------------------------------ helpers

def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding imagenet-val-a/ and imagenet-sample/ "
        "(default: ../shared/data relative to the repository root)",
    )


def read_labels(set_dir: Path):
    """[(file name, label)] from <set_dir>/labels.csv, sorted by file name."""
    with open(Path(set_dir) / "labels.csv", newline="") as f:
        rows = [(r["file"], int(r["label"])) for r in csv.DictReader(f)]
    return sorted(rows)


def is_qdq(onnx_path) -> bool:
    """True when the ONNX graph holds QuantizeLinear / DequantizeLinear nodes."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)


def ort_session(onnx_path, threads: int = 1, graph_opt: str = "auto"):
    """An ONNX Runtime CPU session limited to `threads` intra-op threads.

    graph_opt: "all" (ORT's default optimisations), "none" (graph run as
    written), or "auto": "none" for QDQ (int8) models, "all" otherwise.

    Why "none" for QDQ: with optimisations on, ORT fuses the QDQ pattern into
    its own int8 kernels (QLinearConv and friends), whose results depend on
    the CPU. On x86 with AVX2 but no VNNI they use u8s8 VPMADDUBSW, which
    saturates, and Lite0-int8 then loses about 4 points of top-1. Unfused,
    ORT computes exactly what the QDQ graph says (DequantizeLinear -> float
    op -> QuantizeLinear), the same on every machine and the same method
    tract uses, so that is the reference.
    """
    import onnxruntime as ort

    if graph_opt == "auto":
        graph_opt = "none" if is_qdq(onnx_path) else "all"
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[graph_opt]
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])


def run_logits(session, manifest: dict, x: np.ndarray) -> np.ndarray:
    """Run one preprocessed input; returns the 1000 float32 logits."""
    out = session.run(None, {manifest["input"]["name"]: x})[0]
    return np.asarray(out, dtype=np.float32).reshape(-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
