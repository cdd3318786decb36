"""A third-party OIP v2 server (MLServer, Triton) serving the large model, before the device uses it.

    python scripts/interop/server_checks.py --url http://HOST:PORT --group LABEL \
        (--binary-extension | --no-binary-extension) [--model NAME]

These checks make sure the server stands where the device test expects it, so
that a failure of `edgecascade run` against it points at the device, not at the
server set-up (our ONNX Runtime class, its settings). Through Triton's HTTP
client (JSON tensors, which every OIP v2 server takes):

- the server is live and ready, and lists the binary tensor extension or not,
  as expected;
- the model's metadata: input `input` FP32 [-1,3,S,S], output `logits` FP32
  [-1,1000] (what the device plans its requests from);
- its logits on every demo photo, in one batch, equal ONNX Runtime's.

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

BINARY_EXTENSION = "binary_tensor_data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="http://HOST:PORT of the server")
    ap.add_argument("--model", default="efficientnet-lite2-fp32", help="model name (and manifest in models/)")
    ap.add_argument("--group", required=True, help="label of these checks in the summary")
    binary = ap.add_mutually_exclusive_group(required=True)
    binary.add_argument("--binary-extension", dest="binary", action="store_true", help="the server lists it")
    binary.add_argument("--no-binary-extension", dest="binary", action="store_false", help="it does not")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest |logit - ORT logit| allowed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call")
    args = ap.parse_args()

    manifest = refprep.load_manifest(args.model)
    size = manifest["input"]["size"]
    checks = common.Checks(args.group)
    client = httpclient.InferenceServerClient(
        url=args.url.removeprefix("http://"), connection_timeout=args.timeout, network_timeout=args.timeout
    )

    def health():
        assert client.is_server_live() and client.is_server_ready(), "server not live and ready"
        assert client.is_model_ready(args.model), f"model {args.model} not ready"
        meta = client.get_server_metadata()
        listed = BINARY_EXTENSION in meta.get("extensions", [])
        assert listed == args.binary, f"{BINARY_EXTENSION} listed: {listed}, expected {args.binary} ({meta})"
        return f"{meta.get('name')} {meta.get('version')}, extensions {meta.get('extensions')}"

    def metadata():
        meta = client.get_model_metadata(args.model)
        strip = lambda ts: [{k: t.get(k) for k in ("name", "datatype", "shape")} for t in ts]  # noqa: E731
        want_in = [{"name": manifest["input"]["name"], "datatype": "FP32", "shape": [-1, 3, size, size]}]
        want_out = [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
        assert meta.get("name") == args.model, f"name {meta.get('name')!r}"
        assert strip(meta.get("inputs", [])) == want_in, f"inputs {meta.get('inputs')}, expected {want_in}"
        assert strip(meta.get("outputs", [])) == want_out, f"outputs {meta.get('outputs')}, expected {want_out}"
        return f"input {want_in[0]['shape']}, output {want_out[0]['shape']}, platform {meta.get('platform')!r}"

    def logits():
        photos = common.photo_paths()
        batch = np.concatenate([common.photo_tensor(p, manifest) for p in photos])
        want = common.OrtReference(manifest).logits(batch)
        inp = httpclient.InferInput(manifest["input"]["name"], list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=False)
        out = [httpclient.InferRequestedOutput("logits", binary_data=False)]
        got = client.infer(args.model, [inp], outputs=out).as_numpy("logits")
        assert got is not None, "no output 'logits'"
        return common.compare_logits(got, want, args.tol, f"batch of {len(photos)}")

    checks.run("server live, ready, extensions as expected", health)
    checks.run("model metadata", metadata)
    checks.run("its logits equal ONNX Runtime's (tritonclient, JSON)", logits)
    client.close()
    print(f"{args.group}: {checks.passed} passed, {checks.failed} failed", flush=True)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
