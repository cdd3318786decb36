"""Top-1 agreement between two per-image prediction CSV files.

Each file needs the columns `file` and `top1`; any other columns are
ignored, except:
  * `model`: a file with this column (e.g. the output of
    `edgecascade eval --predictions`) may hold several models; pass
    --model NAME (or --model-a / --model-b for one side only) to keep only
    that model's rows. Without a filter, every file must list each image
    once.
  * `label`: when present, the top-1 accuracy of each file on the common
    images is printed too.

Usage (from the repository root):
    python scripts/compare_predictions.py A.csv B.csv [--model NAME] [--show N]
Exit status: 0 when it could compare (whatever the agreement), 2 on bad input.
"""

from __future__ import annotations

import argparse
import csv
import sys


def die(msg: str) -> None:
    print(f"compare_predictions: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path: str, model: str | None) -> tuple[dict[str, int], dict[str, int]]:
    """({file: top1}, {file: label}) from one CSV file."""
    preds: dict[str, int] = {}
    labels: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for c in ("file", "top1"):
            if c not in cols:
                die(f"{path}: no `{c}` column (columns: {', '.join(cols)})")
        if model is not None and "model" not in cols:
            die(f"{path}: --model given but the file has no `model` column")
        models_seen = set()
        for r in reader:
            if "model" in cols:
                models_seen.add(r["model"])
                if model is not None and r["model"] != model:
                    continue
            name = r["file"]
            if name in preds:
                die(
                    f"{path}: `{name}` appears more than once"
                    + (f" (models in file: {', '.join(sorted(models_seen))}; use --model)" if "model" in cols else "")
                )
            preds[name] = int(r["top1"])
            if "label" in cols and r["label"] not in ("", None):
                labels[name] = int(r["label"])
    if not preds:
        die(f"{path}: no rows" + (f" for model {model}" if model else ""))
    return preds, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--model", help="keep only rows of this model (files with a `model` column)")
    ap.add_argument("--model-a", help="model filter for A only (overrides --model)")
    ap.add_argument("--model-b", help="model filter for B only (overrides --model)")
    ap.add_argument("--show", type=int, default=10, help="list up to N disagreeing images (default 10)")
    args = ap.parse_args()

    def flt(path, specific):
        if specific is not None:
            return specific
        if args.model is None:
            return None
        with open(path, newline="") as f:
            has_model = "model" in (csv.DictReader(f).fieldnames or [])
        return args.model if has_model else None

    pa, la = load(args.a, flt(args.a, args.model_a))
    pb, lb = load(args.b, flt(args.b, args.model_b))
    common = sorted(set(pa) & set(pb))
    only_a, only_b = len(set(pa) - set(pb)), len(set(pb) - set(pa))
    if not common:
        die("the two files have no image in common")
    agree = [n for n in common if pa[n] == pb[n]]
    print(f"A: {args.a} ({len(pa)} images)")
    print(f"B: {args.b} ({len(pb)} images)")
    if only_a or only_b:
        print(f"only in A: {only_a}, only in B: {only_b}")
    print(f"top-1 agreement: {len(agree)}/{len(common)} = {100 * len(agree) / len(common):.2f}%")
    labels = {**lb, **la}
    lab = [n for n in common if n in labels]
    if lab:
        ca = sum(pa[n] == labels[n] for n in lab)
        cb = sum(pb[n] == labels[n] for n in lab)
        print(f"top-1 accuracy on {len(lab)} labelled common images: A {100 * ca / len(lab):.2f}%, B {100 * cb / len(lab):.2f}%")
    diff = [n for n in common if pa[n] != pb[n]]
    for n in diff[: args.show]:
        extra = f" (label {labels[n]})" if n in labels else ""
        print(f"  {n}: A {pa[n]}, B {pb[n]}{extra}")
    if len(diff) > args.show:
        print(f"  ... {len(diff) - args.show} more")


if __name__ == "__main__":
    main()
