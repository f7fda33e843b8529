"""Wire-format helpers every dialect shares: JSON in and out, base64.

All pure functions; bad input raises :class:`~service.core.errors.InvalidInput` with what was wrong.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from service.core.errors import InvalidInput


def parse_json(body: bytes) -> Any:
    """A request body as JSON; refuses an empty body, bad syntax, bad UTF-8 and NaN/Infinity."""
    if not body:
        raise InvalidInput("empty request body; expected JSON")
    try:
        return orjson.loads(body)
    # orjson.JSONDecodeError (a ValueError) covers bad syntax, bad UTF-8, deep nesting and integers
    # beyond 64 bits; RecursionError is kept for safety.
    except (ValueError, RecursionError) as exc:
        hint = " (NaN and Infinity are not JSON numbers)" if b"NaN" in body or b"Infinity" in body else ""
        raise InvalidInput(f"malformed JSON{hint}: {exc}") from None


def _array_to_list(value: Any) -> Any:
    """orjson's fallback for arrays it does not write natively (not C-contiguous)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(content: Any) -> bytes:
    """JSON bytes; numpy arrays are written straight from their buffers."""
    return orjson.dumps(content, default=_array_to_list, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer written with :func:`dumps`."""
    return Response(dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def b64decode(value: str, what: str = "image") -> bytes:
    """Strict base64 (no stray characters) of one value named ``what`` in error messages."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what}: invalid base64 ({exc})") from None
