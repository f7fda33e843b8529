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


def check_api_key(expected: str | None, x_api_key: str | None, authorization: str | None) -> None:
    """When a key is configured, accept ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    if not expected:
        return
    supplied = x_api_key
    if not supplied and authorization and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


async def require_api_key(request: Request) -> None:
    """The ``CNN_API_KEY`` check as a route dependency."""
    check_api_key(
        request.app.state.settings.api_key, request.headers.get("x-api-key"), request.headers.get("authorization")
    )
