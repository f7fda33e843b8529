"""Traces, payload logs and JSON access lines of a live ``python -m service``, against real receivers on
127.0.0.1: an OTLP/HTTP trace receiver (decoded with ``opentelemetry-proto``) and a CloudEvents sink."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.conftest import png_bytes
from tests.receivers import Events, Receiver, Span, TraceReceiver
from tests.reliability.load import metric_value
from tests.reliability.servers import ServerProcess, running_server

MODEL = "lenet5"
PREDICT = f"/v1/models/{MODEL}:predict"
IMAGE = np.zeros((1, 28, 28, 1), dtype=np.float32).tolist()


@pytest.fixture(scope="module")
def traces() -> Iterator[TraceReceiver]:
    with TraceReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def sink() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def server(
    bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory, traces: TraceReceiver, sink: Receiver
) -> Iterator[ServerProcess]:
    env = {
        "CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": "fashion_cnn,lenet5", "CNN_LOG_FORMAT": "json",
        "CNN_LOGGER_URL": sink.url, "CNN_LOGGER_MODE": "all",
        "OTEL_EXPORTER_OTLP_ENDPOINT": traces.url, "OTEL_SERVICE_NAME": "cnn-test", "OTEL_BSP_SCHEDULE_DELAY": "100",
    }  # fmt: skip
    log = tmp_path_factory.mktemp("observability") / "server.log"
    with running_server(bundled_repository, log, env) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def traceparent() -> tuple[str, str, str]:
    """A fresh W3C ``traceparent``, its trace id and its span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def wait_for(found: Callable[[], object], what: str, timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} did not arrive within {timeout_s:g} s")


def trace_of(traces: TraceReceiver, trace_id: str, count: int) -> dict[str, Span]:
    """The spans of one trace, by name, once ``count`` of them have arrived."""

    def spans() -> list[Span] | None:
        found = [span for span in traces.spans() if span.trace_id == trace_id]
        return found if len(found) >= count else None

    return {span.name: span for span in wait_for(spans, f"{count} spans of trace {trace_id}")}


STEPS = ["decode", "inference", "encode"]


def test_a_traceparent_makes_the_request_spans_part_of_its_trace(http, traces) -> None:
    header, trace_id, parent = traceparent()
    response = http.post(PREDICT, json={"instances": IMAGE}, headers={"traceparent": header})
    assert response.status_code == 200
    spans = trace_of(traces, trace_id, 1 + len(STEPS))
    root = spans["POST /v1/models/{name}:predict"]
    assert root.parent_id == parent and root.status_code != 2
    assert root.attributes["http.route"] == "/v1/models/{name}:predict"
    assert root.attributes["http.response.status_code"] == 200
    assert all(spans[step].parent_id == root.span_id for step in STEPS), spans
    (batch_link,) = spans["inference"].links
    batch = next(s for s in traces.spans() if (s.trace_id, s.span_id) == batch_link)
    assert batch.name == f"model call {MODEL}:1" and batch.attributes["cnn.batch.size"] == 1
    assert batch.attributes["cnn.engine"] == "tensorflow/fp32" and "cnn.batch.padding" in batch.attributes
    assert (trace_id, spans["inference"].span_id) in batch.links
    assert traces.service_names() == {"cnn-test"}


def test_a_request_without_trace_headers_starts_a_trace_of_its_own(http, traces) -> None:
    time.sleep(0.5)  # the spans of earlier tests have been exported
    before = {span.span_id for span in traces.spans()}
    assert http.post(PREDICT, json={"instances": IMAGE}).status_code == 200

    def roots() -> list[Span]:
        return [s for s in traces.spans() if s.span_id not in before and s.name.startswith("POST ")]

    (root,) = wait_for(roots, "the request's server span")
    assert root.parent_id == "" and root.name == "POST /v1/models/{name}:predict"
    spans = trace_of(traces, root.trace_id, 1 + len(STEPS))
    assert all(spans[step].parent_id == root.span_id for step in STEPS), spans


def test_a_caller_that_does_not_sample_gets_no_spans_for_its_request(http, traces) -> None:
    """The default sampler follows the caller's ``traceparent``: flags 00 records neither the request nor
    its steps (the model call, shared with other requests, has its own root)."""
    unsampled, dropped_trace, _ = traceparent()
    assert http.post(PREDICT, json={"instances": IMAGE}, headers={"traceparent": unsampled[:-2] + "00"}).is_success
    header, trace_id, _ = traceparent()
    assert http.post(PREDICT, json={"instances": IMAGE}, headers={"traceparent": header}).is_success
    trace_of(traces, trace_id, 1 + len(STEPS))  # exported after anything of the first request would be
    assert [span for span in traces.spans() if span.trace_id == dropped_trace] == []


