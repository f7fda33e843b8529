"""The middleware that sees every HTTP request whole: Prometheus counts and latency by route template and
model, and, when they are on, the request's record and access line (:mod:`service.core.logs`) and its
server span (:mod:`service.core.tracing`), the child of the ``traceparent`` it came with."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import logs, tracing
from service.core.metrics import Metrics

REQUEST_ID = b"x-request-id"


class RequestObserver:
    """Labels never carry a raw path or an unknown model name, so a client cannot grow the label set. With
    the access log, the payload log and tracing all off, a request costs a timer and two metric updates
    here."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, known_models: Callable[[], Collection[str]],
        access_log: logs.AccessLog | None, records: bool,
    ) -> None:  # fmt: skip
        self.app = app
        self.metrics = metrics
        self.known_models = known_models
        self.access_log = access_log
        self.records = records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        record = span = None
        if self.records:
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            record = logs.open_record("http", scope["method"], headers.get)
            span = tracing.server_span(scope["method"], headers, {"http.request.method": scope["method"],
                                                                  "url.path": scope["path"]})  # fmt: skip
        request_id = record.request_id.encode() if record is not None else None

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if request_id is not None:
                    message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            name = scope.get("path_params", {}).get("name", "")
            model = name if name in self.known_models() else ("unknown" if name else "")
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], template, model, str(status), seconds)
            if record is not None:
                record.route, record.model = template, record.model or model
                if span is not None:
                    span[0].update_name(f"{scope['method']} {template}")
                if self.access_log is not None:
                    self.access_log.write(record, status, seconds)
                tracing.end_server_span(span, {"http.route": template, "http.response.status_code": status})
