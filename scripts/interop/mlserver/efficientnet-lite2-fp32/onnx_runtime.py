"""A minimal MLServer runtime that serves one ONNX model through ONNX Runtime.

MLServer ships no ONNX runtime of its own; this class fills that gap for the
interoperability checks (scripts/interop.sh). model-settings.json beside it
names it (`"implementation": "onnx_runtime.OnnxRuntimeModel"`; MLServer puts
this folder on sys.path while it imports it), points `parameters.uri` at the
.onnx file and declares the tensors' metadata that GET /v2/models/{name}
returns: the metadata is the contract, and the requests are checked against it.

The exported graphs take a fixed batch of 1, so a request of N items is run
row by row and the N answers are stacked: the server still offers a free batch
axis (-1), as the metadata says.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    """One ONNX graph with one FP32 input and one FP32 output."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        # Two cores on the test machine: one intra-op thread per request leaves
        # the other core to the server and to the client under test.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        graph_in = self._session.get_inputs()[0]
        graph_out = self._session.get_outputs()[0]
        self._graph_input = graph_in.name
        # The tensors offered are the ones the metadata declares; their names
        # must be the graph's so that nothing is renamed behind the client.
        declared_in = self._settings.inputs[0]
        declared_out = self._settings.outputs[0]
        if (declared_in.name, declared_out.name) != (graph_in.name, graph_out.name):
            raise ValueError(
                f"model-settings.json declares {declared_in.name!r} -> {declared_out.name!r}, "
                f"the graph {path} has {graph_in.name!r} -> {graph_out.name!r}"
            )
        self._input = declared_in
        self._output = declared_out
        # The graph's own input shape with its batch axis as 1: [1, 3, S, S].
        self._item_shape = [int(d) for d in graph_in.shape[1:]]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = self._checked_input(payload)
        rows = [self._session.run(None, {self._graph_input: item[None]})[0] for item in x]
        logits = np.concatenate(rows).astype(np.float32, copy=False)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(self._output.name, logits)],
        )

    def _checked_input(self, payload: InferenceRequest) -> np.ndarray:
        """The request's one input as an [N, ...] float32 array, or a 400 error."""
        want = self._input
        if len(payload.inputs) != 1 or payload.inputs[0].name != want.name:
            got = [i.name for i in payload.inputs]
            raise InferenceError(f"model {self.name} takes one input {want.name!r}, the request has {got}")
        req = payload.inputs[0]
        if req.datatype != want.datatype:
            raise InferenceError(f"input {req.name!r} has datatype {req.datatype}, the model takes {want.datatype}")
        shape = list(req.shape)
        if len(shape) != len(want.shape) or shape[1:] != list(want.shape[1:]) or shape[0] < 1:
            raise InferenceError(f"input {req.name!r} has shape {shape}, the model takes {list(want.shape)}")
        if payload.outputs and any(o.name != self._output.name for o in payload.outputs):
            got = [o.name for o in payload.outputs]
            raise InferenceError(f"model {self.name} gives one output {self._output.name!r}, the request asks for {got}")
        try:
            x = NumpyCodec.decode_input(req)
        except Exception as e:  # a data length that does not fit the shape
            raise InferenceError(f"input {req.name!r}: {e}") from e
        return np.asarray(x, dtype=np.float32).reshape([shape[0], *self._item_shape])
