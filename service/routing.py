"""Route registration shared by the API dialects, and the direct route class of the hot path."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response


def versioned_route(router: APIRouter, method: str, path: str, **kwargs: Any) -> Callable:
    """Register one handler at ``path`` (the default version) and at its ``/versions/{version}`` twin.

    ``path`` starts with ``/models/{name}``; the handler takes ``version: ... | None = None``.
    """

    def register(handler: Callable) -> Callable:
        versioned = path.replace("/models/{name}", "/models/{name}/versions/{version}", 1)
        decorate = getattr(router, method)
        decorate(versioned, **kwargs)(handler)
        decorate(path, **kwargs)(handler)
        return handler

    return register


class DirectRoute(APIRoute):
    """An API route whose endpoint is called as ``endpoint(request, **path_params)``, nothing in between.

    FastAPI's per-request dependency solving and parameter validation cost about as much CPU as a small
    request's whole inference path; a direct endpoint reads its body itself and returns a
    :class:`~starlette.responses.Response`. Everything else stays FastAPI's: routing, ``path_params``,
    ``scope["route"]`` (metrics labels), exception handlers, and the OpenAPI entry, which is built from
    the endpoint's signature and ``openapi_extra`` as for any route. The route's dependencies (e.g. its
    router's) run first and must take only the :class:`~fastapi.Request`.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        guards = [depends.dependency for depends in self.dependencies if depends.dependency is not None]

        async def handle(request: Request) -> Response:
            for guard in guards:
                await guard(request)
            return await endpoint(request, **request.path_params)

        return handle
