#!/usr/bin/env python3
"""Summarise `edgecascade calibrate` curves (the .curves.csv it writes) as the table in
docs/paper-check.md: per way of deciding (metric x ensembling x temperature scaling), the best
top-1 and what it costs, top-1 at a few forward rates and with every input forwarded, and the MACs needed to match a given
accuracy. Standard library only.

    python3 scripts/paper_table.py calibrated.curves.csv --match 0.8246 --label Lite2
"""
import argparse
import csv
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("curves")
    ap.add_argument("--match", type=float, required=True, help="accuracy to match (e.g. the large model's)")
    ap.add_argument("--label", default="the large model")
    ap.add_argument("--rates", default="0.1,0.2,0.3")
    a = ap.parse_args()
    rates = [float(r) for r in a.rates.split(",")]
    curves = defaultdict(list)
    for row in csv.DictReader(open(a.curves)):
        curves[row["curve"]].append({k: float(v) if k not in ("curve", "metric", "ensemble", "temperature_scaled") else v for k, v in row.items()})
    head = ["way of deciding", "best top-1", "at M MACs", *[f"top-1 at {r:.0%} forwarded" for r in rates], "top-1, all forwarded", f"M MACs to match {a.label} ({a.match:.2%})"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, pts in curves.items():
        best = max(pts, key=lambda p: (p["top1"], -p["macs"]))
        cells = [name.replace("+", ", "), f"{best['top1']:.2%}", f"{best['macs'] / 1e6:.0f}"]
        for r in rates:
            # The threshold that forwards closest to r.
            near = min(pts, key=lambda p: (abs(p["forwarded"] - r), -p["top1"]))
            cells.append(f"{near['top1']:.2%}")
        cells.append(f"{max((p for p in pts if p['forwarded'] >= 1.0), key=lambda p: p['top1'])['top1']:.2%}")
        meet = [p for p in pts if p["top1"] >= a.match - 1e-12]
        cells.append(f"{min(p['macs'] for p in meet) / 1e6:.0f}" if meet else "not reached")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
