"""Who may call what, the same over HTTP and gRPC: the optional API key, and model control."""

from __future__ import annotations

import secrets

from service.core.errors import Forbidden, Unauthorized
from service.core.settings import Settings


def check_api_key(expected: str | None, x_api_key: str | None, authorization: str | None) -> None:
    """401 unless no key is set, or ``X-API-Key`` or ``Authorization: Bearer`` carries it."""
    if not expected:
        return
    supplied = x_api_key
    if not supplied and authorization and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


def check_model_control(settings: Settings) -> None:
    """403 unless model control (load, unload, labels) is allowed."""
    if not settings.model_control_allowed:
        raise Forbidden(
            "model control is turned off: set CNN_ALLOW_MODEL_CONTROL=true (and CNN_API_KEY when the server "
            "is reachable from other hosts)"
        )
