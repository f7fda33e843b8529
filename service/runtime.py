"""The runtime: the loaded model versions, their batchers and the inference threads, with one start and stop.

:meth:`Runtime.start` configures TensorFlow, loads and warms up every selected version (in a thread,
so the event loop stays free), creates the thread pool and one :class:`~service.batcher.Batcher` per
available version, and tunes the garbage collector for request load. :meth:`Runtime.stop` drains the
batchers and joins the threads. Everything that serves a request looks models up here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import KeysView
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from contract import ModelCard
from service.batcher import Batcher
from service.errors import ModelNotReady
from service.metrics import Metrics
from service.repository import ModelRepository, ModelState, ModelVersion, load_version
from service.settings import Settings

logger = logging.getLogger(__name__)

# Allocations between young collections, then young collections per middle one, middle per full one.
GC_THRESHOLDS = (20_000, 20, 20)
# Threads beside the model-call slots: decoding large bodies and images, encoding large answers.
_SPARE_THREADS = 2


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A version that is ready to answer, with its batcher."""

    version: ModelVersion
    batcher: Batcher

    @property
    def card(self) -> ModelCard:
        return self.version.loaded_card


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.repository = ModelRepository(settings.model_repository)
        self.executor: ThreadPoolExecutor | None = None
        self.started = False
        self._batchers: dict[str, Batcher] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        available = [m for m in self.repository.all_versions() if m.state is ModelState.AVAILABLE]
        slots = self.settings.max_concurrent_batches * len(available) + self.settings.max_concurrent_feature_maps
        self.executor = ThreadPoolExecutor(max_workers=slots + _SPARE_THREADS, thread_name_prefix="inference")
        for model in available:
            batcher = Batcher(
                model.label, model.predict, self.executor, self.metrics,
                max_batch_size=self.settings.max_batch_size,
                max_concurrent_batches=self.settings.max_concurrent_batches,
                max_wait_s=self.settings.max_batch_wait_ms / 1000,
                max_queue_images=self.settings.max_queue_images,
                queue_timeout_s=self.settings.queue_timeout_s,
                request_timeout_s=self.settings.request_timeout_s,
            )  # fmt: skip
            batcher.start()
            self._batchers[model.label] = batcher
        _tune_gc()
        self.started = True
        ready = [m.label for m in self.repository.all_versions() if self.is_ready(m)]
        logger.info("serving %d model version(s): %s", len(ready), ", ".join(ready) or "none")

    async def stop(self) -> None:
        """Refuse new work, let queued requests finish (up to the request timeout), join the threads."""
        self.started = False
        await asyncio.gather(*(b.drain(self.settings.request_timeout_s) for b in self._batchers.values()))
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        logger.info("stopped")

    def _load(self) -> None:
        _configure_tensorflow(self.settings)
        for model in self.repository.discover(self.settings.models, self.settings.load_all_versions):
            load_version(model)

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def model_names(self) -> KeysView[str]:
        """The names of every discovered model (a live view: no copy per request)."""
        return self.repository.models.keys()

    def is_ready(self, model: ModelVersion) -> bool:
        batcher = self._batchers.get(model.label)
        return model.state is ModelState.AVAILABLE and batcher is not None and batcher.alive

    def find(self, name: str, version: int | str | None = None) -> ModelVersion:
        """The named version (or the default one) whatever its state; 404 when unknown."""
        return self.repository.find(name, version)

    def served(self, name: str, version: int | str | None = None) -> ServedModel:
        """The named (or default) version if it is ready to answer; 404 when unknown, 503 when not ready."""
        model = self.repository.find(name, version)
        if not self.is_ready(model):
            detail = f": {model.error}" if model.error else ""
            raise ModelNotReady(f"model {model.label} is {model.state.value}{detail}")
        return ServedModel(model, self._batchers[model.label])

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when started, some version is ready and every version named in ``CNN_MODELS`` is."""
        if not self.started:
            return False, {}
        versions = self.repository.all_versions()
        states = {v.label: ("READY" if self.is_ready(v) else v.state.value) for v in versions}
        explicit = set(self.settings.models)
        required = [v for v in versions if v.name in explicit or v.label in explicit]
        ready = any(self.is_ready(v) for v in versions) and all(self.is_ready(v) for v in required)
        return ready, states


def _configure_tensorflow(settings: Settings) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import: no C++ info logs
    import tensorflow as tf

    if settings.inference_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.inference_threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    logger.info("TensorFlow %s sees devices: %s", tf.__version__, ", ".join(devices))


def _tune_gc() -> None:
    """Loading TensorFlow and the models left ~300k long-lived objects: keep the cyclic garbage collector
    from rescanning them on every full collection under request load. A JSON image allocates ~800
    short-lived lists, so the default young-generation threshold (700) would run a collection per
    request over every in-flight request's objects: raise it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
