"""The app factory: settings → model repository → batchers → routers.

``uvicorn service.app:app`` serves the default settings (``CNN_*`` environment variables).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Collection
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastapi import FastAPI

from service import api_native, api_tfserving, api_v2, health
from service.batcher import Batcher
from service.errors import ERROR_RESPONSES, install_error_handlers
from service.fastpath import PredictFastPath
from service.inference import Inference
from service.limits import BodySizeLimit
from service.metrics import Metrics, MetricsMiddleware
from service.repository import ModelRepository, ModelState, load_version
from service.settings import Settings, get_settings

logger = logging.getLogger("service")

# Allocations between young collections, then young collections per middle one, middle per full one.
GC_THRESHOLDS = (20_000, 20, 20)

DESCRIPTION = """
Classifies Fashion-MNIST-style images with convolutional networks exported as SavedModels, and
explains them: per-layer architecture summaries and feature maps.

Three APIs share one batched inference path:
- **native** (`/api/v1`): multipart uploads, raw images, base64 or tensor JSON; top-k with class names;
  feature maps as arrays or PNG grids; layer summaries;
- **TensorFlow Serving REST** (`/v1/models/...`);
- **Open Inference Protocol v2** (`/v2/...`, KServe/Triton), including binary tensors.

Errors are JSON `{"error": "..."}` with a 4xx status for anything wrong with the request.
"""


def configure_tensorflow(settings: Settings) -> None:
    import tensorflow as tf

    if settings.inference_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.inference_threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    logger.info("TensorFlow %s sees devices: %s", tf.__version__, ", ".join(devices))


def _load_models(settings: Settings) -> ModelRepository:
    configure_tensorflow(settings)
    repository = ModelRepository(settings.model_repository)
    for model in repository.discover(settings.models, settings.load_all_versions):
        load_version(model)
    return repository


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repository = await asyncio.to_thread(_load_models, settings)
        available = [m for m in repository.all_versions() if m.state is ModelState.AVAILABLE]
        # One thread per model-call slot, plus two for feature maps and large bodies/images to decode.
        workers = settings.max_concurrent_batches * len(available) + 2
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        for model in available:
            model.batcher = Batcher(
                model.label, model.predict, executor, metrics,
                max_batch_size=settings.max_batch_size, max_concurrent_batches=settings.max_concurrent_batches,
                max_wait_s=settings.max_batch_wait_ms / 1000,
                max_queue_images=settings.max_queue_images, queue_timeout_s=settings.queue_timeout_s,
                request_timeout_s=settings.request_timeout_s,
            )  # fmt: skip
            model.batcher.start()
        # Loading TensorFlow and the models left ~300k long-lived objects: keep the cyclic garbage
        # collector from rescanning them on every full collection under request load. A JSON image
        # allocates ~800 short-lived lists, so the default young-generation threshold (700) would run
        # a collection per request over every in-flight request's objects: raise it.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        app.state.inference = Inference(repository, settings, metrics, executor)
        app.state.started = True
        ready = [m.label for m in repository.all_versions() if m.ready]
        logger.info("serving %d model version(s): %s", len(ready), ", ".join(ready) or "none")
        try:
            yield
        finally:
            app.state.started = False
            await asyncio.gather(
                *(m.batcher.drain(settings.request_timeout_s) for m in repository.all_versions() if m.batcher)
            )
            executor.shutdown(wait=True)
            logger.info("stopped")

    app = FastAPI(
        title="CNN model server",
        version=api_v2.SERVER_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started = False
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (api_native.router, api_tfserving.router, api_v2.router):
        app.include_router(router, responses=ERROR_RESPONSES)

    # Middlewares, innermost first.
    if settings.fast_path:
        app.add_middleware(PredictFastPath, state=app.state)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    def known_models() -> Collection[str]:
        inference = getattr(app.state, "inference", None)
        return inference.repository.models if inference else ()

    app.add_middleware(MetricsMiddleware, metrics=metrics, known_models=known_models)
    return app


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


configure_logging(get_settings().log_level)
app = create_app()
