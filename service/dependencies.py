"""Request-scoped access to the app's shared objects, and the optional API-key check."""

from __future__ import annotations

import secrets

from fastapi import Request

from service.errors import Unauthorized
from service.inference import Inference
from service.repository import ModelRepository


async def get_inference(request: Request) -> Inference:
    return request.app.state.inference


async def get_repository(request: Request) -> ModelRepository:
    return request.app.state.inference.repository


async def require_api_key(request: Request) -> None:
    """When ``CNN_API_KEY`` is set, accept ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    supplied = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization", "")
    if not supplied and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")
