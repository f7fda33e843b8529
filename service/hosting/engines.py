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
- ``openvino/int8``: the version's quantized model (``openvino_int8/model.xml``, written by
  ``python -m models.precision``): 8-bit weights and activations, its other operations in float32.

Everything here imports TensorFlow or OpenVINO and runs in the loader or inference threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contract import INT8_MODEL, REFERENCE, SERVING_SIGNATURE, ModelCard
from contract.machine import cpu_flags, cpu_model

logger = logging.getLogger(__name__)

# The graph optimizer's mixed-precision pass per reduced precision (RewriterConfig field names).
_REWRITE_PASS = {"bf16": "auto_mixed_precision_onednn_bfloat16", "fp16": "auto_mixed_precision"}
# int8: what the quantized model keeps in floating point runs in float32, so the accuracy recorded for it
# holds on every CPU (bfloat16 there measured 4% faster at batch 64 on AVX-512 BF16).
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
OPENVINO_CPU_PRECISIONS = tuple(_OPENVINO_PRECISION)  # what openvino_cpu_config compiles in
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}
# A lone call spread over every core, and its threads not pinned to cores: the event loop and the
# decoding threads share those cores, and a pinned thread cannot move off the core one of them is on
# (measured: about 8% more single-image requests per second on 2 cores).
OPENVINO_CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
# Calls that overlap run on streams instead: each on a share of the cores, with no barrier between
# threads after every layer, where one thread's slice of a call waits for another's, preempted by the
# event loop (see OpenVino).
OPENVINO_STREAMS_CONFIG = {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}
_TENSOR_CORE_CAPABILITY = (7, 0)  # Volta and newer run float16 matrix maths on tensor cores


def openvino_cpu_config(precision: str, streams: int | None = None) -> dict[str, Any]:
    """How the service compiles a model for OpenVINO's CPU plugin in ``precision`` (fp32, bf16, int8): for a
    lone call on every core, or with ``streams`` (0: as many as OpenVINO finds best here) for calls that
    overlap."""
    if streams is None:
        return {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision], **OPENVINO_CPU_CONFIG}
    chosen = {"NUM_STREAMS": streams} if streams else {}
    return {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision], **OPENVINO_STREAMS_CONFIG, **chosen}


class Engine(Protocol):
    """Runs a batch of validated images ``(n, h, w, c)`` float32 to class probabilities ``(n, classes)``."""

    runtime: str
    precision: str

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def allow_concurrent_calls(self, calls: int, warm_up: Sequence[np.ndarray] = ()) -> int:
        """Get ready for ``calls`` calls at once (0: as many as this engine runs well at once), each of the
        ``warm_up`` batches already run once the way overlapping calls run; return how many."""
        ...


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
        if precision == "int8":
            return "int8 runs on OpenVINO only (the quantized model python -m models.precision writes)"
    elif runtime == "openvino":
        try:
            core = _openvino_core()
        except ImportError:
            return "OpenVINO is not installed (pip install '.[openvino]')"
        if precision in ("fp32", "int8"):  # int8: on any x86-64 CPU; fast with VNNI or AMX (timing decides)
            return None
        if precision == "bf16":
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            return None if "BF16" in capabilities else "OpenVINO reports no BF16 support on this CPU"
        return f"OpenVINO runs {precision} only on its GPU plugin, which this service does not use"
    return f"unknown runtime {runtime!r}"


# -- the engines ---------------------------------------------------------------------------------
class _OneCallSpreadsOverEveryCore:
    """TensorFlow's engines: a call already spreads over every core, so two at once only share them."""

    def allow_concurrent_calls(self, calls: int, warm_up: Sequence[np.ndarray] = ()) -> int:
        return calls or 1


class TensorFlowSignature(_OneCallSpreadsOverEveryCore):
    """The exported ``serving_default`` signature, called eagerly."""

    runtime, precision = REFERENCE

    def __init__(self, saved_model: Any, card: ModelCard) -> None:
        self._signature = saved_model.signatures[SERVING_SIGNATURE]
        self._input, self._output = card.input.name, card.output.name

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._signature(**{self._input: tf.constant(images)})[self._output].numpy()


