"""FastAPI dependencies of the REST routes: the data plane, the access checks, and the query parameters
of explain requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from service.core.request import ExplainMethod, ExplainSpec
from service.protocol.access import check_api_key, check_model_control, check_same_site
from service.protocol.plane import DataPlane


async def get_plane(request: Request) -> DataPlane:
    return request.app.state.plane


async def require_api_key(request: Request) -> None:
    """When ``CNN_API_KEY`` is set, require ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

    A router dependency.
    """
    expected = request.app.state.plane.settings.api_key
    if expected:  # else nothing to check: the headers are not even parsed (this runs on every hot request)
        headers = request.headers
        check_api_key(expected, headers.getlist("x-api-key"), headers.getlist("authorization"))


async def require_model_control(request: Request) -> None:
    """Management calls (load, unload, labels) only when ``CNN_ALLOW_MODEL_CONTROL`` allows them, and
    never from another site."""
    check_model_control(request.app.state.plane.settings)
    headers = request.headers
    own = f"{request.url.scheme}://{headers.get('host', '')}"
    check_same_site(headers.get("content-type"), headers.get("origin"), own)


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
