"""edgecascade (tract) against ONNX Runtime, side by side in one run.

Run through scripts/bench.sh, which builds the tract side (examples/runtime_bench.rs) and
provides a Python with onnxruntime, Pillow and numpy. Prints a markdown report to stdout.

One process per (model, runtime, thread count) configuration loads its model and then
waits for commands; the driver visits them all in turn, round after round (rounds alternate
forward and backward order, so a steady drift of the machine's speed weighs on every
configuration alike), and computes every ratio within a round, from neighbouring
measurements: this machine's speed drifts by 1.5x within minutes. Measured:

- load time (tract: `Model::load`, parse, int8 rewrite, optimise, with the int8 kernel choices
  already in the kernel cache, as on a board after its first start; the first load, which
  times every kernel on every layer shape, is reported apart; ORT: `InferenceSession(...)`);
- per inference, batch 1, after one warm-up per round: median and p95, and the ratio
  tract / ORT (median of the per-round ratios of medians, with their range);
- the device path per input, from encoded bytes in memory: decode, preprocess, infer,
  decide (softmax and a max-softmax exit at 0.5). ORT's path is Pillow + refprep + session
  + softmax (numpy), what scripts/accuracy.py does;
- peak memory: max RSS of each worker process (os.wait4's rusage, the same for both), and
  its RSS before the model was loaded (the interpreter or binary and its libraries); for tract
  also the peak while loading (VmHWM right after the load);
- top-1 agreement of the path's answers between tract and each ORT mode.

ONNX Runtime sessions: intra_op_num_threads = threads, inter_op_num_threads = 1, sequential
execution, graph optimisation `all` (ORT's default), and for QDQ int8 models also `disabled`
(ORT's optimiser fuses QDQ into int8 kernels that are faster but on CPUs without VNNI less
accurate, see scripts/refprep.py; unfused is the same computation tract does).

    scripts/bench.sh [--data DIR] [--limit N] [--rounds R] [--per-round K] [--path-rounds P]
                     [--threads 1,2] [--models a,b,...] [--json FILE]

Worker mode (internal): bench_runtimes.py --worker ort --model M.toml --threads N
--opt all|disabled --inputs LIST.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ["efficientnet-lite0-int8", "efficientnet-lite0-fp32", "efficientnet-lite2-fp32"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
TENSORS = 4  # as in examples/runtime_bench.rs
STAGES = ["decode", "preprocess", "infer", "decide"]


def status_kb(field: str) -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------ the ORT worker

def ort_worker(args) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    import refprep

    paths = [Path(p) for p in Path(args.inputs).read_text().splitlines() if p.strip()]
    inputs = [(p.name, p.read_bytes()) for p in paths]
    manifest = refprep.load_manifest(args.model)
    size, crop_fraction, mean, std = refprep.input_params(manifest)
    input_name = manifest["input"]["name"]
    probabilities = manifest.get("output", {}).get("kind") == "probabilities"

    def tensor(data: bytes):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        crop = img.crop(refprep.crop_box(*img.size, crop_fraction))
        return refprep.normalize(crop.resize((size, size), Image.Resampling.BICUBIC), mean, std)

    rss_before = status_kb("VmRSS")
    t = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[args.opt]
    session = ort.InferenceSession(str(manifest["_onnx_path"]), sess_options=so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t) * 1e3
    rss_after = status_kb("VmRSS")
    tensors = [tensor(b) for _, b in inputs[:TENSORS]]
    state = {"tensor": 0, "input": 0}

    def run(x):
        return session.run(None, {input_name: x})[0]

    def infer(n):
        run(tensors[state["tensor"] % len(tensors)])
        ms = []
        for _ in range(n):
            state["tensor"] += 1
            x = tensors[state["tensor"] % len(tensors)]
            t = time.perf_counter()
            run(x)
            ms.append((time.perf_counter() - t) * 1e3)
        return {"event": "infer", "ms": ms}

    def path(n):
        out = {k: [] for k in STAGES + ["total"]}
        answers = []
        for _ in range(n):
            name, data = inputs[state["input"] % len(inputs)]
            state["input"] += 1
            t0 = time.perf_counter()
            img = Image.open(io.BytesIO(data)).convert("RGB")
            t1 = time.perf_counter()
            crop = img.crop(refprep.crop_box(*img.size, crop_fraction))
            x = refprep.normalize(crop.resize((size, size), Image.Resampling.BICUBIC), mean, std)
            t2 = time.perf_counter()
            y = np.asarray(run(x), dtype=np.float32).reshape(-1)
            t3 = time.perf_counter()
            logits = np.log(np.maximum(y, 1e-30)) if probabilities else y
            p = refprep.softmax(logits)
            c = int(p.argmax())
            score = float(p[c])
            answers.append([name, c, score, score >= 0.5])
            t4 = time.perf_counter()
            for k, (a, b) in zip(STAGES + ["total"], [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)]):
                out[k].append((b - a) * 1e3)
        return {"event": "path", **out, "answers": answers}

    ready = {"event": "ready", "runtime": "ort", "opt": args.opt, "model": manifest["name"],
             "threads": args.threads, "load_ms": load_ms, "rss_before_load_kb": rss_before,
             "rss_after_load_kb": rss_after, "inputs": len(inputs), "ort_version": ort.__version__}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "quit":
            print(json.dumps({"event": "bye", "hwm_kb": status_kb("VmHWM")}), flush=True)
            return
        if len(words) == 2 and words[0] in ("infer", "path"):
            reply = (infer if words[0] == "infer" else path)(int(words[1]))
        else:
            reply = {"event": "error", "msg": f"unknown command {line.strip()!r}"}
        print(json.dumps(reply), flush=True)


# ------------------------------------------------------------------ the driver

class Worker:
    def __init__(self, label: str, runtime: str, model: str, opt: str | None, cmd: list[str], env=None):
        self.label, self.runtime, self.model, self.opt = label, runtime, model, opt
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self.read("ready")
        self.infer: list[list[float]] = []  # per round
        self.path: list[dict] = []  # per path round
        self.maxrss_kb = 0

    def read(self, event: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.label}: the worker exited (status {self.proc.wait()})")
        msg = json.loads(line)
        if msg.get("event") != event:
            raise SystemExit(f"{self.label}: expected {event}, got {line.strip()}")
        return msg

    def ask(self, cmd: str, event: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read(event)

    def close(self) -> None:
        self.ask("quit", "bye")
        self.proc.stdin.close()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.maxrss_kb = usage.ru_maxrss  # kB on Linux


def kernel_choices(cache: Path) -> str:
    """The kernel cache's content as a table: per int8 layer shape, the kernel kept and every
    candidate's time."""
    L = []
    for f in sorted(cache.glob("kernels-*.json")):
        c = json.loads(f.read_text())
        names = sorted({k for m in c["choices"].values() for k in m["ms"]})
        L.append(f"### int8 kernel choice per layer shape ({f.name}; ms per call, single thread)")
        L.append("")
        L.append("| layer shape | chosen | " + " | ".join(names) + " |")
        L.append("|---|---|" + "---:|" * len(names))
        for sig, m in sorted(c["choices"].items()):
            cells = [f"{m['ms'][n]:.3f}" if n in m["ms"] else "-" for n in names]
            L.append(f"| {sig} | {m['kernel']} | " + " | ".join(cells) + " |")
        L.append("")
    return "\n".join(L)


