"""Log lines, human (the default) or JSON (``CNN_LOG_FORMAT=json``), and the access log: one line per
request with its id, trace id, protocol, route, model, version, status, images and latency.

The transport that receives a request opens its :class:`RequestRecord` (:func:`open_record`); the
pipeline fills in the version that answered and the images it ran; the transport writes the line
(:meth:`AccessLog.write`) once the answer is sent. The record lives in a context variable, so each
request (an asyncio task) sees its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from service.core import tracing
from service.core.settings import Settings

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "service.access"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces, as a header value can be


@dataclass(slots=True)
class RequestRecord:
    """What one request's access line says; transports open it, the pipeline fills in the model's part."""

    request_id: str
    protocol: str  # "http" or "grpc"
    method: str
    route: str = ""
    model: str = ""
    version: int | None = None
    api: str | None = None  # native, tfserving or v2, once decoded
    images: int = 0
    trace_id: str | None = None


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("cnn_request", default=None)


def open_record(protocol: str, method: str, get: Callable[[str], str | None]) -> RequestRecord:
    """A request's record, current from now on in its task: its ``x-request-id`` (or a new one) and the
    trace id of its ``traceparent``, read with ``get`` (a header or metadata lookup)."""
    given = get("x-request-id")
    request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
    parent = _TRACEPARENT.match(get("traceparent") or "")
    record = RequestRecord(request_id, protocol, method, trace_id=parent.group(1) if parent else None)
    _CURRENT.set(record)
    return record


def records_wanted(settings: Settings) -> bool:
    """Whether requests get a record: the access log, the payload log or tracing needs it."""
    return settings.writes_access_log or settings.logger_url is not None or tracing.wanted()


def current() -> RequestRecord | None:
    """The record of the request this task serves, when the access log, payload log or tracing is on."""
    return _CURRENT.get()


class AccessLog:
    """Writes one INFO line per request to the ``service.access`` logger."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def write(self, record: RequestRecord, status: int | str, seconds: float) -> None:
        ids = tracing.current_ids()
        if ids is not None:
            record.trace_id = ids[0]
        fields = {**asdict(record), "status": status, "latency_ms": round(seconds * 1000, 3)}
        self.logger.info(
            "%s %s %s %s%s %s %.1f ms", record.request_id, record.protocol, record.method, record.route,
            f" {record.model}:{record.version}" if record.version is not None else "", status, seconds * 1000,
            extra={"access": fields},
        )  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger and message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if access is not None:
            line.update(access)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, log_format: str) -> None:
    """The root logger's level and format: ``human`` or ``json``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(HUMAN_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


@contextmanager
def native_stderr_logged(name: str) -> Iterator[None]:
    """What native code writes straight to the process's stderr meanwhile (C++ libraries that log as they
    load, whatever their log level setting: TensorFlow on a CPU where it turns oneDNN on) goes through the
    logger ``name`` at debug level instead, so that every line keeps the log's format; the log's own lines
    written meanwhile pass through as they are."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            logger = logging.getLogger(name)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.startswith("{"):  # a JSON log line of this process
                    sys.stderr.write(line + "\n")
                elif line.strip():
                    logger.debug("%s", line)
