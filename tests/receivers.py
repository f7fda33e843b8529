"""Receivers the observability tests start on 127.0.0.1: an OTLP/HTTP trace receiver that decodes each export
with ``opentelemetry-proto``, and a CloudEvents sink that keeps each event's headers and body."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str


class Receiver:
    """An HTTP server that answers every POST with 200 and keeps it (``.posted``)."""

    def __init__(self, answer: bytes = b"", content_type: str = "application/json") -> None:
        self.posted: list[Posted] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real sink

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer._lock:
                    outer.posted.append(Posted(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Posted]:
        with self._lock:
            return list(self.posted)


class TraceReceiver(Receiver):
    """OTLP/HTTP (``POST /v1/traces``, protobuf): every span exported so far, decoded."""

    def __init__(self) -> None:
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        super().__init__(answer, "application/x-protobuf")

    def spans(self) -> list[Span]:
        found = []
        for posted in self.snapshot():
            assert posted.path == "/v1/traces", posted.path
            export = trace_service_pb2.ExportTraceServiceRequest.FromString(posted.body)
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    found += [_span(span) for span in scope.spans]
        return found

    def service_names(self) -> set[str]:
        names = set()
        for posted in self.snapshot():
            export = trace_service_pb2.ExportTraceServiceRequest.FromString(posted.body)
            for resource in export.resource_spans:
                names |= {a.value.string_value for a in resource.resource.attributes if a.key == "service.name"}
        return names


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _span(span: Any) -> Span:
    return Span(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        name=span.name,
        attributes={a.key: _value(a.value) for a in span.attributes},
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        status_code=span.status.code,
        status_message=span.status.message,
    )


@dataclass
class Events:
    """The CloudEvents a sink received, by type."""

    requests: list[Posted] = field(default_factory=list)
    responses: list[Posted] = field(default_factory=list)

    @classmethod
    def of(cls, sink: Receiver) -> Events:
        events = cls()
        for posted in sink.snapshot():
            kind = posted.headers.get("ce-type", "")
            (events.requests if kind.endswith(".request") else events.responses).append(posted)
        return events
