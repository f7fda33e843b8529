"""The same-engine peer: a Seldon MLServer custom runtime running an OpenVINO model.

It runs inside MLServer's own virtual environment (``make bench`` builds it from
``bench/mlserver-constraints.txt``), so it imports only MLServer, OpenVINO and NumPy. The benchmark
writes the OpenVINO IR the service compiles once (:func:`bench.inprocess.export_openvino_ir`) and points the model
settings' ``uri`` at the ``.xml``; ``parameters.extra`` carries the precision and output name the
service itself chose, so both servers run the same compiled network.
"""

from __future__ import annotations

import threading

import numpy as np
import openvino
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the rest in float32


class OpenVinoRuntime(MLModel):
    """One FP32 input tensor in, class probabilities out, on OpenVINO's CPU plugin (latency hint)."""

    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        config = {  # as the service compiles it (service.hosting.engines.openvino_cpu_config)
            "INFERENCE_PRECISION_HINT": _PRECISION_HINT[extra.get("precision", "fp32")],
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
        }
        compiled = openvino.Core().compile_model(self.settings.parameters.uri, "CPU", config)
        self._output_name = extra.get("output", "probabilities")
        self._output = compiled.output(self._output_name)
        self._compiled = compiled
        self._local = threading.local()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        probabilities = request.infer([images])[self._output]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(self._output_name, probabilities)],
        )
