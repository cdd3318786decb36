"""Copy the non-model assets out of installed PyPI packages.

* models/imagenet-classes.txt: the 1000 ImageNet-1k class names, one per
  line, line i (0-based) = class index i, taken from torchvision's
  `torchvision/models/_meta.py` (`_IMAGENET_CATEGORIES`). The file is read
  as text and parsed with `ast`, so torchvision is never imported.
* photos/: the demo photos, copied byte for byte from scikit-image's and
  matplotlib's and scikit-learn's bundled sample data (packages are located through
  importlib.metadata, so none of them is imported either).

Run from the repository root:  python scripts/fetch_assets.py
"""

from __future__ import annotations

import argparse
import ast
import shutil
from importlib import metadata
from pathlib import Path

from refprep import MODELS_DIR, REPO_ROOT, sha256

# (distribution, path inside the installed package, file name in photos/)
PHOTOS = [
    ("scikit-image", "skimage/data/chelsea.png", "chelsea.png"),
    ("scikit-image", "skimage/data/coffee.png", "coffee.png"),
    ("scikit-image", "skimage/data/camera.png", "camera.png"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", "china.jpg"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "grace_hopper.jpg"),
]


def package_file(dist_name: str, rel: str) -> Path:
    dist = metadata.distribution(dist_name)
    p = Path(dist.locate_file(rel))
    if not p.is_file():
        raise FileNotFoundError(f"{rel} not found in {dist_name} {dist.version}")
    return p


def imagenet_classes() -> list[str]:
    src = package_file("torchvision", "torchvision/models/_meta.py").read_text()
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
        ):
            names = ast.literal_eval(node.value)
            break
    else:
        raise RuntimeError("_IMAGENET_CATEGORIES not found in torchvision/models/_meta.py")
    if len(names) != 1000 or any("\n" in n for n in names):
        raise RuntimeError("unexpected ImageNet class list")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos-dir", type=Path, default=REPO_ROOT / "photos")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    args = ap.parse_args()

    names = imagenet_classes()
    args.models_dir.mkdir(parents=True, exist_ok=True)
    out = args.models_dir / "imagenet-classes.txt"
    out.write_text("".join(n + "\n" for n in names))
    print(f"wrote {out} ({len(names)} classes, torchvision {metadata.version('torchvision')})")

    args.photos_dir.mkdir(parents=True, exist_ok=True)
    for dist, rel, name in PHOTOS:
        src = package_file(dist, rel)
        dst = args.photos_dir / name
        shutil.copyfile(src, dst)
        print(f"{dst}  <- {dist} {metadata.version(dist)} {rel}  sha256 {sha256(dst)[:16]}")


if __name__ == "__main__":
    main()
