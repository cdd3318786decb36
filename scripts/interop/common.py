"""Shared pieces of the interoperability checks (scripts/interop.sh).

- `Checks`: records named PASS / FAIL results, prints each as it happens and
  appends it to the results file the shell script summarises
  ($INTEROP_RESULTS, one `PASS|FAIL<TAB>name<TAB>detail` line per check).
- `photo_paths`, `photo_tensor`: the demo photos in photos/ and their input
  tensors, made by scripts/refprep.py (the reference preprocessing, imported,
  not rewritten) from the served model's manifest.
- `OrtReference`: the served model's own logits from ONNX Runtime on the same
  tensor, the yardstick every server's answer is compared with.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import refprep  # noqa: E402  (needs the path above)

# Image files in photos/ (labels.csv and README.md are not inputs).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class Checks:
    """Named checks; each passes or fails with a one-line detail."""

    def __init__(self, group: str):
        self.group = group
        self.failed = 0
        self.passed = 0
        self.results_path = os.environ.get("INTEROP_RESULTS")

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        status = "PASS" if ok else "FAIL"
        full = f"{self.group}: {name}"
        detail = " ".join(str(detail).split())  # one line, whatever the message held
        print(f"{status}  {full}" + (f"  ({detail})" if detail else ""), flush=True)
        if self.results_path:
            with open(self.results_path, "a") as f:
                f.write(f"{status}\t{full}\t{detail}\n")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def run(self, name: str, fn) -> bool:
        """Runs `fn()`, which returns a detail string (pass) or raises (fail).

        AssertionError's message is the failure's detail; any other exception
        fails the check with its type, message and the line that raised it.
        """
        start = time.monotonic()
        took = lambda: f"{time.monotonic() - start:.1f} s"  # noqa: E731
        try:
            detail = fn()
        except AssertionError as e:
            return self.record(name, False, f"{str(e) or 'assertion failed'}; {took()}")
        except Exception as e:  # the failure is the result: report it, go on
            where = traceback.extract_tb(e.__traceback__)[-1]
            why = f"{type(e).__name__}: {e} [at {Path(where.filename).name}:{where.lineno}]"
            return self.record(name, False, f"{why}; {took()}")
        return self.record(name, True, f"{detail}; {took()}" if detail else took())

    def exit_code(self) -> int:
        return 1 if self.failed else 0


def photo_paths(folder: Path = REPO_ROOT / "photos") -> list[Path]:
    """The demo photos, sorted by name."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images in {folder}")
    return paths


def photo_tensor(path: Path, manifest: dict) -> np.ndarray:
    """The [1, 3, S, S] float32 input tensor of one image, by refprep."""
    return refprep.preprocess(path, manifest)


class OrtReference:
    """The served model run by ONNX Runtime, one image at a time.

    The exported graph has a fixed batch of 1, so a batch is run row by row.
    """

    def __init__(self, manifest: dict):
        self.manifest = manifest
        # "all": ORT's default graph optimisations, right for a float model; it
        # also spares refprep's QDQ probe, which would need the onnx package.
        self.session = refprep.ort_session(manifest["_onnx_path"], threads=2, graph_opt="all")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """[N, classes] float32 logits of an [N, 3, S, S] batch."""
        rows = [refprep.run_logits(self.session, self.manifest, x[None]) for x in batch]
        return np.stack(rows)


def compare_logits(got: np.ndarray, want: np.ndarray, tol: float, what: str) -> str:
    """Asserts shape, closeness and equal top-1 per row; returns a detail string."""
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)}, expected {list(want.shape)}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert diff < tol, f"{what}: max |logit - ORT| = {diff:.3g} >= {tol}"
    top_got, top_want = got.argmax(axis=1), want.argmax(axis=1)
    assert (top_got == top_want).all(), f"{what}: top-1 {top_got.tolist()}, ORT says {top_want.tolist()}"
    return f"max |diff| {diff:.2g}, top-1 {top_got.tolist()}"
