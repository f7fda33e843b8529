"""Route registration shared by the REST dialects, what they hand the pipeline (the target, the body
reader, encoders that name the answering version), and the direct route class of the hot path."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.core.request import InferenceResult, Operation, Target, version_number
from service.inference.pipeline import Gone, Reader
from service.transports.dependencies import require_api_key


def versioned_route(router: APIRouter, method: str, path: str, **kwargs: Any) -> Callable:
    """Register one handler at ``path`` (the default version) and at its ``/versions/{version}`` and
    ``/labels/{label}`` twins.

    ``path`` holds ``/models/{name}``; the handler takes ``version: ... | None = None`` and
    ``label: str | None = None`` (:func:`version_ref` turns them into the one to look up). ``method``
    names the router's decorator (``get``, ``post``) or ``add_api_route``.
    """

    def register(handler: Callable) -> Callable:
        twins = ("/models/{name}/versions/{version}", "/models/{name}/labels/{label}")
        for route_path in (path, *(path.replace("/models/{name}", twin, 1) for twin in twins)):
            if method == "add_api_route":
                router.add_api_route(route_path, handler, **kwargs)
            else:
                getattr(router, method)(route_path, **kwargs)(handler)
        return handler

    return register


def direct_post_route(router: APIRouter, path: str, **kwargs: Any) -> Callable:
    """Register a hot path: ``POST path`` and its version and label twins (:func:`versioned_route`) as
    :class:`DirectRoute` routes of ``router``, behind the API key. The app puts them on its own router,
    ahead of the included ones, so they are matched first and without the included-router indirection."""
    return versioned_route(
        router, "add_api_route", path, methods=["POST"], route_class_override=DirectRoute,
        dependencies=[Depends(require_api_key)], **kwargs,
    )  # fmt: skip


def version_ref(version: str | None, label: str | None) -> int | str | None:
    """What to look up from a route's path: a version number, a label (a string), or ``None`` for the
    default version; 400 when a version is not ASCII digits."""
    if label is not None:
        return label
    return None if version is None else version_number(version)


ROUTING_KEY = "x-routing-key"
MODEL_VERSION = "x-model-version"
_MODEL_VERSION_BYTES = MODEL_VERSION.encode()


def request_target(
    request: Request, name: str, version: str | None, label: str | None, operation: Operation = Operation.classify
) -> Target:
    """The model version a REST request is for (:func:`version_ref`), with its ``X-Routing-Key``: a traffic
    split sends the same key to the same version."""
    return Target(name, version_ref(version, label), operation, request.headers.get(ROUTING_KEY))


def naming_version(encode: Callable[[InferenceResult], Response]) -> Callable[[InferenceResult], Response]:
    """``encode``, its answer carrying the version that produced it in an ``X-Model-Version`` header."""

    def encode_naming_version(result: InferenceResult) -> Response:
        response = encode(result)
        # Appended as is: no encoder sets it, and a lookup through ``response.headers`` costs more.
        response.raw_headers.append((_MODEL_VERSION_BYTES, str(result.model_version).encode()))
        return response

    return encode_naming_version


def body_reader(request: Request, to_parse: Callable[[bytes], int] = len) -> Reader[bytes]:
    """How the pipeline reads a request's body, after admitting it; ``to_parse`` tells how many of its
    bytes decoding parses (all of them unless a binary part is taken as it is)."""

    async def read() -> tuple[bytes, int]:
        body = await request.body()
        return body, to_parse(body)

    return read


def client_gone(request: Request) -> Gone:
    """What returns when the client has closed its connection (after the body has been read)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


class DirectRoute(APIRoute):
    """An API route whose endpoint is called as ``endpoint(request, **path_params, **query_params)``,
    nothing in between.

    FastAPI's per-request dependency solving, body handling and dependency exit stacks cost about as
    much CPU as a small request's whole inference path; a direct endpoint reads its body itself and
    returns a :class:`~starlette.responses.Response`. Its query parameters (declared in its signature as
    for any route) are validated by FastAPI's own parameter validation, only when a query string is
    there (else the signature's defaults apply), and a bad one raises the same
    :class:`~fastapi.exceptions.RequestValidationError`. Everything else stays the framework's: routing,
    ``path_params``, ``scope["route"]`` (metrics labels), the app's exception handlers (an exception
    propagates to the app's exception middleware, which renders it as for any route), and the OpenAPI
    entry, built from the endpoint's signature and ``openapi_extra`` as for any route. The route's
    dependencies (e.g. its router's) run first and must take only the :class:`~fastapi.Request`.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._handler = self.get_route_handler()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            await super().handle(scope, receive, send)  # the framework's 405
            return
        response = await self._handler(Request(scope, receive, send))
        await response(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        guards = [depends.dependency for depends in self.dependencies if depends.dependency is not None]
        query_fields = self.dependant.query_params

        async def handle(request: Request) -> Response:
            for guard in guards:
                await guard(request)
            query: dict[str, Any] = {}
            if query_fields and request.scope["query_string"]:
                query, errors = request_params_to_args(query_fields, request.query_params)
                if errors:
                    raise RequestValidationError(errors)
            return await endpoint(request, **request.path_params, **query)

        return handle