def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def cpu_flags() -> str:
    """The flags of /proc/cpuinfo that decide the kernels."""
    want = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm"]
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return ", ".join(f for f in want if f in have) or "none of " + ", ".join(want)
    except OSError:
        pass
    return "?"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def list_inputs(data: Path, limit: int) -> list[Path]:
    files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"{data}: no images")
    return files[:limit] if limit else files


def configs(models):
    """(label, runtime, model, opt) per worker, neighbours compared in each round."""
    out = []
    for m in models:
        out.append((f"tract {m}", "tract", m, None))
        out.append((f"ort-all {m}", "ort", m, "all"))
        if "int8" in m:
            out.append((f"ort-disabled {m}", "ort", m, "disabled"))
    return out


def first_loads(args, inputs_file: str, log) -> dict[str, dict]:
    """Each tract model loaded once into an empty kernel cache: the load that times every
    kernel on every int8 layer shape (and fills the cache the workers then use)."""
    out = {}
    for m in args.models:
        cmd = [args.bin, "--model", str(REPO / "models" / f"{m}.toml"), "--inputs", inputs_file, "--limit", "1",
               "--iters", "1", "--kernel-cache", args.kernel_cache]
        r = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)
        out[m] = r["ready"]
        log(f"first load of {m} (kernels measured): {r['ready']['load_ms']:.0f} ms")
    return out


