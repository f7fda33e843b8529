"""Engines: the ways this build can run a version's ``serving_default``, one runtime in one precision.

- ``tensorflow/fp32``: the SavedModel's signature as exported (the reference every other way is
  compared with).
- ``tensorflow/bf16`` (a CPU with AVX-512 BF16 or AMX, no GPU) and ``tensorflow/fp16`` (a GPU with
  tensor cores): the signature's graph with its variables frozen to constants, run in a session of its
  own whose graph optimizer rewrites it to mixed precision (oneDNN's bfloat16 pass; the CUDA float16
  pass). A session keeps the option to this one graph: TensorFlow's process-wide switch would also
  rewrite the feature-map and explanation graphs, which stay float32.
- ``openvino/fp32``, ``openvino/bf16``: the loaded signature converted by OpenVINO and compiled for
  the CPU with that inference precision. OpenVINO is an optional extra; without it only TensorFlow is offered.

Everything here imports TensorFlow or OpenVINO and runs in the loader or inference threads.
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import Any, Protocol

import numpy as np

from contract import REFERENCE, SERVING_SIGNATURE, ModelCard
from contract.machine import cpu_flags, cpu_model

logger = logging.getLogger(__name__)

# The graph optimizer's mixed-precision pass per reduced precision (RewriterConfig field names).
_REWRITE_PASS = {"bf16": "auto_mixed_precision_onednn_bfloat16", "fp16": "auto_mixed_precision"}
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}
# One call at a time spread over every core (the batcher merges requests), and its threads not pinned to
# cores: the event loop and the decoding threads share those cores, and a pinned thread cannot move off
# the core one of them is on (measured: about 8% more single-image requests per second on 2 cores).
OPENVINO_CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
_TENSOR_CORE_CAPABILITY = (7, 0)  # Volta and newer run float16 matrix maths on tensor cores


def openvino_cpu_config(precision: str) -> dict[str, Any]:
    """How the service compiles a model for OpenVINO's CPU plugin in ``precision`` (fp32 or bf16)."""
    return {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision], **OPENVINO_CPU_CONFIG}


class Engine(Protocol):
    """Runs a batch of validated images ``(n, h, w, c)`` float32 to class probabilities ``(n, classes)``."""

    runtime: str
    precision: str

    def predict(self, images: np.ndarray) -> np.ndarray: ...


# -- what this machine can run -------------------------------------------------------------------
@cache
def device_name() -> str:
    """The accelerator TensorFlow computes on: the first GPU's name, else the CPU model."""
    gpus = _tensor_core_gpus(any_capability=True)
    return gpus[0] if gpus else cpu_model()


def _tensor_core_gpus(any_capability: bool = False) -> list[str]:
    import tensorflow as tf

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        if any_capability or tuple(details.get("compute_capability", (0, 0))) >= _TENSOR_CORE_CAPABILITY:
            names.append(details.get("device_name", gpu.name))
    return names


@cache
def _openvino_core() -> Any:
    import openvino

    return openvino.Core()


@cache
def unsupported_reason(runtime: str, precision: str) -> str | None:
    """Why this machine cannot run ``runtime`` in ``precision``; ``None`` when it can."""
    if runtime == "tensorflow":
        if precision == "fp32":
            return None
        has_gpu = bool(_tensor_core_gpus(any_capability=True))
        if precision == "bf16":
            if has_gpu:
                return "TensorFlow's bfloat16 pass rewrites CPU kernels only, and this machine computes on a GPU"
            if not cpu_flags() & _BF16_CPU_FLAGS:
                return "this CPU has neither AVX-512 BF16 nor AMX (no bfloat16 instructions)"
            return None
        if precision == "fp16":
            return None if _tensor_core_gpus() else "float16 needs a GPU with tensor cores (compute capability ≥ 7.0)"
    elif runtime == "openvino":
        try:
            core = _openvino_core()
        except ImportError:
            return "OpenVINO is not installed (pip install '.[openvino]')"
        if precision == "fp32":
            return None
        if precision == "bf16":
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            return None if "BF16" in capabilities else "OpenVINO reports no BF16 support on this CPU"
        return f"OpenVINO runs {precision} only on its GPU plugin, which this service does not use"
    return f"unknown runtime {runtime!r}"


# -- the engines ---------------------------------------------------------------------------------
class TensorFlowSignature:
    """The exported ``serving_default`` signature, called eagerly."""

    runtime, precision = REFERENCE

    def __init__(self, saved_model: Any, card: ModelCard) -> None:
        self._signature = saved_model.signatures[SERVING_SIGNATURE]
        self._input, self._output = card.input.name, card.output.name

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._signature(**{self._input: tf.constant(images)})[self._output].numpy()


class TensorFlowMixedPrecision:
    """The frozen ``serving_default`` graph in a session that rewrites it to ``precision``."""

    runtime = "tensorflow"

    def __init__(self, saved_model: Any, card: ModelCard, precision: str, threads: int = 0) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        self.precision = precision
        signature = saved_model.signatures[SERVING_SIGNATURE]
        frozen = convert_variables_to_constants_v2(signature)
        output = tf.nest.pack_sequence_as(signature.structured_outputs, frozen.outputs)[card.output.name]
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        rewrite = rewriter_config_pb2.RewriterConfig()
        setattr(rewrite, _REWRITE_PASS[precision], rewriter_config_pb2.RewriterConfig.ON)
        config = config_pb2.ConfigProto(
            graph_options=config_pb2.GraphOptions(rewrite_options=rewrite), intra_op_parallelism_threads=threads
        )
        config.gpu_options.allow_growth = True
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        self._input = graph.get_tensor_by_name(frozen.inputs[0].name)
        self._output = graph.get_tensor_by_name(output.name)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(self._output, {self._input: images})


class OpenVino:
    """The SavedModel read and compiled by OpenVINO for the CPU; one infer request per thread."""

    runtime = "openvino"

    def __init__(self, model: Any, card: ModelCard, precision: str, threads: int = 0) -> None:
        self.precision = precision
        config = openvino_cpu_config(precision)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = _openvino_core().compile_model(model, "CPU", config)
        self._output = self._compiled.output(card.output.name)
        self._local = threading.local()

    def predict(self, images: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # an infer request serves one call at a time: each inference thread has its own
            request = self._local.request = self._compiled.create_infer_request()
        return request.infer([images])[self._output]  # a copy: the request's buffers are reused


class Builder:
    """Builds a version's engines; what several of them share (OpenVINO's converted model) is made once."""

    def __init__(self, saved_model: Any, card: ModelCard, threads: int = 0) -> None:
        self.saved_model, self.card, self.threads = saved_model, card, threads
        self._openvino_model: Any = None

    def build(self, runtime: str, precision: str) -> Engine:
        """An engine for a supported ``(runtime, precision)`` (see :func:`unsupported_reason`)."""
        if (runtime, precision) == REFERENCE:
            return TensorFlowSignature(self.saved_model, self.card)
        if runtime == "tensorflow":
            return TensorFlowMixedPrecision(self.saved_model, self.card, precision, self.threads)
        if self._openvino_model is None:
            # Converted from the loaded signature, whose variables TensorFlow has already read: OpenVINO's
            # own SavedModel reader fails on checkpoints with many variables ("Cannot find requested
            # variable"; a 13-layer ResNet with batch normalization has 77).
            import openvino

            signature = self.saved_model.signatures[SERVING_SIGNATURE]
            self._openvino_model = openvino.convert_model(signature, share_weights=False)
        return OpenVino(self._openvino_model, self.card, precision, self.threads)
