"""Open Inference Protocol v2 (KServe / Triton) over REST: server and model metadata, readiness, infer.

``infer`` hands the body to the pipeline with the pure codec of :mod:`service.codecs.v2` (JSON and
the binary tensor data extension).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.codecs import v2
from service.core.errors import RETRY_AFTER
from service.core.wire import json_response
from service.protocol import v2 as views
from service.protocol.plane import DataPlane
from service.transports.dependencies import get_plane, require_api_key
from service.transports.routing import (
    body_reader,
    client_gone,
    direct_post_route,
    naming_version,
    request_target,
    version_ref,
    versioned_route,
)

TAGS = ["open-inference-protocol-v2"]
router = APIRouter(prefix="/v2", tags=TAGS, dependencies=[Depends(require_api_key)])


@router.get("", response_model=views.ServerMetadata, summary="Server metadata")
async def server_metadata() -> views.ServerMetadata:
    return views.server_metadata()


@versioned_route(router, "get", "/models/{name}", response_model=views.ModelMetadata, summary="Model metadata")
async def model_metadata(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> views.ModelMetadata:
    return views.model_metadata(plane.table, name, version_ref(version, label))


@versioned_route(
    router,
    "get",
    "/models/{name}/ready",
    response_model=views.ModelReady,
    summary="Model readiness",
    responses={503: {"model": views.ModelReady}},
)
async def model_ready(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    ready = views.model_ready(plane.table, name, version_ref(version, label))
    return json_response(ready.model_dump(), 200 if ready.ready else 503, None if ready.ready else RETRY_AFTER)


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline a pydantic schema's ``$defs``: its ``#/$defs/...`` references do not resolve inside OpenAPI."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_defs(v2.InferRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header (length in Inference-Header-Content-Length) followed by tensor bytes.",
            },
        },
    }
}


_ENCODE_INFER = naming_version(v2.encode_infer)


async def infer(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    header_length = request.headers.get(v2.HEADER_LENGTH)
    read = body_reader(request, partial(v2.bytes_to_parse, header_length=header_length))
    decode = partial(v2.decode_infer, header_length=header_length)
    target = request_target(request, name, version, label)
    pipeline = request.app.state.plane.pipeline
    return await pipeline.handle(target, read, decode, _ENCODE_INFER, client_gone(request))


def add_infer_routes(router: APIRouter, **kwargs: Any) -> None:
    """``POST /v2/models/{name}[/versions/{version}|/labels/{label}]/infer`` (:func:`direct_post_route`)."""
    direct_post_route(
        router, "/v2/models/{name}/infer", tags=TAGS, summary="Inference (v2)", openapi_extra=_INFER_DOC, **kwargs
    )(infer)
