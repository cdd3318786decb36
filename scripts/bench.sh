#!/usr/bin/env bash
# edgecascade (tract) against ONNX Runtime, side by side in one run; prints a markdown report.
#
#   scripts/bench.sh                                   # the demo photos in photos/
#   scripts/bench.sh --data ../shared/data/imagenet-val-a --limit 50
#   scripts/bench.sh --rounds 12 --per-round 40 --path-rounds 4   # longer, steadier
#
# Every argument goes to scripts/bench_runtimes.py (--help lists them). Builds the tract side
# (examples/runtime_bench.rs) with `cargo build --examples` in the dev profile: dependencies,
# tract's kernels among them, at opt-level 3, edgecascade itself at opt-level 1.
#
# Python: $EDGECASCADE_PY if set (a Python with onnxruntime, Pillow and numpy), otherwise a
# venv made on first use under target/bench-venv with the pinned versions below (the same
# as scripts/requirements-export.txt: Pillow's version matters for pixel-exact preprocessing).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --examples --quiet
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug/examples/runtime_bench"

if [[ -n "${EDGECASCADE_PY:-}" ]]; then
    PY="$EDGECASCADE_PY"
else
    VENV="$TARGET_DIR/bench-venv"
    PY="$VENV/bin/python"
    if ! "$PY" -c 'import onnxruntime, PIL, numpy' 2>/dev/null; then
        echo "bench.sh: installing onnxruntime, Pillow and numpy into $VENV" >&2
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --disable-pip-version-check \
            onnxruntime==1.20.1 pillow==13.0.0 numpy==2.4.6
    fi
fi

exec "$PY" scripts/bench_runtimes.py --bin "$BIN" --python "$PY" "$@"
