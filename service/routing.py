"""Route registration shared by the API dialects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter


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
