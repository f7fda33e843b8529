"""Typed service errors and the one table that maps them to HTTP status codes.

Every dialect renders errors as ``{"error": "<message>"}`` (the TF Serving and v2 convention), so a
client of any API gets a JSON body naming the problem.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core import tracing

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: ``status_code``, the response ``headers`` the status calls for, and a message safe to
    show to the client."""

    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


RETRY_AFTER = {"Retry-After": "1"}  # seconds: what every 503 says


class InvalidInput(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": 'Bearer realm="cnn-serving"'}


class NotFound(ServiceError):
    """Unknown model, version or layer."""

    status_code = 404


class Forbidden(ServiceError):
    """A management call while model control is turned off."""

    status_code = 403


class ModelLoadFailed(ServiceError):
    """An explicit load found no version that loads (400, as the repository extension answers)."""

    status_code = 400


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class ModelNotReady(ServiceError):
    """The version is loading, unloading or failed; the client should retry after ``Retry-After`` seconds."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = RETRY_AFTER


class Overloaded(ServiceError):
    """The model's queue is full; the client should retry after ``Retry-After`` seconds."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = RETRY_AFTER


class InferenceTimeout(ServiceError):
    status_code = 504


class ClientGone(ServiceError):
    """The client closed its connection before the answer (nginx's 499; nobody reads the body)."""

    status_code = 499


class InferenceFailed(ServiceError):
    status_code = 500


class Unimplemented(ServiceError):
    """A call of a protocol this server does not implement (gRPC UNIMPLEMENTED)."""

    status_code = 501


class ErrorBody(BaseModel):
    error: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorBody,
        "description": "Invalid request: bad input (400, 422), missing API key (401), model control turned off "
        "(403), unknown model, version, label or layer (404), too large (413), unsupported media type (415)",
    },
    503: {"model": ErrorBody, "description": "Model not ready, or overloaded (retry after `Retry-After` seconds)"},
    504: {"model": ErrorBody, "description": "Inference timed out"},
}


def describe_validation(exc: ValidationError | RequestValidationError, whole: str = "body") -> str:
    """A validation error as one line: ``where: what`` per problem (``whole`` names the top level)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ())) or whole}: {error.get('msg', '')}"
        for error in exc.errors()
    )


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer; the request's span (tracing on) fails with the same message."""
    tracing.failed(message)
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render service errors, framework errors and anything unexpected as JSON ``{"error": ...}``."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, f"invalid request: {describe_validation(exc)}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (logged)")
