"""Request-scoped access to the app's shared objects, the optional API-key check, and the query
parameters of explain requests."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Query, Request

from service.errors import Forbidden, Unauthorized
from service.pipeline import InferencePipeline
from service.request import ExplainMethod, ExplainSpec
from service.runtime import Runtime
from service.settings import Settings


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_pipeline(request: Request) -> InferencePipeline:
    return request.app.state.pipeline


async def require_api_key(request: Request) -> None:
    """When ``CNN_API_KEY`` is set, require ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

    A router dependency. A repeated header counts by its first value.
    """
    check_api_key(
        request.app.state.settings.api_key, request.headers.get("x-api-key"), request.headers.get("authorization")
    )


def check_api_key(expected: str | None, x_api_key: str | None, authorization: str | None) -> None:
    """401 unless no key is set, or ``X-API-Key`` or ``Authorization: Bearer`` carries it (HTTP and gRPC)."""
    if not expected:
        return
    supplied = x_api_key
    if not supplied and authorization and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


async def require_model_control(request: Request) -> None:
    """Management calls (load, unload, labels) only when ``CNN_ALLOW_MODEL_CONTROL`` allows them."""
    check_model_control(request.app.state.settings)


def check_model_control(settings: Settings) -> None:
    """403 unless model control is allowed (HTTP and gRPC)."""
    if not settings.model_control_allowed:
        raise Forbidden(
            "model control is turned off: set CNN_ALLOW_MODEL_CONTROL=true (and CNN_API_KEY when the server "
            "is reachable from other hosts)"
        )


async def explain_spec(
    method: Annotated[ExplainMethod, Query(description="gradcam, saliency (input gradient × input) or occlusion.")] = (
        ExplainMethod.gradcam
    ),
    layer: Annotated[
        str | None, Query(description="Grad-CAM's convolutional layer; default: the last one larger than 1×1.")
    ] = None,
    target: Annotated[int | None, Query(ge=0, description="Class id to explain; default: the top-1.")] = None,
    patch_size: Annotated[int, Query(ge=1, description="Occlusion: side of the square set to 0.")] = 4,
    stride: Annotated[int, Query(ge=1, description="Occlusion: step between squares (≤ patch_size).")] = 2,
) -> ExplainSpec:
    """What to explain, from the query string (native ``explain`` and KServe v1 ``:explain``)."""
    return ExplainSpec(method=method, layer=layer, target=target, patch_size=patch_size, stride=stride)
