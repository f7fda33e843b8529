"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` environment variables, off (and free) unless
an OTLP endpoint is set.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on;
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (the default) or ``grpc``; ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_PROPAGATORS`` and the batch processor's
``OTEL_BSP_*`` work as the SDK documents them. Spans leave through a batch processor, in its own thread.

Each request gets a server span (the route, with the W3C ``traceparent`` of its headers or gRPC metadata as
parent), and children for reading and decoding the body (``decode``), waiting for the model (``inference``:
admission, the queue and the model call) and encoding (``encode``). Each model call of the batcher is a span of its own,
with the batch size, padding and engine, linked to every request in it, and each request's wait links
back to it. With tracing off, :func:`tracer` is ``None`` and every helper here returns at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from service import __version__

logger = logging.getLogger(__name__)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_tracer: Tracer | None = None
_OFF: AbstractContextManager[None] = nullcontext()
ROOT = context.Context()  # no parent: a model call serves many requests, so it starts a trace of its own
_provider: TracerProvider | None = None
_fields: frozenset[str] = frozenset()  # the headers the propagators read (traceparent, tracestate, baggage)


class _Resource(Resource):
    """The SDK's resource with its hash computed once: the OTLP encoder groups every exported span by its
    resource, and the SDK's ``Resource.__hash__`` serializes all the attributes to JSON each time (a sixth
    of the export's CPU). A resource is immutable, so its hash never changes."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class TracingError(ValueError):
    """The ``OTEL_*`` settings cannot be used (the message says why)."""


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (an OTLP endpoint is set)."""
    return any(environ.get(name) for name in _ENDPOINTS)


def protocol(environ: Mapping[str, str] = os.environ) -> str:
    """The OTLP protocol the environment asks for; :class:`TracingError` for one this service cannot send."""
    for name in _PROTOCOLS:
        chosen = environ.get(name)
        if chosen and chosen not in ("http/protobuf", "grpc"):
            raise TracingError(f"{name} must be http/protobuf or grpc, not {chosen!r}")
        if chosen:
            return chosen
    return "http/protobuf"


def start(environ: Mapping[str, str] = os.environ) -> bool:
    """Set tracing up from the environment, once; returns whether it is on."""
    global _tracer, _provider, _fields
    if _tracer is not None or not wanted(environ):
        return _tracer is not None
    chosen = protocol(environ)
    if chosen == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    resource = _Resource(Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or "cnn-serving"}))
    _provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("cnn-serving", __version__)
    _fields = frozenset(propagate.get_global_textmap().fields)
    endpoint = next(environ[name] for name in _ENDPOINTS if environ.get(name))
    sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    logger.info("tracing on: OTLP %s to %s, sampler %s", chosen, endpoint, sampler)
    return True


def stop() -> None:
    """Send the spans still buffered and stop (the app's shutdown)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def tracer() -> Tracer | None:
    """The service's tracer, or ``None`` when tracing is off."""
    return _tracer


def server_span(name: str, carrier: Mapping[str, str], attributes: dict[str, Any]) -> tuple[Span, object] | None:
    """Start a request's server span, the child of the ``traceparent`` in ``carrier`` (headers or gRPC
    metadata), and make it current; ``None`` when tracing is off. End it with :func:`end_server_span`."""
    if _tracer is None:
        return None
    parent = propagate.extract(carrier) if not _fields.isdisjoint(carrier) else ROOT
    span = _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    return span, context.attach(trace.set_span_in_context(span))


def end_server_span(started: tuple[Span, object] | None, attributes: dict[str, Any]) -> None:
    if started is None:
        return
    span, token = started
    span.set_attributes(attributes)
    span.end()
    context.detach(token)


def step(name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Span | None]:
    """A child span of the current one around one step of a request (not made current: nothing under a
    step starts a span of its own); a shared no-op when tracing is off."""
    if _tracer is None:
        return _OFF
    return _Step(_tracer.start_span(name, attributes=attributes))


class _Step:
    """Ends its span on exit; cheaper than the SDK's ``start_as_current_span``, which also swaps the
    current context in and out."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, *_: object) -> None:
        self.span.end()


def end_failed(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))
    span.end()


def failed(message: str) -> None:
    """Mark the current request's span as failed, with the message its client got."""
    if _tracer is not None:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message))


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids as hex (for the access log), or ``None``."""
    if _tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    return (format(found.trace_id, "032x"), format(found.span_id, "016x")) if found.is_valid else None
