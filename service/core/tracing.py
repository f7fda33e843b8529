"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` environment variables, off (and free) unless
an OTLP endpoint is set.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on;
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (the default) or ``grpc``; ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_PROPAGATORS`` and the batch processor's
``OTEL_BSP_*`` work as the SDK documents them. Spans leave through a batch processor, in its own thread,
and the SDK's OTLP exporters with a faster encoder (:mod:`service.core.otlp`).

Each request gets a server span (the route, with the W3C ``traceparent`` of its headers or gRPC metadata as
parent), and children for reading and decoding the body (``decode``), waiting for the model (``inference``:
admission, the queue and the model call) and encoding (``encode``). Each model call of the batcher is a span of its own,
with the batch size, padding and engine, linked to every request in it, and each request's wait links
back to it. With tracing off, :func:`tracer` is ``None`` and every helper here returns at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer

from service import __version__
from service.core import otlp

logger = logging.getLogger(__name__)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_tracer: Tracer | None = None
_OFF: AbstractContextManager[None] = nullcontext()
ROOT = context.Context()  # no parent: a model call serves many requests, so it starts a trace of its own
_provider: TracerProvider | None = None
_processor: BatchSpanProcessor | None = None
_ids: IdGenerator = RandomIdGenerator()
_SCOPE = InstrumentationScope("cnn-serving", __version__)  # what the tracer's spans carry too
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
    global _tracer, _provider, _processor, _ids, _fields
    if _tracer is not None or not wanted(environ):
        return _tracer is not None
    chosen = protocol(environ)
    exporter = otlp.GrpcSpanExporter() if chosen == "grpc" else otlp.HttpSpanExporter()
    resource = _Resource(Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or "cnn-serving"}))
    _provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    _processor, _ids = BatchSpanProcessor(exporter), _provider.id_generator
    _provider.add_span_processor(_processor)
    _tracer = _provider.get_tracer(_SCOPE.name, _SCOPE.version)
    _fields = frozenset(propagate.get_global_textmap().fields)
    endpoint = next(environ[name] for name in _ENDPOINTS if environ.get(name))
    sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    logger.info("tracing on: OTLP %s to %s, sampler %s", chosen, endpoint, sampler)
    return True


def stop() -> None:
    """Send the spans still buffered and stop (the app's shutdown)."""
    global _tracer, _provider, _processor
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = _processor = None


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


def step(name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Step | None]:
    """A child span of the current one around one step of a request; a shared no-op when tracing is off or
    the request is not sampled."""
    if _tracer is None:
        return _OFF
    parent = trace.get_current_span().get_span_context()
    if not parent.trace_flags.sampled:  # no request span, or one its sampler dropped
        return _OFF
    return Step(name, parent, attributes)


class Step:
    """A request's step, recorded as a finished span straight into the SDK's batch processor.

    A step is never current (nothing under it starts a span), follows its request's sampling, and knows its
    attributes when it starts, so the SDK's per-span bookkeeping (locks, attribute limits, the sampler, the
    span processors' start and end hooks) has nothing to do for it: 7–15 µs a step against 45–53 µs for the
    SDK's ``start_span`` and ``end`` (2-core AMD EPYC).
    """

    __slots__ = ("attributes", "context", "links", "name", "parent", "started")

    def __init__(self, name: str, parent: SpanContext, attributes: dict[str, Any] | None) -> None:
        self.name, self.parent, self.attributes = name, parent, attributes
        span_id = _ids.generate_span_id()
        self.context = SpanContext(parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state)
        self.links: list[Link] = []
        self.started = 0

    def __enter__(self) -> Step:
        self.started = time.time_ns()
        return self

    def get_span_context(self) -> SpanContext:
        return self.context

    def add_link(self, context: SpanContext) -> None:
        self.links.append(Link(context))

    def __exit__(self, *_: object) -> None:
        if _provider is None or _processor is None:  # tracing stopped meanwhile
            return
        _processor.on_end(ReadableSpan(
            self.name, self.context, self.parent, _provider.resource, self.attributes, links=tuple(self.links),
            start_time=self.started, end_time=time.time_ns(), instrumentation_scope=_SCOPE,
        ))  # fmt: skip


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
