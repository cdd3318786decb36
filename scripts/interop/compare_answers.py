"""The device's answers through a third-party OIP v2 server against the large model's own.

    python scripts/interop/compare_answers.py --group LABEL --run RUN.jsonl --classify CLASSIFY.jsonl \
        [--run-status N] [--encoding oip-fp32-json] [--tol 1e-3]

RUN.jsonl is the output of `edgecascade run --link oip+http://... --threshold 1
--json photos` (every input offloaded to the server), CLASSIFY.jsonl that of
`edgecascade classify --threshold 1 --json photos` (the large model in-process).
Checks, each PASS or FAIL (see common.Checks):

- `run` exited 0 and answered every photo `classify` answered;
- each of its answers came from the server: stage 1, the large model's name,
  not degraded, sent once, over the expected encoding (JSON tensors for a
  server without the binary tensor extension, binary ones otherwise);
- each has `classify`'s class, and a confidence within --tol of its;
- the summary counts every input offloaded and none degraded.

Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LARGE_MODEL = "efficientnet-lite2-fp32"


def read_lines(path: Path) -> tuple[dict[str, dict], dict | None]:
    """(answers by input path, summary object) from a --json output file."""
    answers, summary = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue  # not an answer (a stray log line)
        obj = json.loads(line)
        if obj.get("summary"):
            summary = obj
        elif "input" in obj:
            answers[obj["input"]] = obj
    return answers, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", required=True, help="label of these checks in the summary")
    ap.add_argument("--run", type=Path, required=True, help="`edgecascade run --json` output")
    ap.add_argument("--run-status", type=int, default=0, help="exit status of `edgecascade run`")
    ap.add_argument("--classify", type=Path, required=True, help="`edgecascade classify --json` output")
    ap.add_argument("--encoding", default=None, help="expected link.encoding of every answer")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest confidence difference allowed")
    args = ap.parse_args()

    checks = common.Checks(args.group)
    run, run_summary = read_lines(args.run)
    local, _ = read_lines(args.classify)

    def complete():
        assert local, f"`classify` gave no answer ({args.classify})"
        assert args.run_status == 0, f"`run` exited {args.run_status}"
        missing = sorted(set(local) - set(run))
        assert not missing, f"`run` gave no answer for {missing}"
        return f"exit 0, {len(run)} answers"

    def offloaded():
        assert local, "no answer of `classify` to go by"
        bad = []
        for name in sorted(local):
            a = run.get(name, {})
            link = a.get("link") or {}
            why = []
            if a.get("degraded") is not False:
                why.append(f"degraded={a.get('degraded')}")
            if a.get("stage") != 1 or a.get("model") != LARGE_MODEL:
                why.append(f"stage {a.get('stage')} model {a.get('model')}")
            if link.get("tries") != 1:
                why.append(f"tries {link.get('tries')}")
            if args.encoding and link.get("encoding") != args.encoding:
                why.append(f"encoding {link.get('encoding')}")
            if why:
                bad.append(f"{name}: {', '.join(why)}")
        assert not bad, "; ".join(bad)
        encodings = sorted({(run[n].get("link") or {}).get("encoding") for n in local})
        return f"{len(local)} answers by {LARGE_MODEL} on the server, not degraded, one try each, encoding {encodings}"

    def same_answers():
        assert local, "no answer of `classify` to compare with"
        bad, worst = [], 0.0
        for name in sorted(local):
            a, want = run.get(name, {}), local[name]
            diff = abs(float(a.get("confidence", float("nan"))) - float(want["confidence"]))
            worst = max(worst, diff)
            if a.get("class") != want["class"] or not diff < args.tol:
                bad.append(
                    f"{name}: class {a.get('class')} conf {a.get('confidence')}, "
                    f"classify says {want['class']} conf {want['confidence']}"
                )
        assert not bad, "; ".join(bad)
        classes = [f"{Path(n).name}={local[n]['class']}" for n in sorted(local)]
        return f"max |confidence diff| {worst:.2g}; " + ", ".join(classes)

    def summary():
        assert run_summary is not None, "`run` printed no summary"
        n = len(local)
        got = {k: run_summary.get(k) for k in ("answered", "offloaded", "degraded", "failed")}
        assert got == {"answered": n, "offloaded": n, "degraded": 0, "failed": 0}, f"summary {got}"
        return f"{got}, {run_summary.get('link_bytes_sent')} B sent"

    checks.run("device answered every photo", complete)
    checks.run("every answer offloaded to the server, not degraded", offloaded)
    checks.run("same class as `classify`, confidence within tolerance", same_answers)
    checks.run("run summary: all offloaded, none degraded", summary)
    print(f"{args.group}: {checks.passed} passed, {checks.failed} failed", flush=True)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