class TensorFlowMixedPrecision(_OneCallSpreadsOverEveryCore):
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
    """The SavedModel read and compiled by OpenVINO for the CPU; one infer request per thread.

    A call made while no other runs gets every core (a latency compile). Once concurrent calls are
    allowed (:meth:`allow_concurrent_calls`), a call that starts while another runs goes to a second
    compile of the model with one stream per concurrent call, each on its share of the cores. Two calls
    on the latency compile would take turns; and on 2 cores with an event loop beside it, a latency call
    loses time at every layer, where one core's half of the work waits for the other's, preempted
    (measured in-process, batches of 32, a Python thread busy half the time beside it: 1,400–1,460 img/s
    on one latency call at a time, 1,890–2,010 on two streams; 2,160–2,320 and 2,500–2,620 without it).

    Once calls overlap, every call goes to the streams, the one that starts alone too, until a call runs
    alone from start to end. Otherwise, under a steady load, each call that happened to find the model
    free ran on every core with another call soon beside it, more threads than cores (measured on 2
    cores, one-image requests from 64 connections: 4–5% more images per second; from 8 connections,
    whose calls seldom overlap, and at one connection, as before).
    """

    runtime = "openvino"

    def __init__(self, model: Any, card: ModelCard, precision: str, threads: int = 0) -> None:
        self.precision = precision
        self._model, self._output, self._threads = model, card.output.name, threads
        # (compiled model, its output) for a lone call [False] and for overlapping calls [True]
        self._compiled = {False: self._compile(openvino_cpu_config(precision))}
        self._calls = 0  # calls running now, under the lock
        self._started = 0  # calls started so far, under the lock
        self._overlapping = False  # calls overlap: every call goes to the streams, under the lock
        self._lock = threading.Lock()
        self._local = threading.local()

    def _compile(self, config: dict[str, Any]) -> tuple[Any, Any]:
        if self._threads:
            config["INFERENCE_NUM_THREADS"] = self._threads
        compiled = _openvino_core().compile_model(self._model, "CPU", config)
        return compiled, compiled.output(self._output)

    def allow_concurrent_calls(self, calls: int, warm_up: Sequence[np.ndarray] = ()) -> int:
        if calls == 1:
            return 1
        streams = self._compile(openvino_cpu_config(self.precision, streams=calls))
        compiled = streams[0]
        count = int(compiled.get_property("NUM_STREAMS"))  # OpenVINO gives at most one per core
        if count > 1:
            request = compiled.create_infer_request()
            for batch in warm_up:  # the first call on a shape sets up its kernels
                request.infer([batch])
            self._compiled[True] = streams
        return calls or count  # more calls than streams wait for one

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            alone = self._calls == 0
            self._overlapping = (self._overlapping or not alone) and True in self._compiled
            shared = self._overlapping
            self._calls += 1
            self._started += 1
            started = self._started
        try:
            compiled, output = self._compiled[shared]
            requests = self._local.__dict__  # this thread's infer requests: one serves one call at a time
            request = requests.get(shared)
            if request is None:
                request = requests[shared] = compiled.create_infer_request()
            return request.infer([images])[output]  # a copy: the request's buffers are reused
        finally:
            with self._lock:
                self._calls -= 1
                if alone and self._started == started:  # no call beside this one from start to end
                    self._overlapping = False


def convert_to_openvino(saved_model: Any) -> Any:
    """The loaded SavedModel's ``serving_default`` as an OpenVINO model (float32 weights). Converted from the
    loaded signature, whose variables TensorFlow has already read: OpenVINO's own SavedModel reader fails on
    checkpoints with many variables ("Cannot find requested variable"; a 13-layer ResNet with batch
    normalization has 77). Keep ``saved_model`` referenced while the result is used."""
    import openvino

    return openvino.convert_model(saved_model.signatures[SERVING_SIGNATURE], share_weights=False)


def missing_from_version(version_dir: Path, runtime: str, precision: str) -> str | None:
    """What a version lacks to run ``runtime`` in ``precision`` (its quantized model); ``None``: nothing."""
    if (runtime, precision) == ("openvino", "int8") and not (version_dir / INT8_MODEL).is_file():
        return f"the version has no quantized model ({INT8_MODEL}; python -m models.precision writes it)"
    return None


class Builder:
    """Builds a version's engines; what several of them share (OpenVINO's converted model) is made once."""

    def __init__(self, saved_model: Any, card: ModelCard, version_dir: Path, threads: int = 0) -> None:
        self.saved_model, self.card, self.version_dir, self.threads = saved_model, card, version_dir, threads
        self._openvino_model: Any = None

    def build(self, runtime: str, precision: str) -> Engine:
        """An engine for a supported ``(runtime, precision)`` (see :func:`unsupported_reason` and
        :func:`missing_from_version`)."""
        if (runtime, precision) == REFERENCE:
            return TensorFlowSignature(self.saved_model, self.card)
        if runtime == "tensorflow":
            return TensorFlowMixedPrecision(self.saved_model, self.card, precision, self.threads)
        if precision == "int8":
            model = _openvino_core().read_model(self.version_dir / INT8_MODEL)
            return OpenVino(model, self.card, precision, self.threads)
        if self._openvino_model is None:
            self._openvino_model = convert_to_openvino(self.saved_model)
        return OpenVino(self._openvino_model, self.card, precision, self.threads)
