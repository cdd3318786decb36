#!/usr/bin/env bash
# The drift demonstration of issue 14: the same held images, first clean, then degraded
# (ImageNet-C style: Gaussian blur, JPEG re-compression at a low quality, Gaussian noise, one
# each in turn, seeded; examples/drift_images.rs), run through `demo` with an audit of the
# device's answers, once with the static threshold and once with --adapt. Prints, per phase,
# the forward rate and the live disagreement of the device's answers with the host (report's
# estimate and 95% interval), against E.
#
#   scripts/drift_demo.sh DATA_DIR [N] [AUDIT_RATE] [E] [GAMMA] [SEVERITY] [SEED]
#
# DATA_DIR: a labeled folder (labels.csv), e.g. ../shared/data/imagenet-sample (not in the
# repository). N images of it (default 200), audit rate R (default 1), E the disagreement rate
# to hold the device's answers to (default 0.06), the adaptive step (default 0.1), ImageNet-C
# severity 1..5 (default 3), the seed of the noise and of the audit draw (default 14).
# Run from the repository's root; the logs stay in $OUT (default: a temporary folder).
set -euo pipefail

data=${1:?usage: scripts/drift_demo.sh DATA_DIR [N] [AUDIT_RATE] [E] [GAMMA] [SEVERITY] [SEED]}
n=${2:-200}
rate=${3:-1}
e=${4:-0.06}
gamma=${5:-0.1}
severity=${6:-3}
seed=${7:-14}
out=${OUT:-$(mktemp -d -t drift-demo.XXXXXX)}
mkdir -p "$out"

cargo build --quiet --bin edgecascade --example drift_images
bin=target/debug/edgecascade
target/debug/examples/drift_images "$data" "$out/images" "$n" "$severity" "$seed"

run() { # name, extra flags...
    local name=$1
    shift
    rm -f "$out/$name.jsonl"
    "$bin" demo --quiet --json --data "$out/images" --audit-rate "$rate" --audit-seed "$seed" \
        --log "$out/$name.jsonl" "$@" >"$out/$name.out"
}

echo "static threshold (cascade.toml: max-softmax 0.5), audit rate $rate ..." >&2
run static
echo "adaptive threshold (--adapt --adapt-target $e --adapt-gamma $gamma) ..." >&2
run adaptive --adapt --adapt-target "$e" --adapt-gamma "$gamma"

# Each log split by phase (the input's name says which: 0-clean-..., 1-blur/jpeg/noise-...),
# each part estimated by `report`.
python3 - "$out" "$bin" "$e" "$rate" <<'EOF'
import json, subprocess, sys
out, binary, e, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
print(f"| run | phase | inputs | forwarded | device answers audited | disagreed | live disagreement of the device's answers (95% interval) | over all inputs | vs E = {e:.0%} |")
print("|---|---|---:|---:|---:|---:|---|---|---|")
for name in ["static", "adaptive"]:
    lines = [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
    for phase, label in [("0-", "clean"), ("1-", "degraded")]:
        part = [l for l in lines if l.get("input", "").split("/")[-1].startswith(phase)]
        path = f"{out}/{name}-{label}.jsonl"
        with open(path, "w") as f:
            f.writelines(json.dumps(l) + "\n" for l in part)
        r = json.loads(subprocess.run([binary, "report", "--json", "--max-disagreement", str(e), path],
                                      check=True, capture_output=True, text=True).stdout)
        a = r.get("audit") or {}
        pct = lambda x: f"{100 * x:.1f}%"
        live = f"{pct(a['rate'])} ({pct(a['interval'][0])}..{pct(a['interval'][1])})" if a else "no audit"
        alli = f"{pct(a['all_inputs_rate'])}" if a else "-"
        print(f"| {name} | {label} | {r['answered']} | {pct(r['forwarded'])} | {a.get('audited', 0)} | "
              f"{a.get('disagreed', 0)} | {live} | {alli} | {a.get('verdict', '-')} |")
changes = [l["threshold_change"] for l in (json.loads(x) for x in open(f"{out}/adaptive.jsonl")) if "threshold_change" in l]
if changes:
    top = max(c["to"] for c in changes)
    print(f"\nadaptive: {len(changes)} threshold changes logged, from 0.5 up to {top:.2f}, ending at {changes[-1]['to']:.2f}")
for name in ["static", "adaptive"]:
    s = json.loads(open(f"{out}/{name}.out").read().splitlines()[-1])
    a = s["audit"]
    print(f"{name}: {s['inputs']} inputs, link {s['link_bytes_sent']} B sent of which audits {a['bytes_sent']} B; "
          f"{a['sent']} audits, mean wait {a['mean_span_ms'].get('wait', 0):.0f} ms")
print(f"\nlogs in {out}")
EOF
