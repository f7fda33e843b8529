"""The OTLP span encoder against the OTLP exporters' own, and the two exporters using it against real
receivers on 127.0.0.1 (OTLP/HTTP and OTLP/gRPC, decoded with ``opentelemetry-proto``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as reference_encode
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from service.core import otlp
from tests.receivers import TraceReceiver

Request = trace_service_pb2.ExportTraceServiceRequest


def finished_spans() -> list[ReadableSpan]:
    """Spans of every shape the encoder must handle, from two resources and three scopes, made by the SDK."""
    memory = InMemorySpanExporter()
    providers = [
        TracerProvider(resource=Resource.create({"service.name": "one", "host.cores": 2, "ratio": 0.5})),
        TracerProvider(resource=Resource({"service.name": "two"}, schema_url="https://example.com/resource")),
    ]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(memory))
    first = providers[0].get_tracer("cnn-serving", "1.2.3", schema_url="https://example.com/scope",
                                    attributes={"scope.kind": "server"})  # fmt: skip
    bare = providers[0].get_tracer("bare")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1"), ("other", "y")]))  # fmt: skip
    attributes = {
        "text": "fashion_cnn:1", "empty": "", "yes": True, "no": False, "zero": 0, "negative": -7,
        "big": 2**62, "pi": 3.25, "names": ("a", "b"), "counts": (1, -2, 3), "flags": (True, False),
        "unicode": "Grad-CAM · 93 %",
    }  # fmt: skip
    with first.start_as_current_span("POST /v1/models/{name}:predict", context=None, kind=SpanKind.SERVER):
        pass
    server = first.start_span("POST", context=_parent(remote), kind=SpanKind.SERVER, attributes=attributes)
    server.add_event("queued", {"depth": 3, "model": "lenet5"})
    server.add_event("bare")
    child = first.start_span("inference", context=_parent(server.get_span_context()),
                             links=[Link(remote, {"why": "batch"}), Link(server.get_span_context())])  # fmt: skip
    child.set_status(Status(StatusCode.ERROR, "model lenet5 is overloaded; retry shortly"))
    child.end()
    server.set_status(Status(StatusCode.OK))
    server.end()
    for kind in SpanKind:
        bare.start_span(f"kind {kind.name}", kind=kind).end()
    providers[1].get_tracer("other").start_span("elsewhere", attributes={"too.big": 2**70}).end()
    return list(memory.get_finished_spans())


def _parent(context: SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(context))


@pytest.fixture(scope="module")
def spans() -> list[ReadableSpan]:
    return finished_spans()


def test_the_encoding_parses_to_what_the_reference_encoder_builds(spans) -> None:
    ours = Request.FromString(otlp.encode_spans(spans))
    assert ours == reference_encode(spans)
    assert len(ours.resource_spans) == 2 and sum(len(r.scope_spans) for r in ours.resource_spans) == 3
    server = next(s for r in ours.resource_spans for g in r.scope_spans for s in g.spans if s.name == "POST")
    assert server.trace_state == "vendor=x1,other=y" and server.flags == 0x300  # a remote parent
    assert [event.name for event in server.events] == ["queued", "bare"]


def test_values_seen_again_come_from_the_cache_unchanged(spans) -> None:
    first = otlp.encode_spans(spans)
    assert otlp._pairs  # the scalar attributes were kept encoded
    assert otlp.encode_spans(spans) == first
    otlp._pairs.clear()
    assert otlp.encode_spans(spans) == first


def test_an_attribute_otlp_cannot_carry_is_left_out_as_the_reference_does(spans, caplog) -> None:
    elsewhere = [span for span in spans if span.name == "elsewhere"]
    ours = Request.FromString(otlp.encode_spans(elsewhere))
    assert ours == reference_encode(elsewhere)
    assert list(ours.resource_spans[0].scope_spans[0].spans[0].attributes) == []
    assert "too.big" in caplog.text


def test_an_empty_export_is_an_empty_request() -> None:
    assert otlp.encode_spans([]) == b"" and Request.FromString(b"") == reference_encode([])


def test_the_http_exporter_posts_the_encoded_spans(spans) -> None:
    with TraceReceiver() as receiver:
        exporter = otlp.HttpSpanExporter(endpoint=f"{receiver.url}/v1/traces")
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        posted = receiver.snapshot()
        assert [post.headers["content-type"] for post in posted] == ["application/x-protobuf"]
        assert Request.FromString(posted[0].body) == reference_encode(spans)
        small = otlp.HttpSpanExporter(endpoint=f"{receiver.url}/v1/traces", max_request_size=100)
        assert small.export(spans) is SpanExportResult.FAILURE  # too large: dropped, not sent
        assert len(receiver.snapshot()) == 1
        exporter.shutdown()
        assert exporter.export(spans) is SpanExportResult.FAILURE


def test_a_batch_that_cannot_be_encoded_fails_alone(spans, caplog) -> None:
    broken = TracerProvider()
    memory = InMemorySpanExporter()
    broken.add_span_processor(SimpleSpanProcessor(memory))
    broken.get_tracer("t").start_span("half a surrogate \ud800").end()
    with TraceReceiver() as receiver:
        exporter = otlp.HttpSpanExporter(endpoint=f"{receiver.url}/v1/traces")
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
        assert receiver.snapshot() == [] and "cannot encode 1 spans" in caplog.text
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # the next batch goes out
        assert len(receiver.snapshot()) == 1


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def Export(self, request: Request, _: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    collector = _Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(grace=None)


def test_the_grpc_exporter_sends_the_encoded_spans(spans, collector) -> None:
    received, port = collector
    exporter = otlp.GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert received.requests == [reference_encode(spans)]
