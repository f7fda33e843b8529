"""Who may call what, the same over HTTP and gRPC: the optional API key, and model control."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from service.core.errors import Forbidden, Unauthorized, UnsupportedMediaType
from service.core.settings import Settings


def check_api_key(expected: str | None, x_api_keys: Sequence[str], authorizations: Sequence[str]) -> None:
    """401 unless no key is set, or ``X-API-Key`` or ``Authorization: Bearer`` carries it (each header
    once: a repeated one is refused, over HTTP and gRPC alike)."""
    if not expected:
        return
    if len(x_api_keys) > 1 or len(authorizations) > 1:
        raise Unauthorized("send the API key once (X-API-Key or Authorization: Bearer), not repeated")
    supplied = x_api_keys[0] if x_api_keys else None
    authorization = authorizations[0] if authorizations else None
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


def check_same_site(content_type: str | None, origin: str | None, own_origin: str) -> None:
    """Model control is not reachable cross-site. A browser sends a "simple" cross-site request (a form's
    content type, no preflight) to any address: control calls take JSON or no content type (stock
    clients send none), and a request from another origin (browsers always name it on a cross-site
    POST, PUT or DELETE) is refused."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in ("application/json", ""):
        raise UnsupportedMediaType(f"model control calls take application/json, not {media!r}")
    if origin is not None and origin.lower() != own_origin.lower():
        raise Forbidden(f"model control from another origin ({origin[:100]}) is refused")
