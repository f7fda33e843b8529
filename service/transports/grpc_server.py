"""The gRPC server: KServe v2's ``GRPCInferenceService``, TF Serving's ``PredictionService`` and
``ModelService``, gRPC health checking and server reflection, on ``CNN_GRPC_PORT``.

It runs in the HTTP app's process and event loop (``grpc.aio``), beside uvicorn, and serves through
the same :class:`~service.inference.pipeline.InferencePipeline`: the same batchers, limits and model versions.
Every RPC goes through :meth:`~service.transports.grpc_call.RpcContext.call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service.protocol.plane import DataPlane
from service.transports import grpc_tfserving, grpc_v2
from service.transports.grpc_call import RpcContext

logger = logging.getLogger(__name__)

_HEALTH_REFRESH_S = 1.0
_MIN_SEND_BYTES = 64 * 1024 * 1024  # feature maps of several images are larger than any request


class GrpcServer:
    """The gRPC half of the service; :meth:`start` after the model host, :meth:`stop` before it."""

    def __init__(self, plane: DataPlane) -> None:
        self.settings = plane.settings
        self.context = RpcContext(plane)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._services: list[str] = []
        self._health_task: asyncio.Task | None = None
        self._stopping: asyncio.Future | None = None

    async def start(self) -> None:
        limit = self.settings.max_request_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", max(limit, _MIN_SEND_BYTES)),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ]
        )
        self._services = grpc_v2.add_to(server, self.context) + grpc_tfserving.add_to(server, self.context)
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
        logger.debug("gRPC listening on %s:%d (%s)", self.settings.host, self.port, ", ".join(self._services))

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, and give calls in flight ``grace_s`` to finish. The first
        call does it (at SIGTERM, while HTTP still drains); later ones wait for it."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
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
        ready, _ = self.context.plane.table.readiness()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._services):
            await self._health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(_HEALTH_REFRESH_S)
            await self._refresh_health()