def test_grpc_metadata_carries_the_traceparent(server, traces) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    header, trace_id, parent = traceparent()
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="images", datatype="FP32", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(np.zeros((1, 28, 28, 1), np.float32).tobytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=[("traceparent", header)])
    spans = trace_of(traces, trace_id, 1 + len(STEPS))
    root = spans["/inference.GRPCInferenceService/ModelInfer"]
    assert root.parent_id == parent and root.attributes["rpc.system"] == "grpc"


def test_an_error_fails_the_span_with_the_clients_message(http, traces) -> None:
    header, trace_id, _ = traceparent()
    response = http.post(PREDICT, json={"instances": [[1, 2, 3]]}, headers={"traceparent": header})
    assert response.status_code == 400
    name = "POST /v1/models/{name}:predict"
    root = wait_for(lambda: trace_of(traces, trace_id, 1).get(name), "the request's server span")
    assert root.status_code == 2 and root.status_message == response.json()["error"]


def test_requests_sharing_a_batch_link_to_its_span(server, traces) -> None:
    """Big requests keep the model busy while 8 one-image requests queue: they run as one batch."""
    big = np.zeros((256, 28, 28, 1), np.float32).tolist()
    headers = [traceparent() for _ in range(8)]
    answers: list[int] = []
    clients = [httpx.Client(base_url=server.base_url, timeout=60) for _ in range(4 + len(headers))]

    def send(client: httpx.Client, body: dict, header: str | None = None) -> None:
        with client:
            answers.append(client.post("/v1/models/fashion_cnn:predict", json=body,
                                       headers={"traceparent": header} if header else {}).status_code)  # fmt: skip

    bigs = [threading.Thread(target=send, args=(client, {"instances": big})) for client in clients[:4]]
    for thread in bigs:
        thread.start()
    deadline = time.monotonic() + 30
    # Start the small ones once at least two big requests wait for the model (on any machine, time enough).
    while metric_value(httpx.get(f"{server.base_url}/metrics").text, "cnn_queue_images") < 512:
        assert time.monotonic() < deadline, "the big requests never queued"
        time.sleep(0.005)
    threads = [
        threading.Thread(target=send, args=(c, {"instances": IMAGE}, h[0]))
        for c, h in zip(clients[4:], headers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in [*bigs, *threads]:
        thread.join()
    assert answers == [200] * 12
    waits = {t: trace_of(traces, t, 1 + len(STEPS))["inference"] for _, t, _ in headers}
    batches = {link for span in waits.values() for link in span.links}
    assert len(batches) == 1, f"the 8 requests ran in {len(batches)} batches"
    batch = next(s for s in traces.spans() if (s.trace_id, s.span_id) in batches)
    assert batch.attributes["cnn.batch.size"] == 8 and batch.attributes["cnn.batch.requests"] == 8
    assert sorted(batch.links) == sorted((t, span.span_id) for t, span in waits.items())


def _v2_body(seed: int) -> dict:
    data = np.random.default_rng(seed).random(784, dtype=np.float32)
    return {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": data.tolist()}]}


def test_payload_log_sends_each_request_and_response_as_cloudevents(http, sink) -> None:
    sent = {}
    for i in range(100):
        body = _v2_body(i)
        response = http.post(f"/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200
        sent[response.headers["x-request-id"]] = (body, response.json())

    def all_answered() -> Events | None:
        events = Events.of(sink)
        return events if {p.headers["ce-id"] for p in events.responses} >= set(sent) else None

    events = wait_for(all_answered, "100 response events")
    requests = {p.headers["ce-id"]: p for p in events.requests if p.headers["ce-id"] in sent}
    responses = {p.headers["ce-id"]: p for p in events.responses if p.headers["ce-id"] in sent}
    assert set(requests) == set(responses) == set(sent)
    for request_id, (body, answer) in sent.items():
        event = requests[request_id]
        assert event.headers["ce-specversion"] == "1.0"
        assert event.headers["ce-type"] == "org.kubeflow.serving.inference.request"
        assert event.headers["ce-inferenceservicename"] == MODEL and event.headers["ce-endpoint"] == "default"
        assert event.headers["ce-modelversion"] == "1" and event.headers["ce-source"]
        logged = json.loads(event.body)
        assert logged["id"] == request_id
        sent_pixels = np.array(body["inputs"][0]["data"], np.float32)
        assert np.array_equal(np.array(logged["inputs"][0]["data"], np.float32), sent_pixels)  # the same float32s
        response = json.loads(responses[request_id].body)
        assert responses[request_id].headers["ce-type"] == "org.kubeflow.serving.inference.response"
        assert response["outputs"][0]["data"] == answer["outputs"][0]["data"]
        assert response["model_version"] == "1"


def test_image_files_are_logged_as_base64_bytes(http, sink, fashion) -> None:
    files = [png_bytes(image) for image in fashion.test.images[:2]]
    response = http.post(f"/api/v1/models/{MODEL}/versions/1/predict",
                         files=[("files", (f"{i}.png", blob, "image/png")) for i, blob in enumerate(files)])  # fmt: skip
    request_id = response.headers["x-request-id"]
    event = wait_for(lambda: [p for p in Events.of(sink).requests if p.headers["ce-id"] == request_id], "the event")[0]
    (tensor,) = json.loads(event.body)["inputs"]
    assert tensor["datatype"] == "BYTES" and tensor["shape"] == [2]
    assert [base64.b64decode(value) for value in tensor["data"]] == files
    assert event.headers["ce-endpoint"] == "1"


def test_json_access_lines(http, server) -> None:
    header, trace_id, _ = traceparent()
    response = http.post(PREDICT, json={"instances": IMAGE * 3}, headers={"traceparent": header,
                                                                          "x-request-id": "req-42"})  # fmt: skip
    assert response.headers["x-request-id"] == "req-42"

    def line() -> dict | None:
        for text in server.log().splitlines():
            entry = json.loads(text)  # every line is JSON
            if entry.get("request_id") == "req-42":
                return entry
        return None

    entry = wait_for(line, "the access line")
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="images", datatype="FP32", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(np.zeros((1, 28, 28, 1), np.float32).tobytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=[("x-request-id", "rpc-7")])

    def grpc_line() -> dict | None:
        return next((e for e in map(json.loads, server.log().splitlines()) if e.get("request_id") == "rpc-7"), None)

    rpc = wait_for(grpc_line, "the gRPC access line")
    assert rpc["protocol"] == "grpc" and rpc["status"] == "OK" and rpc["api"] == "v2" and rpc["version"] == 1
    assert rpc["route"] == "/inference.GRPCInferenceService/ModelInfer" and rpc["images"] == 1
    assert entry["trace_id"] == trace_id and entry["protocol"] == "http" and entry["method"] == "POST"
    assert entry["route"] == "/v1/models/{name}:predict" and entry["model"] == MODEL and entry["version"] == 1
    assert entry["status"] == 200 and entry["images"] == 3 and entry["api"] == "tfserving"
    assert entry["latency_ms"] > 0 and entry["level"] == "info" and entry["time"].endswith("+00:00")


def test_a_dead_sink_fails_no_request_and_every_drop_is_counted(http, sink) -> None:
    """Runs last: it stops the module's sink."""
    before = metric_value(http.get("/metrics").text, "cnn_payload_log_events_total")
    sink.stop()
    for _ in range(500):
        assert http.post(PREDICT, json={"instances": IMAGE}).status_code == 200

    def accounted() -> bool:
        text = http.get("/metrics").text
        delivered = metric_value(text, "cnn_payload_log_events_total") - before
        dropped = sum(metric_value(text, "cnn_payload_log_dropped_total", reason=r) for r in ("failed", "sink_down"))
        full = metric_value(text, "cnn_payload_log_dropped_total", reason="queue_full")
        return delivered + dropped + 2 * full >= 2 * 500

    wait_for(accounted, "every event of the 500 requests delivered or counted as dropped", timeout_s=30)


def test_tracing_is_off_and_free_without_an_endpoint(client) -> None:
    """The in-process app of the other tests: no OTEL_* endpoint, so no tracer, no record, no request id."""
    from service.core import tracing

    response = client.post(PREDICT, json={"instances": IMAGE})
    assert response.status_code == 200 and "x-request-id" not in response.headers
    assert tracing.tracer() is None and not tracing.wanted({})


def test_a_global_opentelemetry_provider_gets_no_second_server_span(client, monkeypatch) -> None:
    """The service traces its requests itself; FastAPI's own telemetry, which reports to the global provider
    (set, e.g., by ``opentelemetry-instrument``), stays off, so a request is never traced twice."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert trace.get_tracer_provider() is provider
    response = client.post(PREDICT, json={"instances": IMAGE})
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()


def test_a_bad_otlp_protocol_is_a_configuration_error(capsys) -> None:
    from service.cli import main as cli

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cnn-serving: OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc, not 'http/json'"
    )


def test_what_native_code_writes_to_stderr_while_loading_goes_through_the_log(capfd, caplog) -> None:
    """TensorFlow's C++ writes a line or two to the process's stderr as it loads, whatever its log level
    (on a CPU where it turns oneDNN on): the server loads it inside this, so JSON logs stay JSON."""
    import logging
    import os

    from service.core import logs

    with caplog.at_level(logging.DEBUG, logger="native"), logs.native_stderr_logged("native"):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b'{"level": "info", "message": "a log line of this process"}\n')
    err = capfd.readouterr().err
    assert "oneDNN" not in err and '"a log line of this process"' in err
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("native", "DEBUG", "I0000 port.cc:153] oneDNN custom operations are on.")
    ]
