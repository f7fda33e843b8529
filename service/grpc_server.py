"""The gRPC server: KServe v2's ``GRPCInferenceService``, TF Serving's ``PredictionService`` and
``ModelService``, gRPC health checking and server reflection, on ``CNN_GRPC_PORT``.

It runs in the HTTP app's process and event loop (``grpc.aio``), beside uvicorn, and serves through
the same :class:`~service.pipeline.InferencePipeline`: the same batchers, limits and model versions.
Every RPC goes through :meth:`RpcContext.call`, which checks the API key (``x-api-key`` or
``authorization: Bearer`` metadata), honours the client's deadline, maps service errors to gRPC
status codes (:func:`status_code`) and counts the call in the metrics as ``method="GRPC"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service.dependencies import check_api_key
from service.errors import ModelNotReady, Overloaded, ServiceError
from service.metrics import Metrics
from service.pipeline import InferencePipeline
from service.runtime import Runtime
from service.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_HEALTH_REFRESH_S = 1.0
_MIN_SEND_BYTES = 64 * 1024 * 1024  # feature maps of several images are larger than any request


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC twin of a service error's HTTP status: overload is RESOURCE_EXHAUSTED, a model that is not
    ready UNAVAILABLE, every validation error INVALID_ARGUMENT."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, ModelNotReady):
        return grpc.StatusCode.UNAVAILABLE
    return _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


class RpcContext:
    """What every servicer needs: the runtime, the pipeline, and :meth:`call`."""

    def __init__(self, settings: Settings, runtime: Runtime, pipeline: InferencePipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.pipeline = pipeline
        self.metrics = metrics

    async def call(
        self, context: grpc.aio.ServicerContext, route: str, model: str, work: Callable[[], Awaitable[T]]
    ) -> T:
        """Run one RPC's ``work``: API key, deadline, errors → status codes, metrics."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
            check_api_key(self.settings.api_key, metadata.get("x-api-key"), metadata.get("authorization"))
            async with asyncio.timeout(context.time_remaining()):
                return await work()
        except ServiceError as exc:
            code = status_code(exc)
            await context.abort(code, exc.message)
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, "the call's deadline passed before inference finished")
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("unhandled error in gRPC %s", route)
            await context.abort(code, "internal error")
        finally:
            known = model if model in self.runtime.model_names else ("unknown" if model else "")
            self.metrics.requests.labels("GRPC", route, known, code.name).inc()
            self.metrics.latency.labels("GRPC", route, known).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")


class GrpcServer:
    """The gRPC half of the service; :meth:`start` after the runtime, :meth:`stop` before it."""

    def __init__(self, settings: Settings, runtime: Runtime, pipeline: InferencePipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.context = RpcContext(settings, runtime, pipeline, metrics)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._services: list[str] = []
        self._health_task: asyncio.Task | None = None

    async def start(self) -> None:
        # Imported here: TF Serving's messages import TensorFlow, which the app factory does not.
        from service import api_grpc_tfserving, api_grpc_v2

        limit = self.settings.max_request_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", max(limit, _MIN_SEND_BYTES)),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ]
        )
        self._services = api_grpc_v2.add_to(server, self.context) + api_grpc_tfserving.add_to(server, self.context)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [*self._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        host = self.settings.host
        address = f"[{host}]:{self.settings.grpc_port}" if ":" in host else f"{host}:{self.settings.grpc_port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address} (is the port in use?)") from exc
        await server.start()
        self._server = server
        await self._refresh_health()
        self._health_task = asyncio.get_running_loop().create_task(self._watch_health(), name="grpc-health")
        logger.info("gRPC listening on %s:%d (%s)", self.settings.host, self.port, ", ".join(self._services))

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, and give calls in flight ``grace_s`` to finish."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        logger.info("gRPC stopped")

    async def _refresh_health(self) -> None:
        ready, _ = self.context.runtime.readiness()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._services):
            await self._health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(_HEALTH_REFRESH_S)
            await self._refresh_health()
