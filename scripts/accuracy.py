"""ONNX Runtime reference accuracy of every model, and the reference cascade.

For each data set (imagenet-val-a and imagenet-sample, always reported
separately) and each model in models/, every image is preprocessed by
refprep with that model's manifest and run through ONNX Runtime (CPU, one
intra-op thread by default; graph optimisations off for the int8 QDQ model,
so that ORT computes the QDQ graph as written: see refprep.ort_session). Per-image predictions go to

    models/reference/ort-<model>-<set>.csv   (header: file,label,top1,maxprob)

where top1 is the arg-max class index and maxprob the largest softmax
probability (softmax in float64 over the float32 logits, printed with 6
decimals). Then it prints the top-1 table and evaluates, from those CSV
files, the max-softmax cascade Lite0-int8 -> Lite2: an image is forwarded to
Lite2 when Lite0-int8's maxprob is below the threshold (0.5), otherwise
Lite0-int8's answer is kept. Mean MACs per input = MACs(Lite0) +
forwarded fraction x MACs(Lite2), with MACs from count_macs.py.

Run from the repository root:
    python scripts/accuracy.py [--data-root ../shared/data] [--threads 1]
    python scripts/accuracy.py --cascade-only     # reuse the CSV files
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from count_macs import count as count_macs
from refprep import (
    DATA_SETS,
    MODEL_NAMES,
    MODELS_DIR,
    add_data_root_arg,
    input_params,
    load_manifest,
    normalize,
    ort_session,
    read_labels,
    resized_image,
    run_logits,
    softmax,
)

REF_DIR = MODELS_DIR / "reference"
SMALL = "efficientnet-lite0-int8"
LARGE = "efficientnet-lite2-fp32"


def csv_path(ref_dir: Path, model: str, data_set: str) -> Path:
    return ref_dir / f"ort-{model}-{data_set}.csv"


def run_set(data_root: Path, data_set: str, models: list[str], threads: int, ref_dir: Path, graph_opt: str) -> None:
    set_dir = data_root / data_set
    rows = read_labels(set_dir)
    manifests = {m: load_manifest(m) for m in models}
    sessions = {m: ort_session(manifests[m]["_onnx_path"], threads, graph_opt) for m in models}
    out = {m: [] for m in models}
    spent = {m: 0.0 for m in models}
    t0 = time.time()
    for i, (name, label) in enumerate(rows):
        cache = {}  # one resize per distinct (size, crop) spec
        for m in models:
            size, crop, mean, std = input_params(manifests[m])
            key = (size, crop, tuple(mean), tuple(std))
            if key not in cache:
                cache[key] = normalize(resized_image(set_dir / name, size, crop), mean, std)
            t = time.perf_counter()
            logits = run_logits(sessions[m], manifests[m], cache[key])
            spent[m] += time.perf_counter() - t
            p = softmax(logits)
            out[m].append((name, label, int(np.argmax(logits)), float(p.max())))
        if (i + 1) % 100 == 0:
            print(f"  {data_set}: {i + 1}/{len(rows)} images, {time.time() - t0:.0f} s", flush=True)
    ref_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        with open(csv_path(ref_dir, m, data_set), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["file", "label", "top1", "maxprob"])
            for name, label, top1, maxprob in out[m]:
                w.writerow([name, label, top1, f"{maxprob:.6f}"])
        print(f"  {m}: ORT {1000 * spent[m] / len(rows):.1f} ms per image ({threads} thread(s))")


def read_pred(path: Path):
    with open(path, newline="") as f:
        return [(r["file"], int(r["label"]), int(r["top1"]), float(r["maxprob"])) for r in csv.DictReader(f)]


def top1(rows) -> float:
    return sum(1 for _, label, pred, _ in rows if label == pred) / len(rows)


def cascade(small_rows, large_rows, threshold: float, macs_small: int, macs_large: int) -> dict:
    if [r[0] for r in small_rows] != [r[0] for r in large_rows]:
        raise RuntimeError("prediction files list different images")
    n = len(small_rows)
    fwd = correct = 0
    for s, l in zip(small_rows, large_rows):
        if s[3] < threshold:
            fwd += 1
            correct += l[1] == l[2]
        else:
            correct += s[1] == s[2]
    frac = fwd / n
    return {
        "threshold": threshold,
        "images": n,
        "forwarded": fwd,
        "forwarded_fraction": frac,
        "top1": correct / n,
        "mean_macs": macs_small + frac * macs_large,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_root_arg(ap)
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    ap.add_argument("--threshold", type=float, default=0.5, help="cascade max-softmax threshold")
    ap.add_argument("--sets", nargs="*", default=DATA_SETS)
    ap.add_argument("--models", nargs="*", default=MODEL_NAMES)
    ap.add_argument("--ref-dir", type=Path, default=REF_DIR)
    ap.add_argument(
        "--ort-graph-opt",
        choices=["auto", "all", "none"],
        default="auto",
        help="ORT graph optimisations: auto = none for QDQ int8 models, all for float (see refprep.ort_session); "
        "use another --ref-dir with a non-default value",
    )
    ap.add_argument("--cascade-only", action="store_true", help="skip inference, read the CSV files")
    args = ap.parse_args()

    if not args.cascade_only:
        for s in args.sets:
            print(f"{s}:")
            run_set(args.data_root, s, args.models, args.threads, args.ref_dir, args.ort_graph_opt)

    macs = {m: count_macs(load_manifest(m)["_onnx_path"])[0] for m in MODEL_NAMES}
    summary = {"top1": {}, "cascade": {}}

    print()
    print("| model | MACs | " + " | ".join(args.sets) + " |")
    print("|---|---:|" + "---:|" * len(args.sets))
    for m in MODEL_NAMES:
        cells = []
        for s in args.sets:
            p = csv_path(args.ref_dir, m, s)
            if p.exists():
                rows = read_pred(p)
                acc = top1(rows)
                summary["top1"].setdefault(m, {})[s] = {"images": len(rows), "top1": acc}
                cells.append(f"{100 * acc:.1f}% ({sum(r[1] == r[2] for r in rows)}/{len(rows)})")
            else:
                cells.append("-")
        print(f"| {m} | {macs[m] / 1e6:.0f} M | " + " | ".join(cells) + " |")

    print()
    print(f"Cascade {SMALL} -> {LARGE}, max-softmax threshold {args.threshold}:")
    print("| set | forwarded | top-1 | mean MACs per input | Lite0-int8 alone | Lite2 alone |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in args.sets:
        ps, pl = csv_path(args.ref_dir, SMALL, s), csv_path(args.ref_dir, LARGE, s)
        if not (ps.exists() and pl.exists()):
            continue
        small, large = read_pred(ps), read_pred(pl)
        c = cascade(small, large, args.threshold, macs[SMALL], macs[LARGE])
        summary["cascade"][s] = c
        print(
            f"| {s} | {100 * c['forwarded_fraction']:.1f}% ({c['forwarded']}/{c['images']}) "
            f"| {100 * c['top1']:.1f}% | {c['mean_macs'] / 1e6:.0f} M "
            f"| {100 * top1(small):.1f}% | {100 * top1(large):.1f}% |"
        )
        sweep = [cascade(small, large, t, macs[SMALL], macs[LARGE]) for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
        summary["cascade"][s + "-sweep"] = sweep

    print()
    print("Threshold sweep (forwarded / top-1 / mean MACs):")
    for s in args.sets:
        for c in summary["cascade"].get(s + "-sweep", []):
            print(
                f"  {s:16s} t={c['threshold']:.1f}: {100 * c['forwarded_fraction']:5.1f}% "
                f"{100 * c['top1']:5.1f}% {c['mean_macs'] / 1e6:4.0f} M"
            )

    summary["macs"] = macs
    with open(args.ref_dir / "ort-summary.json", "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