def run_all(args, thread_counts: list[int], inputs_file: str, n_inputs: int, log) -> dict[int, list[Worker]]:
    """Every configuration at every thread count, alive at once and visited in turn, so that
    tract / ORT, int8 / float and 2 threads / 1 thread are all compared within a round. The
    visiting order puts the runtimes of one model and thread count next to each other."""
    results: dict[int, list[Worker]] = {t: [] for t in thread_counts}
    order: list[Worker] = []
    for label, runtime, model, opt in configs(args.models):
        for t in thread_counts:
            toml = str(REPO / "models" / f"{model}.toml")
            if runtime == "tract":
                cmd = [args.bin, "--serve", "--model", toml, "--threads", str(t), "--inputs", inputs_file,
                       "--kernel-cache", args.kernel_cache]
            else:
                cmd = [args.python, str(Path(__file__).resolve()), "--worker", "ort", "--model", toml,
                       "--threads", str(t), "--opt", opt, "--inputs", inputs_file]
            w = Worker(f"{label} x{t}", runtime, model, opt, cmd)
            log(f"loaded {w.label} in {w.ready['load_ms']:.0f} ms")
            results[t].append(w)
    # Visit order: per model, per thread count, tract then ORT (neighbours are compared).
    for m in args.models:
        for t in thread_counts:
            order += [w for w in results[t] if w.model == m]
    try:
        for r in range(args.rounds):
            for w in order if r % 2 == 0 else order[::-1]:
                w.infer.append(w.ask(f"infer {args.per_round}", "infer")["ms"])
            log(f"round {r + 1}/{args.rounds} done")
        for r in range(args.path_rounds):
            for w in order if r % 2 == 0 else order[::-1]:
                w.path.append(w.ask(f"path {n_inputs}", "path"))
            log(f"path round {r + 1}/{args.path_rounds} done")
    finally:
        for w in order:
            w.close()
    return results


def ratio_stats(a_rounds, b_rounds):
    """Per-round ratios of medians: (median, min, max)."""
    rs = [statistics.median(a) / statistics.median(b) for a, b in zip(a_rounds, b_rounds)]
    return statistics.median(rs), min(rs), max(rs)


def fmt_ratio(st) -> str:
    return f"{st[0]:.2f} ({st[1]:.2f}-{st[2]:.2f})"


