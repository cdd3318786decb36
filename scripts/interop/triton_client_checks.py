"""NVIDIA's Triton HTTP client (tritonclient[http], from PyPI) against an OIP v2 server.

    python scripts/interop/triton_client_checks.py --url 127.0.0.1:PORT [--model NAME] [--group LABEL]

Run by scripts/interop.sh against `edgecascade host --oip-listen`. Checks, each
reported as PASS or FAIL (see common.Checks):

- health (live, ready), server metadata (the binary tensor extension), model
  readiness and metadata (input `input` FP32 [-1,3,S,S], output `logits` FP32
  [-1,classes]), all through the client's own calls;
- inference on every demo photo, batch 1, in each combination of JSON and
  binary tensors for the input and the output, plus one request carrying all
  the photos as a batch (JSON and binary), one with no outputs named (the
  client then asks for binary outputs), and one by version path; each answer's
  logits equal ONNX Runtime's on the same tensor (max |diff| < --tol, same
  top-1);
- bad requests (wrong input name, wrong datatype in JSON and in binary, wrong
  shape, unknown output, unknown model) raise InferenceServerException with a
  4xx status, and the server answers a good request right after each;
- concurrent requests (the client's async_infer) all answered correctly;
- the statistics endpoint counts the inferences made.

Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import refprep  # noqa: E402  (on sys.path through common)
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

BINARY_EXTENSION = "binary_tensor_data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="HOST:PORT of the OIP v2 HTTP server")
    ap.add_argument("--model", default="efficientnet-lite2-fp32", help="model name (and manifest in models/)")
    ap.add_argument("--group", default="tritonclient", help="label of these checks in the summary")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest |logit - ORT logit| allowed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call")
    args = ap.parse_args()

    manifest = refprep.load_manifest(args.model)
    size = manifest["input"]["size"]
    in_name = manifest["input"]["name"]
    out_name = "logits"
    photos = common.photo_paths()
    tensors = {p.name: common.photo_tensor(p, manifest) for p in photos}
    batch = np.concatenate(list(tensors.values()))
    ort = common.OrtReference(manifest)
    want = dict(zip(tensors, ort.logits(batch)))
    want_batch = np.stack(list(want.values()))

    checks = common.Checks(args.group)
    client = httpclient.InferenceServerClient(
        url=args.url, connection_timeout=args.timeout, network_timeout=args.timeout, concurrency=4
    )
    # Items sent in requests the server answered, to compare with its statistics.
    answered_items = 0

    def infer(x: np.ndarray, binary_in: bool, binary_out: bool | None, **kw):
        """One inference; binary_out None names no output (the client asks for binary)."""
        nonlocal answered_items
        inp = httpclient.InferInput(in_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary_in)
        outputs = None if binary_out is None else [httpclient.InferRequestedOutput(out_name, binary_data=binary_out)]
        result = client.infer(args.model, [inp], outputs=outputs, **kw)
        answered_items += x.shape[0]
        return result

    def logits_of(result) -> np.ndarray:
        out = result.as_numpy(out_name)
        assert out is not None, f"the response has no output '{out_name}': {result.get_response()}"
        return out

    def good_request_still_answered() -> str:
        name = photos[0].name
        got = logits_of(infer(tensors[name], True, True))
        return common.compare_logits(got, want[name][None], args.tol, f"{name} after the bad request")

    # -- health and metadata --------------------------------------------------

    def health():
        assert client.is_server_live(), "is_server_live() is False"
        assert client.is_server_ready(), "is_server_ready() is False"
        return "live and ready"

    def server_metadata():
        meta = client.get_server_metadata()
        assert BINARY_EXTENSION in meta.get("extensions", []), f"no {BINARY_EXTENSION} in {meta}"
        return f"{meta.get('name')} {meta.get('version')}, extensions {meta.get('extensions')}"

    def model_ready():
        assert client.is_model_ready(args.model), f"is_model_ready({args.model!r}) is False"
        assert client.is_model_ready(args.model, "1"), f"is_model_ready({args.model!r}, '1') is False"
        return "ready, and version 1 ready"

    def model_metadata():
        meta = client.get_model_metadata(args.model)
        assert meta.get("name") == args.model, f"name {meta.get('name')!r}"
        assert "1" in meta.get("versions", []), f"versions {meta.get('versions')}"
        want_in = [{"name": in_name, "datatype": "FP32", "shape": [-1, 3, size, size]}]
        want_out = [{"name": out_name, "datatype": "FP32", "shape": [-1, 1000]}]
        strip = lambda ts: [{k: t.get(k) for k in ("name", "datatype", "shape")} for t in ts]  # noqa: E731
        assert strip(meta.get("inputs", [])) == want_in, f"inputs {meta.get('inputs')}, expected {want_in}"
        assert strip(meta.get("outputs", [])) == want_out, f"outputs {meta.get('outputs')}, expected {want_out}"
        return f"inputs {want_in[0]['shape']}, outputs {want_out[0]['shape']}, platform {meta.get('platform')!r}"

    checks.run("server live and ready", health)
    checks.run("server metadata lists binary_tensor_data", server_metadata)
    checks.run("model ready", model_ready)
    checks.run("model metadata", model_metadata)

    # -- answers equal ONNX Runtime's -----------------------------------------

    modes = [
        ("JSON in, JSON out", False, False),
        ("binary in, binary out", True, True),
        ("binary in, JSON out", True, False),
        ("JSON in, binary out", False, True),
    ]
    for label, binary_in, binary_out in modes:

        def per_photo(binary_in=binary_in, binary_out=binary_out):
            details = []
            for name, x in tensors.items():
                got = logits_of(infer(x, binary_in, binary_out))
                details.append(common.compare_logits(got, want[name][None], args.tol, name).split(",")[0])
            return f"{len(details)} photos; " + "; ".join(details)

        checks.run(f"batch 1, {label}: logits equal ONNX Runtime's", per_photo)

    for label, binary in (("JSON", False), ("binary", True)):

        def one_batch(binary=binary):
            got = logits_of(infer(batch, binary, binary))
            return common.compare_logits(got, want_batch, args.tol, f"batch of {len(batch)}")

        checks.run(f"batch of {len(batch)} in one request, {label}: logits equal ONNX Runtime's", one_batch)

    def default_outputs():
        got = logits_of(infer(batch[:2], True, None))
        return common.compare_logits(got, want_batch[:2], args.tol, "no outputs named")

    checks.run("no outputs named (binary_data_output): logits equal ONNX Runtime's", default_outputs)

    def by_version():
        got = logits_of(infer(batch[:1], False, False, model_version="1", request_id="interop-1"))
        return common.compare_logits(got, want_batch[:1], args.tol, "versions/1")

    checks.run("infer on /versions/1: logits equal ONNX Runtime's", by_version)

    # -- bad requests: a 4xx InferenceServerException, and the server goes on --

    def bad_request(make_inputs, outputs=None, model=None):
        def check():
            try:
                client.infer(model or args.model, make_inputs(), outputs=outputs)
            except InferenceServerException as e:
                status = e.status()
                assert status is not None and str(status).isdigit() and 400 <= int(status) < 500, (
                    f"status {status!r}, expected 4xx: {e.message()}"
                )
                after = good_request_still_answered()
                return f"HTTP {status}: {e.message()}; then {after}"
            raise AssertionError("the server answered the bad request")

        return check

    def named(name, x, datatype, binary):
        inp = httpclient.InferInput(name, list(x.shape), datatype)
        inp.set_data_from_numpy(x, binary_data=binary)
        return [inp]

    x1 = batch[:1]
    checks.run(
        "wrong input name -> 4xx, server goes on",
        bad_request(lambda: named("images", x1, "FP32", False)),
    )
    checks.run(
        "wrong datatype (FP64, binary) -> 4xx, server goes on",
        bad_request(lambda: named(in_name, x1.astype(np.float64), "FP64", True)),
    )
    checks.run(
        "wrong datatype (INT32, JSON) -> 4xx, server goes on",
        bad_request(lambda: named(in_name, np.zeros(x1.shape, np.int32), "INT32", False)),
    )
    checks.run(
        "wrong shape [1,3,224,224] -> 4xx, server goes on",
        bad_request(lambda: named(in_name, np.zeros((1, 3, 224, 224), np.float32), "FP32", True)),
    )
    checks.run(
        "wrong rank [3,S,S] -> 4xx, server goes on",
        bad_request(lambda: named(in_name, x1[0], "FP32", False)),
    )
    checks.run(
        "unknown output name -> 4xx, server goes on",
        bad_request(
            lambda: named(in_name, x1, "FP32", True),
            outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)],
        ),
    )
    checks.run(
        "unknown model -> 4xx, server goes on",
        bad_request(lambda: named(in_name, x1, "FP32", True), model="no-such-model"),
    )

    # -- concurrency and statistics ---------------------------------------------

    def concurrent():
        nonlocal answered_items
        names = list(tensors) * 2  # 10 requests, 4 in flight (the client's concurrency)
        pending = []
        for name in names:
            inp = httpclient.InferInput(in_name, list(tensors[name].shape), "FP32")
            inp.set_data_from_numpy(tensors[name], binary_data=True)
            out = [httpclient.InferRequestedOutput(out_name, binary_data=True)]
            pending.append((name, client.async_infer(args.model, [inp], outputs=out)))
        worst = 0.0
        for name, req in pending:
            got = logits_of(req.get_result(timeout=args.timeout))
            answered_items += 1
            common.compare_logits(got, want[name][None], args.tol, f"concurrent {name}")
            worst = max(worst, float(np.max(np.abs(got[0] - want[name]))))
        return f"{len(names)} requests, 4 at a time, max |diff| {worst:.2g}"

    checks.run("concurrent requests (async_infer): logits equal ONNX Runtime's", concurrent)

    def statistics():
        stats = client.get_inference_statistics(args.model)
        rows = [s for s in stats.get("model_stats", []) if s.get("name") == args.model]
        assert rows, f"no model_stats for {args.model}: {stats}"
        count = rows[0].get("inference_count")
        executions = rows[0].get("execution_count")
        # Also counts the good requests made inside the bad-request checks.
        assert count == answered_items, f"inference_count {count}, this client had {answered_items} items answered"
        return f"inference_count {count}, execution_count {executions}"

    checks.run("statistics count the inferences", statistics)

    client.close()
    print(f"{args.group}: {checks.passed} passed, {checks.failed} failed", flush=True)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
