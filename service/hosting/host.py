"""The model host: owns the model table, its reconciler and the threads models run in, for the app's life.

:meth:`ModelHost.start` configures TensorFlow, checks that the forced runtime and precision can run
here, loads what the policies select (readiness waits for this) and, when ``CNN_POLL_INTERVAL_S`` > 0,
re-runs :meth:`Reconciler.sync` at that interval. :meth:`ModelHost.stop` refuses new work, lets queued
requests finish and joins the threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from service.core.metrics import Metrics
from service.core.settings import Settings
from service.hosting import engines
from service.hosting.planner import PlanOptions, StartupError, check_supported
from service.hosting.priority import lower_current_thread
from service.hosting.reconciler import Reconciler
from service.hosting.table import ModelTable

logger = logging.getLogger(__name__)

# Allocations between young collections, then young collections per middle one, middle per full one.
GC_THRESHOLDS = (20_000, 20, 20)
# Threads beside the feature-map and explanation slots: decoding large bodies and images, encoding
# large answers. (Batched model calls run in each batcher's own threads.)
_SPARE_THREADS = 4


class ModelHost:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.table = ModelTable()
        # Threads start on the first task, so creating the pools here starts nothing.
        self.executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_feature_maps + _SPARE_THREADS, thread_name_prefix="inference"
        )
        # The loader starts the engines' threads: they take its lower priority (see service.hosting.priority).
        self._loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="model-loader",
            initializer=lower_current_thread, initargs=(settings.compute_nice,),
        )  # fmt: skip
        self.reconciler = Reconciler(settings, metrics, self.table, self._loader)
        self._watcher: asyncio.Task | None = None
        self._switch_interval: float | None = None  # the interpreter's, while serving tunes it

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._loader, _configure_tensorflow, self.settings)
        try:
            await loop.run_in_executor(
                self._loader, check_supported, PlanOptions.from_settings(self.settings), engines.unsupported_reason
            )
        except StartupError as exc:
            logger.error("cannot start: %s", exc)
            raise
        await self.reconciler.sync()
        self._switch_interval = _tune_interpreter(self.settings)
        self.table.started = True
        ready = [v.key for v in self.table.all_versions() if v.ready]
        logger.info("serving %d model version(s): %s", len(ready), ", ".join(ready) or "none")
        if self.settings.poll_interval_s > 0:
            self._watcher = loop.create_task(self._watch(), name="repository-watcher")

    async def stop(self) -> None:
        """Stop watching, refuse new work, let queued requests finish (up to the request timeout), join
        the threads."""
        self.table.started = False
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.reconciler.drain()
        for pool in (self.executor, self._loader):
            pool.shutdown(wait=True)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
        logger.info("stopped")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.reconciler.sync()
            except Exception:  # a bad poll must not end the watching
                logger.exception("repository poll failed")


def _configure_tensorflow(settings: Settings) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import: no C++ info logs
    import tensorflow as tf

    if settings.inference_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.inference_threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    logger.info("TensorFlow %s sees devices: %s", tf.__version__, ", ".join(devices))


def _tune_interpreter(settings: Settings) -> float:
    """Tune the interpreter for serving, once the models are loaded.

    The garbage collector: loading TensorFlow and the models left ~300k long-lived objects; keep it from
    rescanning them on every full collection under request load. A JSON image allocates ~800 short-lived
    lists, so the default young-generation threshold (700) would run a collection per request over every
    in-flight request's objects: raise it.

    The GIL's switch interval: a batch thread needs the GIL for a moment between two model calls (to hand
    the answers to the event loop and take the next batch), and under load the event loop holds it. Python
    makes the waiting thread wait up to the interval, 5 ms by default, with the model idle meanwhile:
    ``CNN_GIL_SWITCH_INTERVAL_MS`` (0.5) keeps the model computing (``make bench``'s ``gil`` comparison on
    2 cores, one-image requests at 64 connections: the server kept 1.70 of the cores busy at 5 ms, 1.75 at
    0.5 ms). Returns the interval it replaced (:meth:`ModelHost.stop` puts it back).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return previous
