"""Request-scoped access to the app's shared objects, and the optional API-key check."""

from __future__ import annotations

import secrets

from fastapi import Request

from service.errors import Forbidden, Unauthorized
from service.pipeline import InferencePipeline
from service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_pipeline(request: Request) -> InferencePipeline:
    return request.app.state.pipeline


async def require_api_key(request: Request) -> None:
    """When ``CNN_API_KEY`` is set, require ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

    A router dependency. A repeated header counts by its first value.
    """
    expected = request.app.state.settings.api_key
    if not expected:
        return
    supplied = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization")
    if not supplied and authorization and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


async def require_model_control(request: Request) -> None:
    """Management calls (load, unload, labels) only when ``CNN_ALLOW_MODEL_CONTROL`` allows them."""
    if not request.app.state.settings.model_control_allowed:
        raise Forbidden(
            "model control is turned off: set CNN_ALLOW_MODEL_CONTROL=true (and CNN_API_KEY when the server "
            "is reachable from other hosts)"
        )
