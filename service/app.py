"""The app factory: settings → model host (table, reconciler, threads) → pipeline → the data plane,
handed to the REST routers and the gRPC server; the explorer page and middlewares.

``uvicorn --factory service.app:create_app`` serves the default settings (``CNN_*`` environment
variables); ``python -m service`` does that with the settings' host, port and shutdown grace period.
Creating an app has no side effects: models load, and the process is tuned for serving, when its
lifespan starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service import __version__
from service.core import logs, tracing
from service.core.errors import ERROR_RESPONSES, install_error_handlers
from service.core.metrics import Metrics
from service.core.settings import Settings, get_settings
from service.hosting.host import ModelHost
from service.inference.pipeline import InferencePipeline
from service.protocol.plane import DataPlane
from service.transports import rest_health, rest_native, rest_repository, rest_tfserving, rest_v2
from service.transports.explorer import add_explorer
from service.transports.grpc_server import GrpcServer
from service.transports.headers import HttpPolicy
from service.transports.limits import BodySizeLimit
from service.transports.observe import RequestObserver

logger = logging.getLogger("service")

DESCRIPTION = """
Classifies Fashion-MNIST-style images with convolutional networks exported as SavedModels, and
shows how: per-layer architecture summaries, feature maps, and explanations (Grad-CAM, saliency,
occlusion). A web page over this API is at `/`.

Three APIs share one batched inference path:
- **native** (`/api/v1`): multipart uploads, raw images, base64 or tensor JSON; top-k with class names;
  feature maps as arrays or PNG grids; explanations as arrays or heatmap overlays; layer summaries;
- **TensorFlow Serving REST** (`/v1/models/...`), and KServe v1's `:explain`;
- **Open Inference Protocol v2** (`/v2/...`, KServe/Triton), including binary tensors and the model
  repository extension (index, load, unload).

New model versions go live while requests flow: the repository is polled, each model's version policy
picks its versions, and version labels (`/labels/{label}`) work wherever a version number does. The
model config file may split a model's default route over versions (sticky with `X-Routing-Key`) and name a
shadow version that also runs a share of it; every answer names its version (`X-Model-Version`).

Errors are JSON `{"error": "..."}` with a 4xx status for anything wrong with the request.
"""


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    host = ModelHost(settings, metrics)
    pipeline = InferencePipeline(host.table, settings, metrics, host.executor)
    plane = DataPlane(settings, metrics, host.table, pipeline, host.reconciler)
    grpc_server = GrpcServer(plane) if settings.grpc_port else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tracing.start()
        await host.start()
        try:
            if grpc_server is not None:
                await grpc_server.start()
            logger.info("ready: REST http://%s:%d, gRPC %s", _bracketed(settings.host), settings.port,
                        f"{_bracketed(settings.host)}:{grpc_server.port}" if grpc_server else "off")  # fmt: skip
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_timeout_s)
            await pipeline.shadows.stop()
            await host.stop()
            await asyncio.to_thread(pipeline.payloads.stop)
            await asyncio.to_thread(tracing.stop)

    # /docs with Swagger UI's script, style and icon served from the package, not a CDN. No ReDoc: its
    # bundle still fetches a logo from its vendor's site.
    app = FastAPIOffline(
        title="CNN model server", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        static_url="/docs-assets", redoc_url=None,
        # The service traces and meters its requests itself (RequestObserver); FastAPI's own telemetry would
        # add a second server span under a global OpenTelemetry provider, and checks for one on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )  # fmt: skip
    app.state.plane = plane
    app.state.host = host
    app.state.grpc = grpc_server
    install_error_handlers(app)
    # The hot paths, matched first: ahead of the docs routes FastAPI made above, too (the router tries its
    # routes in turn, and each try costs a regular expression match on every request).
    built_in = app.router.routes[:]
    app.router.routes.clear()
    rest_tfserving.add_predict_routes(app.router, responses=ERROR_RESPONSES)
    rest_v2.add_infer_routes(app.router, responses=ERROR_RESPONSES)
    rest_native.add_predict_routes(app.router, responses=ERROR_RESPONSES)
    app.router.routes.extend(built_in)
    app.include_router(rest_health.router)
    for router in (rest_native.router, rest_tfserving.router, rest_v2.router, rest_repository.router):
        app.include_router(router, responses=ERROR_RESPONSES)
    add_explorer(app)
    # Middlewares, innermost first.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpPolicy, allowed_hosts=settings.allowed_hosts if settings.checks_host else None)
    app.add_middleware(
        RequestObserver, metrics=metrics, known_models=lambda: host.table.names,
        access_log=logs.AccessLog() if settings.writes_access_log else None,
        records=logs.records_wanted(settings),
    )  # fmt: skip
    return app
