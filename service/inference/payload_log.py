"""Payload logging in KServe's format: sampled classifications, their inputs and outputs, sent as CloudEvents
to an HTTP sink (``CNN_LOGGER_URL``), for audit and drift detection.

Each logged request gives a request event and a response event (``CNN_LOGGER_MODE``: ``all``, ``request``
or ``response``), each one POST in CloudEvents' binary content mode with the headers KServe's logger sends:
``ce-specversion``, ``ce-id`` (the request's id: its ``X-Request-Id``, or one the server made),
``ce-type`` (``org.kubeflow.serving.inference.request`` / ``.response``), ``ce-source``, ``ce-time``,
``ce-inferenceservicename`` (the model), ``ce-component`` (``predictor``),
``ce-endpoint`` (``default``, or the version or label the request named) and ``ce-modelversion`` (the
version that answered). Bodies are Open Inference Protocol v2 JSON: the request's image files as
``BYTES`` (base64), or its tensor as the model's validated ``FP32`` input; the response's probabilities
as ``FP32``, exactly those the client got.

``CNN_LOGGER_SAMPLE`` of the requests are logged: exactly that share, in turn. Events wait in a bounded
queue (``_MAX_EVENTS`` requests, ``_MAX_BYTES`` of payload) and a background thread builds and sends them,
with a timeout and retries for each. A full queue drops a request's events (``queue_full``); an event that
fails every attempt is dropped (``failed``), and for a second after it so are the events that follow
(``sink_down``), so that a dead sink costs no backlog. All are counted in ``cnn_payload_log_dropped_total``.
No request waits for its events or fails because of them.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson

from service.core.http_post import HttpPoster
from service.core.logs import RequestRecord
from service.core.metrics import Metrics
from service.core.request import InferenceRequest, InferenceResult, Operation, Target
from service.core.sampling import Share
from service.core.settings import Settings

logger = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
_MAX_EVENTS = 1000  # logged requests waiting to be sent
_MAX_BYTES = 64 * 1024 * 1024  # their payload in all
_TIMEOUT_S = 2.0  # one POST
_ATTEMPTS = 3  # per event, 0.1 s and 0.2 s apart
_PAUSE_S = 1.0  # after an event fails every attempt, events are dropped without a try for this long


@dataclass(slots=True)
class Logged:
    """A request chosen for the payload log: what it sent, and (once answered) what it got."""

    endpoint: str
    blobs: list[bytes] | None  # image files as sent; None: a tensor (logged as the model input)
    request_id: str = ""
    result: InferenceResult | None = None
    size: int = 0  # the payload's bytes, counted against the queue's bound while it waits

    def answered(self, result: InferenceResult, request_id: str) -> None:
        self.result, self.request_id = result, request_id
        sent = sum(map(len, self.blobs)) if self.blobs is not None else 0
        if self.blobs is None and result.model_input is not None:
            sent += result.model_input.nbytes
        self.size = sent + (result.probabilities.nbytes if result.probabilities is not None else 0)


class PayloadLogger:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.url = str(settings.logger_url) if settings.logger_url else None
        self.mode = settings.logger_mode
        self.source = f"http://{settings.host}:{settings.port}/"
        self.metrics = metrics
        self._share = Share(settings.logger_sample)
        self._queue: queue.Queue[Logged | None] = queue.Queue(maxsize=_MAX_EVENTS)
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._down_until = 0.0

    # -- the request's side (event loop) ------------------------------------------------------------
    def sample(self, target: Target, request: InferenceRequest) -> Logged | None:
        """A classification in the logged share, with the image files it sent (kept before the pipeline
        lets them go); ``None`` when logging is off or this request is not in the share."""
        if self.url is None or target.operation is not Operation.classify:
            return None
        if not self._share.take():
            return None
        endpoint = "default" if target.version is None else str(target.version)
        return Logged(endpoint, list(request.images) if request.images is not None else None)

    def offer(self, logged: Logged, result: InferenceResult, record: RequestRecord | None) -> None:
        """Queue an answered request's events; dropped (counted) when the queue is full."""
        logged.answered(
            result, record.request_id if record is not None else result.request.request_id or uuid.uuid4().hex
        )
        with self._lock:
            if self._queued_bytes + logged.size > _MAX_BYTES or self._queue.full():
                self.metrics.payload_log_dropped.labels("queue_full").inc()
                return
            self._queued_bytes += logged.size
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_all, name="payload-log", daemon=True)
            self._thread.start()
        self._queue.put_nowait(logged)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout_s``), then stop the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    # -- the sender thread -------------------------------------------------------------------------
    def _send_all(self) -> None:
        assert self.url is not None
        sink = HttpPoster(self.url, _TIMEOUT_S)
        try:
            while (logged := self._queue.get()) is not None:
                with self._lock:
                    self._queued_bytes -= logged.size
                try:
                    for kind, body in self._events(logged):
                        self._send(sink, logged, kind, body)
                except Exception:  # a malformed event must not end the thread
                    logger.exception("payload log: could not build the events of request %s", logged.request_id)
                    self.metrics.payload_log_dropped.labels("failed").inc()
        finally:
            sink.close()

    def _events(self, logged: Logged) -> list[tuple[str, bytes]]:
        result = logged.result
        assert result is not None and result.probabilities is not None
        card, events = result.card, []
        if self.mode in ("all", "request"):
            if logged.blobs is not None:
                data: list = [base64.b64encode(blob).decode("ascii") for blob in logged.blobs]
                tensor = {"name": card.input.name, "datatype": "BYTES", "shape": [len(data)], "data": data}
            else:
                array = result.model_input
                assert array is not None
                tensor = {"name": card.input.name, "datatype": "FP32", "shape": list(array.shape),
                          "data": array.astype(np.float32, copy=False).ravel()}  # fmt: skip
            events.append((REQUEST_TYPE, orjson.dumps({"id": logged.request_id, "inputs": [tensor]},
                                                      option=orjson.OPT_SERIALIZE_NUMPY)))  # fmt: skip
        if self.mode in ("all", "response"):
            probabilities = result.probabilities
            output = {"name": card.output.name, "datatype": "FP32", "shape": list(probabilities.shape),
                      "data": probabilities.astype(np.float32, copy=False).ravel()}  # fmt: skip
            body = {"model_name": result.model_name, "model_version": str(result.model_version),
                    "id": logged.request_id, "outputs": [output]}  # fmt: skip
            events.append((RESPONSE_TYPE, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)))
        return events

    def _send(self, sink: HttpPoster, logged: Logged, kind: str, body: bytes) -> None:
        result = logged.result
        assert result is not None
        if time.monotonic() < self._down_until:  # the sink failed just now: no retries for a while
            self.metrics.payload_log_dropped.labels("sink_down").inc()
            return
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": logged.request_id,
            "ce-type": kind,
            "ce-source": self.source,
            "ce-time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "ce-inferenceservicename": result.model_name,
            "ce-component": "predictor",
            "ce-endpoint": logged.endpoint,
            "ce-modelversion": str(result.model_version),
        }
        for attempt in range(_ATTEMPTS):
            try:
                status = sink.post(body, headers)
            except OSError as exc:  # the poster has dropped its connection
                if attempt == _ATTEMPTS - 1:
                    logger.warning("payload log: %s unreachable (%s); event dropped", self.url, exc)
            else:
                if status < 300:
                    self.metrics.payload_log_events.labels(kind.rsplit(".", 1)[1]).inc()
                    return
                if status < 500:
                    logger.warning("payload log: the sink refused an event with HTTP %d", status)
                    break
            time.sleep(0.1 * (attempt + 1))
        self.metrics.payload_log_dropped.labels("failed").inc()
        self._down_until = time.monotonic() + _PAUSE_S
