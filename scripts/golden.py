"""Write the golden test fixtures in tests/golden/ from the demo photos.

* tests/golden/<photo stem>-<size>.png for size 224 (Lite0 manifest, crop
  fraction 224/256) and 260 (Lite2 manifest, crop fraction 260/292): the
  uint8 RGB image after refprep's decode + centre crop + bicubic resize,
  before normalisation, saved as lossless PNG.
* tests/golden/logits.json:
  { "<photo file>": { "<model>": [1000 logits] } } for efficientnet-lite0-int8,
  efficientnet-lite0-fp32 and efficientnet-lite2-fp32: ONNX Runtime (CPU, one
  thread; graph optimisations off for the int8 QDQ model, see
  refprep.ort_session) on refprep's float32 input. Each logit is the float32 value
  printed as the shortest decimal that round-trips to it (numpy's float32
  repr, always positional, e.g. -1.2345678 or 3.0),
  so parsing it as f32 gives back the exact ORT output.
* tests/golden/decoded.json: per photo, the decoded image's size, Pillow
  mode and the sha256 of its RGB pixels (after convert("RGB"), before the
  crop), to tell a decoder mismatch from a resize mismatch.

Run from the repository root:  python scripts/golden.py
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from refprep import (
    REPO_ROOT,
    load_manifest,
    normalize,
    ort_session,
    resized_for_manifest,
    run_logits,
    input_params,
)

SIZE_MANIFESTS = {224: "efficientnet-lite0-fp32", 260: "efficientnet-lite2-fp32"}
LOGIT_MODELS = ["efficientnet-lite0-int8", "efficientnet-lite0-fp32", "efficientnet-lite2-fp32"]


def f32_repr(v: np.float32) -> str:
    """Shortest decimal that round-trips to the same float32 (e.g. "3.0")."""
    s = np.format_float_positional(np.float32(v), unique=True, trim="0")
    if np.float32(float(s)) != np.float32(v):
        raise AssertionError(f"{s} does not round-trip to {v!r}")
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos-dir", type=Path, default=REPO_ROOT / "photos")
    ap.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "golden")
    args = ap.parse_args()

    with open(args.photos_dir / "labels.csv", newline="") as f:
        photos = sorted(r["file"] for r in csv.DictReader(f))
    args.out_dir.mkdir(parents=True, exist_ok=True)

    decoded = {}
    for name in photos:
        img = Image.open(args.photos_dir / name)
        mode = img.mode
        rgb = img.convert("RGB")
        decoded[name] = {
            "width": rgb.size[0],
            "height": rgb.size[1],
            "mode": mode,
            "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
        }
        for size, mname in SIZE_MANIFESTS.items():
            m = load_manifest(mname)
            assert input_params(m)[0] == size
            out = args.out_dir / f"{Path(name).stem}-{size}.png"
            resized_for_manifest(args.photos_dir / name, m).save(out, format="PNG", optimize=True)
            back = np.asarray(Image.open(out).convert("RGB"))
            assert np.array_equal(back, np.asarray(resized_for_manifest(args.photos_dir / name, m)))
            print(f"wrote {out}")

    logits = {name: {} for name in photos}
    for mname in LOGIT_MODELS:
        m = load_manifest(mname)
        sess = ort_session(m["_onnx_path"], threads=1)
        _, _, mean, std = input_params(m)
        for name in photos:
            x = normalize(resized_for_manifest(args.photos_dir / name, m), mean, std)
            logits[name][mname] = run_logits(sess, m, x)

    # Hand-written JSON so every float keeps its exact float32 repr.
    lines = ["{"]
    for i, name in enumerate(photos):
        lines.append(f"  {json.dumps(name)}: {{")
        for j, mname in enumerate(LOGIT_MODELS):
            vals = ", ".join(f32_repr(v) for v in logits[name][mname])
            comma = "," if j < len(LOGIT_MODELS) - 1 else ""
            lines.append(f"    {json.dumps(mname)}: [{vals}]{comma}")
        lines.append("  }" + ("," if i < len(photos) - 1 else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    parsed = json.loads(text)  # validate
    for name in photos:
        for mname in LOGIT_MODELS:
            assert np.array_equal(np.asarray(parsed[name][mname], dtype=np.float32), logits[name][mname])
    (args.out_dir / "logits.json").write_text(text)
    print(f"wrote {args.out_dir / 'logits.json'}")

    with open(args.out_dir / "decoded.json", "w") as f:
        json.dump(decoded, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out_dir / 'decoded.json'}")

    classes = (REPO_ROOT / "models" / "imagenet-classes.txt").read_text().splitlines()
    for name in photos:
        row = []
        for mname in LOGIT_MODELS:
            k = int(np.argmax(logits[name][mname]))
            row.append(f"{mname}: {k} {classes[k]}")
        print(f"{name}: " + "; ".join(row))


if __name__ == "__main__":
    main()
