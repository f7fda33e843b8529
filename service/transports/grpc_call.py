"""How every RPC runs: :meth:`RpcContext.call` checks the API key (``x-api-key`` or ``authorization:
Bearer`` metadata), honours the client's deadline, maps service errors to gRPC status codes
(:func:`status_code`) and counts the call in the metrics as ``method="GRPC"``; :func:`message_reader`
hands a request message to the pipeline as REST routes hand it a body."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from service.core import logs, tracing
from service.core.errors import ModelNotReady, Overloaded, ServiceError, Unimplemented
from service.inference.pipeline import Reader
from service.protocol.access import check_api_key
from service.protocol.plane import DataPlane

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC twin of a service error's HTTP status: overload is RESOURCE_EXHAUSTED, a model that is not
    ready UNAVAILABLE, every validation error INVALID_ARGUMENT."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, ModelNotReady):
        return grpc.StatusCode.UNAVAILABLE
    return _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


class RpcContext:
    """What every servicer needs: the data plane, and :meth:`call` around each RPC's work."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        settings = plane.settings
        self.access_log = logs.AccessLog() if settings.writes_access_log else None
        self.records = logs.records_wanted(settings)

    async def call(
        self, context: grpc.aio.ServicerContext, route: str, model: str, work: Callable[[], Awaitable[T]]
    ) -> T:
        """Run one RPC's ``work``: API key, deadline, errors → status codes, metrics; and when they are on,
        the access line and the server span (the child of the call's ``traceparent`` metadata)."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        metadata = context.invocation_metadata() or ()
        record = span = None
        if self.records:
            found = {key: value for key, value in metadata if isinstance(value, str)}
            record = logs.open_record("grpc", "POST", found.get)
            record.route = route
            span = tracing.server_span(route, found, {"rpc.system": "grpc", "rpc.method": route})
        try:
            api_key = self.plane.settings.api_key
            if api_key:  # the lists below only then
                check_api_key(
                    api_key,
                    [value for key, value in metadata if key == "x-api-key" and isinstance(value, str)],
                    [value for key, value in metadata if key == "authorization" and isinstance(value, str)],
                )
            async with asyncio.timeout(context.time_remaining()):
                return await work()
        except ServiceError as exc:
            code = status_code(exc)
            await self._abort(context, code, exc.message)
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await self._abort(context, code, "the call's deadline passed before inference finished")
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("unhandled error in gRPC %s", route)
            await self._abort(context, code, "internal error")
        finally:
            known = model if model in self.plane.table.names else ("unknown" if model else "")
            seconds = time.perf_counter() - started
            self.plane.metrics.observe_request("GRPC", route, known, code.name, seconds)
            if record is not None:
                record.model = record.model or known
                if self.access_log is not None:
                    self.access_log.write(record, code.name, seconds)
                tracing.end_server_span(span, {"rpc.grpc.status_code": code.value[0]})
        raise AssertionError("unreachable: context.abort raises")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        tracing.failed(message)
        await context.abort(code, message)


def answer_unimplemented(servicer: object, base: type, service: ServiceDescriptor, rpc: RpcContext) -> None:
    """The service's RPCs that ``servicer`` does not implement answer UNIMPLEMENTED through
    :meth:`RpcContext.call` (API key checked, counted, no traceback), not through the generated base
    class, which raises. Call before the servicer is registered."""
    for method in service.methods:
        if getattr(type(servicer), method.name) is getattr(base, method.name):
            setattr(servicer, method.name, _unimplemented(rpc, f"/{service.full_name}/{method.name}"))


def _unimplemented(rpc: RpcContext, route: str) -> Callable[..., Awaitable[None]]:
    async def answer(_request: object, context: grpc.aio.ServicerContext) -> None:
        async def work() -> None:
            raise Unimplemented(f"{route} is not implemented by this server")

        await rpc.call(context, route, "", work)

    return answer


ROUTING_KEY = "x-routing-key"


def routing_key(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``x-routing-key`` metadata: a traffic split sends the same key to the same version."""
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY and isinstance(value, str):
            return value
    return None


def message_reader(message: M, to_parse: Callable[[M], int]) -> Reader[M]:
    """The pipeline's reader of an already received (and parsed) message; ``to_parse`` tells how many bytes
    its decoding parses (nothing for raw contents: a message of raw FP32 images is decoded on the event
    loop, without a hop to a worker thread)."""

    async def read() -> tuple[M, int]:
        return message, to_parse(message)

    return read