def report(args, results: dict[int, list[Worker]], first: dict[str, dict], n_inputs: int, started: str,
           elapsed: float) -> str:
    L = []
    ws0 = next(iter(results.values()))
    ort_version = next((w.ready.get("ort_version") for w in ws0 if w.runtime == "ort"), "?")
    L.append(f"# edgecascade (tract) against ONNX Runtime {ort_version}")
    L.append("")
    L.append(f"Machine: {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores. Started {started}, took "
             f"{elapsed / 60:.1f} min. Inputs: {n_inputs} images of `{args.data}`. Batch 1. "
             f"{args.rounds} rounds of {args.per_round} inferences per configuration and thread count "
             f"(plus one warm-up each), {args.path_rounds} device-path round(s) over every input.")
    L.append("")
    L.append("Build: tract through `examples/runtime_bench.rs` in the dev profile, where every dependency (tract "
             "and its kernels, image, mozjpeg) and `kernels/` (the int8 kernels and the preprocessing loops) are "
             "at opt-level 3, edgecascade's own code at opt-level 1 (it holds no per-element loop of the "
             "device path).")
    L.append("")
    L.append("CPU flags: " + cpu_flags())
    L.append("")
    L.append("### Per inference (ms), and tract / ORT")
    L.append("")
    L.append("Ratios are medians of per-round ratios of medians, with their range over the rounds in brackets.")
    L.append("")
    L.append("| model | threads | tract median | tract p95 | ORT opt | ORT median | ORT p95 | tract / ORT |")
    L.append("|---|---:|---:|---:|---|---:|---:|---:|")
    for t, ws in results.items():
        for w in ws:
            if w.runtime != "ort":
                continue
            tr = next(x for x in ws if x.runtime == "tract" and x.model == w.model)
            ta = [v for r in tr.infer for v in r]
            oa = [v for r in w.infer for v in r]
            L.append(f"| {w.model} | {t} | {statistics.median(ta):.1f} | {pct(ta, 0.95):.1f} | {w.opt} | "
                     f"{statistics.median(oa):.1f} | {pct(oa, 0.95):.1f} | {fmt_ratio(ratio_stats(tr.infer, w.infer))} |")
    L.append("")
    # Ratios within one runtime: int8 / float, 2 threads / 1 thread.
    L.append("### Within one runtime")
    L.append("")
    L.append("| ratio (per-round medians) | threads | tract | ORT (opt all) | ORT (opt disabled) |")
    L.append("|---|---:|---:|---:|---:|")

    def find(ws, runtime, model, opt):
        return next((w for w in ws if w.runtime == runtime and w.model == model and w.opt == opt), None)

    i8, f0 = "efficientnet-lite0-int8", "efficientnet-lite0-fp32"
    for t, ws in results.items():
        a, b = find(ws, "tract", i8, None), find(ws, "tract", f0, None)
        if a and b:
            cells = [fmt_ratio(ratio_stats(a.infer, b.infer))]
            for opt in ("all", "disabled"):
                x, y = find(ws, "ort", i8, opt), find(ws, "ort", f0, "all")
                cells.append(fmt_ratio(ratio_stats(x.infer, y.infer)) if x and y else "-")
            L.append(f"| Lite0 int8 / Lite0 float (ORT float: opt all) | {t} | {' | '.join(cells)} |")
    if len(results) > 1:
        t1, t2 = list(results)[:2]
        for w1 in results[t1]:
            w2 = find(results[t2], w1.runtime, w1.model, w1.opt)
            cells = ["-", "-", "-"]
            cells[0 if w1.runtime == "tract" else 1 if w1.opt == "all" else 2] = fmt_ratio(
                ratio_stats(w2.infer, w1.infer))
            L.append(f"| {t2} threads / {t1} thread, {w1.model} | - | {' | '.join(cells)} |")
    L.append("")
    L.append("### Device path per input (ms, medians over inputs and path rounds)")
    L.append("")
    L.append("tract: `preprocess::decode` (mozjpeg / image), `preprocess::to_tensor`, `runner.run`, "
             "`policy::softmax` + `policy::decide`. ORT: Pillow decode, refprep's crop, bicubic resize and "
             "normalisation, `session.run`, numpy softmax (float64) and argmax. Encoded bytes are in memory "
             "(no file reads).")
    L.append("")
    L.append("| model | threads | runtime | decode | preprocess | infer | decide | total | total tract / this | top-1 = tract's |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for t, ws in results.items():
        for w in ws:
            tr = find(ws, "tract", w.model, None)
            cells = []
            for k in STAGES + ["total"]:
                v = [x for p in w.path for x in p[k]]
                cells.append(f"{statistics.median(v):.2f}" if k == "decide" else f"{statistics.median(v):.1f}")
            if w.runtime == "tract":
                ratio, agree = "-", "-"
            else:
                ratio = fmt_ratio(ratio_stats([p["total"] for p in tr.path], [p["total"] for p in w.path]))
                a = [x[1] for p in tr.path for x in p["answers"]]
                b = [x[1] for p in w.path for x in p["answers"]]
                agree = f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"
            name = "tract" if w.runtime == "tract" else f"ORT {w.opt}"
            L.append(f"| {w.model} | {t} | {name} | {' | '.join(cells)} | {ratio} | {agree} |")
    L.append("")
    L.append("### Load time and memory")
    L.append("")
    L.append("Peak RSS: max resident set of the worker process (os.wait4), which loaded one model, held "
             f"up to {TENSORS} preprocessed inputs and the encoded inputs, and ran everything above. "
             "Before load: its RSS just before loading the model (the Rust binary; or the Python "
             "interpreter with numpy, Pillow and onnxruntime imported).")
    L.append("")
    L.append("| model | threads | runtime | load (ms) | RSS before load (MB) | RSS after load (MB) | peak while loading (MB) | peak RSS (MB) | peak - before load (MB) |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    mb = lambda kb: kb / 1024  # noqa: E731
    for t, ws in results.items():
        for w in ws:
            r = w.ready
            name = "tract" if w.runtime == "tract" else f"ORT {w.opt}"
            hwm = f"{mb(r['hwm_after_load_kb']):.1f}" if "hwm_after_load_kb" in r else "-"
            L.append(f"| {w.model} | {t} | {name} | {r['load_ms']:.0f} | {mb(r['rss_before_load_kb']):.1f} | "
                     f"{mb(r['rss_after_load_kb']):.1f} | {hwm} | {mb(w.maxrss_kb):.0f} | "
                     f"{mb(w.maxrss_kb - r['rss_before_load_kb']):.0f} |")
    L.append("")
    if first:
        L.append("tract's first load on this machine, which times every kernel on every int8 layer shape and writes "
                 "the choices to the kernel cache (every load above found them there): " +
                 ", ".join(f"{m} {r['load_ms']:.0f} ms" for m, r in first.items()) + ".")
        L.append("")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["ort"])
    ap.add_argument("--model")
    ap.add_argument("--opt", choices=["all", "disabled"], default="all")
    ap.add_argument("--inputs")
    ap.add_argument("--data", type=Path, default=Path("photos"))
    ap.add_argument("--limit", type=int, default=0, help="first N images of --data (default all)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--per-round", type=int, default=20, help="inferences per configuration per round (default 20)")
    ap.add_argument("--path-rounds", type=int, default=2, help="device-path passes over every input (default 2)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--bin", default=None, help="the built examples/runtime_bench binary")
    ap.add_argument("--python", default=sys.executable, help="Python with onnxruntime, for the ORT workers")
    ap.add_argument("--json", type=Path, help="also write every raw measurement here")
    args = ap.parse_args()

    if args.worker == "ort":
        args.threads = int(args.threads)
        ort_worker(args)
        return

    args.models = [m for m in args.models.split(",") if m]
    if args.bin is None:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        args.bin = str(target / "debug" / "examples" / "runtime_bench")
    if not Path(args.bin).exists():
        raise SystemExit(f"{args.bin} does not exist: run scripts/bench.sh (or cargo build --examples)")
    data = args.data if args.data.is_absolute() else (Path.cwd() / args.data)
    inputs = list_inputs(data.resolve(), args.limit)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(str(p) for p in inputs) + "\n")
        inputs_file = f.name
    try:
        thread_counts = [int(x) for x in args.threads.split(",")]
        with tempfile.TemporaryDirectory() as cache:
            args.kernel_cache = cache
            first = first_loads(args, inputs_file, log)
            log(f"starting {len(configs(args.models)) * len(thread_counts)} workers")
            results = run_all(args, thread_counts, inputs_file, len(inputs), log)
            choices = kernel_choices(Path(cache))
    finally:
        os.unlink(inputs_file)
    elapsed = time.monotonic() - t0
    print(report(args, results, first, len(inputs), started, elapsed))
    print(choices)
    if args.json:
        raw = {str(t): [{"label": w.label, "ready": w.ready, "infer": w.infer, "path": w.path,
                         "maxrss_kb": w.maxrss_kb} for w in ws] for t, ws in results.items()}
        args.json.write_text(json.dumps(raw))


if __name__ == "__main__":
    main()
