"""tract's int8 rewrite against tract's own paths, interleaved in one run.

Three processes of examples/runtime_bench.rs (`--serve`), batch 1, the same preprocessed
inputs, one thread each unless --threads:
  * int8-new:  Lite0 int8 (QDQ) with the int8 rewrite (the default),
  * int8-old:  the same file on tract's own path (EDGECASCADE_INT8=float: float products
               between quantize and dequantize steps),
  * float:     Lite0 float.
Each round asks every process for --per-round inferences, in turn (this machine's speed
drifts within minutes, so ratios are taken within a round, then their median across rounds).
Also reports load time, resident memory after load and peak (the process's maximum RSS), and
with --profile N a per-op-kind profile of each configuration.

Usage (from the repository root, after `cargo build --examples`):
    python3 scripts/bench_int8.py [--bin PATH] [--data photos] [--rounds 8] [--per-round 20]
                                  [--threads 1] [--profile 20]
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_runtimes import REPO, Worker, ratio_stats  # the same process driver and ratios

CONFIGS = [
    ("int8-new", "models/efficientnet-lite0-int8.toml", "int8"),
    ("int8-old", "models/efficientnet-lite0-int8.toml", "float"),
    ("float", "models/efficientnet-lite0-fp32.toml", "int8"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    ap.add_argument("--bin", default=str(target / "debug/examples/runtime_bench"))
    ap.add_argument("--data", type=Path, default=Path("photos"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, help="also profile each configuration over N runs")
    args = ap.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    workers = {}
    for label, model, mode in CONFIGS:
        cmd = [args.bin, "--model", model, "--data", str(args.data), "--threads", str(args.threads), "--serve"]
        env = dict(os.environ, EDGECASCADE_INT8=mode, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        workers[label] = Worker(label, "tract", model, mode, cmd, env=env)
    for r in range(args.rounds):
        for w in workers.values():
            w.infer.append(w.ask(f"infer {args.per_round}", "infer")["ms"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(w.infer[-1]):.1f} ms" for k, w in workers.items()),
              file=sys.stderr)
    for w in workers.values():
        w.close()

    print(f"## tract int8 rewrite, {started}, {args.rounds} rounds x {args.per_round} inferences, "
          f"{args.threads} thread(s), inputs from {args.data}\n")
    print("| configuration | median of round medians (ms) | best round (ms) | load (ms) | RSS after load - before (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for label, w in workers.items():
        medians = [statistics.median(ms) for ms in w.infer]
        load_mb = (w.ready["rss_after_load_kb"] - w.ready["rss_before_load_kb"]) / 1024
        print(f"| {label} | {statistics.median(medians):.1f} | {min(medians):.1f} | "
              f"{w.ready['load_ms']:.0f} | {load_mb:.1f} | {w.maxrss_kb / 1024:.1f} |")
    print()
    for a, b in [("int8-new", "float"), ("int8-new", "int8-old"), ("int8-old", "float")]:
        med, lo, hi = ratio_stats(workers[a].infer, workers[b].infer)
        print(f"- {a} / {b}: {med:.2f} (per-round range {lo:.2f}-{hi:.2f})")

    if args.profile:
        for label, model, mode in CONFIGS:
            env = dict(os.environ, EDGECASCADE_INT8=mode, RUST_LOG="warn")
            out = subprocess.run([args.bin, "--model", model, "--data", str(args.data), "--threads", str(args.threads),
                                  "--profile", str(args.profile)], cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True)
            prof = json.loads(out.stdout)
            total = prof["total_ms"]
            print(f"\n### Profile: {label} ({total:.1f} ms per inference, node by node, {args.profile} runs)\n")
            print("| op | nodes | ms | share |")
            print("|---|---|---|---|")
            for o in prof["profile"]:
                if o["ms"] >= 0.005 * total:
                    print(f"| {o['op']} | {o['nodes']} | {o['ms']:.2f} | {100 * o['ms'] / total:.1f}% |")


if __name__ == "__main__":
    main()
