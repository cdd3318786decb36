"""NVIDIA Triton Inference Server serving one ONNX model, through PyTriton (nvidia-pytriton).

    python3.12 scripts/interop/pytriton_server.py --onnx MODEL.onnx --name NAME \
        --http-port P --grpc-port P --metrics-port P [--workspace DIR]

Run by scripts/interop.sh in its Python 3.12 venv (the wheel's tritonserver
loads the Python backend against that Python's libpython: the script puts its
lib folder on LD_LIBRARY_PATH). PyTriton starts the real tritonserver binary
shipped in the wheel, on loopback only, and binds a Python function to a model:
the function runs the graph with ONNX Runtime. Triton itself then does the
protocol (OIP v2 over HTTP with the binary tensor extension, gRPC), the
metadata (input `input` FP32 [-1,3,S,S], output `logits` FP32 [-1,1000]: the
batch axis comes from max_batch_size) and the dynamic batching.

Serves until SIGINT or SIGTERM, then stops Triton and its workers.
"""

from __future__ import annotations

import argparse
import logging
import signal

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True, help="the model file")
    ap.add_argument("--name", required=True, help="the model name served")
    ap.add_argument("--input", default="input", help="name of the input tensor (the graph's)")
    ap.add_argument("--output", default="logits", help="name of the output tensor (the graph's)")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--max-batch", type=int, default=8, help="Triton's max_batch_size for the model")
    ap.add_argument("--workspace", help="folder for PyTriton's sockets and its copy of tritonserver (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, sess_options=options, providers=["CPUExecutionProvider"])
    graph_in, graph_out = session.get_inputs()[0], session.get_outputs()[0]
    if (graph_in.name, graph_out.name) != (args.input, args.output):
        raise SystemExit(f"{args.onnx} has {graph_in.name!r} -> {graph_out.name!r}, not {args.input!r} -> {args.output!r}")
    item_shape = tuple(int(d) for d in graph_in.shape[1:])  # [3, S, S]; the graph's batch is 1
    classes = int(graph_out.shape[-1])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        # @batch hands over the whole (possibly dynamically batched) [N, 3, S, S]
        # array; the exported graph takes one item at a time.
        x = inputs[args.input]
        rows = [session.run(None, {args.input: item[None].astype(np.float32, copy=False)})[0] for item in x]
        return {args.output: np.concatenate(rows).astype(np.float32, copy=False)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    # serve() stops Triton (the server, its backend stub, the shared memory
    # between them) on KeyboardInterrupt only; SIGTERM, the way this server is
    # stopped, must do the same rather than leave them running.
    signal.signal(signal.SIGTERM, _interrupt)
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name=args.input, dtype=np.float32, shape=item_shape)],
            outputs=[Tensor(name=args.output, dtype=np.float32, shape=(classes,))],
            config=ModelConfig(max_batch_size=args.max_batch),
            strict=True,
        )
        triton.serve()  # until SIGINT / SIGTERM


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    main()
