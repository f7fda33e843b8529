"""Dynamic batching: concurrent requests for one model share a model call.

One :class:`Batcher` per loaded model version. Requests (each a ``(k, h, w, c)`` array, already
validated) wait in a queue. The batcher's own threads, ``max_concurrent_batches`` of them, each take
queued requests up to ``max_batch_size`` images, run the model once, split the output by each request's
row count and hand the rows back to the event loop in one callback per batch. A thread takes its next
batch the moment its call returns, without waiting for the event loop to answer the last one, so the
model keeps computing while the event loop encodes answers and decodes the next requests. A batch may
be padded with blank rows up to a faster batch size (``pad_targets``, measured at load:
:mod:`service.hosting.planner`); the padding's outputs are dropped.

An idle batcher (nothing queued, no call running) runs a lone one-image request on the event loop
itself when the model's one-image calls take under ``_INLINE_MAX_CALL_S`` (timed on the calls so far):
the model is free, so the call starts at once either way, and the two thread hand-offs it saves (each a
wake-up of another thread, about 0.1 ms on a virtual machine) are most of what a single request costs
beyond the model. A request that arrives meanwhile waits for that call, as it would wait for the model
anyway. Under load (the last call merged several requests, or the request before came less than a
one-image call's time ago) every call runs in the batch threads, even when the queue happens to be empty
as a request comes: with several batch threads, or requests that arrive one per event-loop turn (gRPC),
that happens often, and each call made there would stop the event loop for its length (measured under
one-image gRPC load on 2 cores: the event loop spent 14% of its time in such calls, and without them
the server answered about 5% more images per second).

Waiting policy: an idle thread starts at once with whatever is queued, so an idle server adds no
batching delay. Only when the previous call merged several requests (the server is under load) and no
other call is running does it wait up to ``max_wait`` for the batch to fill; the other threads wait for it
rather than form a batch beside it. Batches also form naturally while a call is running. With several
threads, a call starts beside a running one only once a full batch is queued, and then at once. Until then
the thread whose call ends takes the next batch itself, and a request wakes a thread only when that thread
can start a call. A call beside another runs on the model's other stream, on half the cores: with a second
call let in at a quarter of a batch, one-image requests from 64 connections had 3 of 4 calls beside another,
each on one core, while the machine sat 12–17% idle (measured on 2 cores, openvino/int8, three alternated
runs: 10–14% more images per second with this rule in two of them, −5% to +2% in the third; 64-image
requests within 3%).

With tracing on (:mod:`service.core.tracing`), each model call is a span of its own (batch size, padding,
requests, engine) linked to the waiting span of every request in it, and each of those links back.

Time is bounded in three places:
- ``max_wait``: how long a batch may wait to fill (milliseconds);
- ``queue_timeout``: a request older than this when taken is dropped with 503 (nobody should get work
  done after their client gave up);
- ``request_timeout``: the caller's end-to-end wait on its future (504); the request is then skipped
  if it is still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import Link, Span, SpanContext

from service.core import tracing
from service.core.errors import InferenceFailed, InferenceTimeout, ModelNotReady, Overloaded, ServiceError
from service.core.metrics import Metrics
from service.hosting.priority import lower_current_thread

logger = logging.getLogger(__name__)

# A lone request of this many images runs on the event loop when the batcher is idle and one-image
# calls take less than this (the longest the event loop is held).
_INLINE_IMAGES = 1
_INLINE_MAX_CALL_S = 0.005


@dataclass(eq=False)  # compared by identity (its images are arrays)
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    span: SpanContext | None = None  # the request's wait (tracing on)
    batch_span: SpanContext | None = None  # the model call it ran in (tracing on)


def _fail(items: list[_Pending], error: ServiceError) -> None:
    """On the event loop: ``error`` for each request that is still waiting."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


def _hand_out(batch: list[_Pending], outputs: np.ndarray) -> None:
    """On the event loop: each request still waiting gets its rows of ``outputs``."""
    offset = 0
    for item in batch:
        rows = len(item.images)
        if not item.future.done():  # not cancelled by its caller's timeout, not failed by drain
            item.future.set_result(outputs[offset : offset + rows])
        offset += rows


def _settle(
    lock: threading.Condition,
    running: list[list[_Pending]],
    batch: list[_Pending],
    outputs: np.ndarray | None,
    error: ServiceError | None,
) -> None:
    """On the event loop: give each request of a finished batch its rows of ``outputs``, or ``error``; the
    batch then stops counting as ``running`` (so :meth:`Batcher.drain` sees it answered)."""
    with lock:
        if batch in running:
            running.remove(batch)
    if outputs is None:
        assert error is not None
        _fail(batch, error)
    else:
        _hand_out(batch, outputs)


def _post(loop: asyncio.AbstractEventLoop | None, callback: Callable[..., None], *args: object) -> None:
    """Run ``callback(*args)`` on the event loop (from a batch thread)."""
    assert loop is not None
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(callback, *args)


def _expire(future: asyncio.Future, key: str, timeout_s: float) -> None:
    """On the event loop: 504 for a request still waiting when its time is up."""
    if not future.done():
        future.set_exception(InferenceTimeout(f"inference on {key} did not finish within {timeout_s:g} s"))


def _pop_batch(queue: deque[_Pending], max_images: int, timeout_s: float) -> tuple[list[_Pending], list[_Pending], int]:
    """Pop requests up to ``max_images`` images (a larger single request runs alone), skipping those whose
    caller gave up; returns them, those that waited over ``timeout_s``, and the images popped in all.
    Under the batcher's lock."""
    batch: list[_Pending] = []
    expired: list[_Pending] = []
    rows, popped, now = 0, 0, time.monotonic()
    while queue:
        item = queue[0]
        if batch and rows + len(item.images) > max_images:
            break
        queue.popleft()
        popped += len(item.images)
        if item.future.done():  # cancelled by its caller's timeout
            continue
        if now - item.enqueued > timeout_s:
            expired.append(item)
            continue
        batch.append(item)
        rows += len(item.images)
    return batch, expired, popped


class _ModelCalls:
    """One model version's calls: padding to a faster batch size, the call metrics, and how long a
    one-image call takes (whether the event loop may make it, see the module docstring)."""

    def __init__(self, key: str, run: Callable[[np.ndarray], np.ndarray], metrics: Metrics,
                 pad_targets: tuple[int, ...], engine: str) -> None:  # fmt: skip
        self.key = key
        self.engine = engine
        self._run = run
        self.pad_targets = pad_targets  # rows a batch of n runs as: pad_targets[n] (n when out of range)
        # This model's children of the shared metrics, looked up once.
        self._batch_size = metrics.batch_size.labels(key)
        self._batch_requests = metrics.batch_requests.labels(key)
        self._inference_seconds = metrics.inference.labels(key)
        self._padded = metrics.padded.labels(key)
        self.one_image_s = math.inf  # how long the last one-image call took

    def __call__(self, inputs: np.ndarray, batch: list[_Pending]) -> np.ndarray | None:
        """One model call on ``inputs`` (``batch``'s images, padded to its bucket); ``None`` when it fails
        (the log says why)."""
        count = len(inputs)
        self._batch_size.observe(count)
        self._batch_requests.observe(len(batch))
        target = self.pad_targets[count] if count < len(self.pad_targets) else count
        if target > count:
            inputs = np.concatenate([inputs, np.zeros((target - count, *inputs.shape[1:]), inputs.dtype)])
            self._padded.inc(target - count)
        span = self._start_span(batch, count, target)
        started = time.perf_counter()
        try:
            outputs = self._run(inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"model returned {len(outputs)} rows for {len(inputs)} inputs")
        except Exception:  # the details (TensorFlow ops, paths) go to the log, not to the client
            logger.exception("inference failed on %s for a batch of %d", self.key, count)
            if span is not None:
                tracing.end_failed(span, f"inference failed on model {self.key}")
            return None
        finally:
            elapsed = time.perf_counter() - started
            self._inference_seconds.observe(elapsed)
            if target == 1:
                self.one_image_s = elapsed
        if span is not None:
            span.end()
        return outputs[:count]

    def _start_span(self, batch: list[_Pending], count: int, target: int) -> Span | None:
        """The model call's span, linked to each request's wait, which will link back (tracing on)."""
        tracer = tracing.tracer()
        if tracer is None:
            return None
        attributes = {"cnn.model": self.key, "cnn.engine": self.engine, "cnn.batch.size": count,
                      "cnn.batch.padding": target - count, "cnn.batch.requests": len(batch)}  # fmt: skip
        links = [Link(item.span) for item in batch if item.span is not None]
        span = tracer.start_span(f"model call {self.key}", context=tracing.ROOT, links=links, attributes=attributes)
        for item in batch:
            item.batch_span = span.get_span_context()
        return span


class Batcher:
    def __init__(
        self,
        key: str,
        run: Callable[[np.ndarray], np.ndarray],
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_concurrent_batches: int = 1,
        max_wait_s: float,
        max_queue_images: int,
        queue_timeout_s: float,
        request_timeout_s: float,
        pad_targets: tuple[int, ...] = (),
        engine: str = "",
        nice: int = 0,
    ) -> None:
        self.key = key  # "name:version", in metrics, messages and thread names
        self._call = _ModelCalls(key, run, metrics, pad_targets, engine)
        self._metrics = metrics
        self._queue_depth = metrics.queue_depth.labels(key)
        self._queue_timeouts = metrics.rejected.labels(key, "queue_timeout")
        self.max_batch_size, self.max_wait_s, self.max_queue_images = max_batch_size, max_wait_s, max_queue_images
        self.queue_timeout_s, self.request_timeout_s = queue_timeout_s, request_timeout_s
        self._slots = max_concurrent_batches
        self._nice = nice  # the batch threads run this many nice levels below the event loop
        # The queue, the running batches and the stop flag are shared with the threads, under this lock.
        self._lock = threading.Condition()
        self._filled = threading.Condition(self._lock)  # wakes the thread whose batch is forming: it is full
        self._forming = False  # a thread waits for its batch to fill: the others wait for it
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._running: list[list[_Pending]] = []
        self._calls = 0  # model calls in progress in the threads
        self._last_batch_requests = 1
        self._last_submit = -math.inf  # when the last request came (the event loop's clock)
        self._stopped = self._closing = False  # closing: draining, no new requests; stopped: the threads end
        self._live_threads = 0  # batch threads not yet returned (read on every request: cheaper than is_alive)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._live_threads = self._slots
        for index in range(self._slots):
            threading.Thread(target=self._serve, name=f"batch-{self.key}-{index}", daemon=True).start()

    @property
    def alive(self) -> bool:
        return not self._stopped and self._live_threads > 0

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work, let queued and running requests finish and be answered (up to ``timeout_s``),
        then stop the threads; whatever is left fails with 503 (a call still running is not waited for:
        its thread ends when the call returns)."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
            self._filled.notify_all()
            left = [*self._queue, *(item for batch in self._running for item in batch)]
            self._queue.clear()
            self._queued_images = 0
        _fail(left, ModelNotReady("server is shutting down"))
        await asyncio.sleep(0)  # the callers of the requests answered last resume before drain returns

    # -- request side ------------------------------------------------------------------------------
    def admit(self, count: int = 0) -> None:
        """Refuse (503) when ``count`` more images would overflow the queue; ``count=0`` asks, before a
        request body is read, whether the queue is already full."""
        if self._queued_images + max(count, 1) > self.max_queue_images:
            self._metrics.rejected.labels(self.key, "queue_full").inc()
            raise Overloaded(f"model {self.key} is overloaded ({self._queued_images} images queued); retry shortly")

    async def submit(self, images: np.ndarray, *, background: bool = False) -> np.ndarray:
        """Queue a validated batch of images and wait for its rows of the model's output. ``background``
        work (a shadow's) always runs in a batch thread, never on the event loop."""
        if self._closing or not self.alive:
            raise ModelNotReady(f"model {self.key} is not accepting requests")
        count = len(images)
        with tracing.step("inference", {"cnn.model": self.key, "cnn.images": count}) as span:
            self.admit(count)
            loop = asyncio.get_running_loop()
            item = _Pending(images, loop.create_future(), span=span.get_span_context() if span else None)
            # On the event loop only when idle and not under load (see the module docstring).
            now, call_s = loop.time(), self._call.one_image_s
            quiet = now - self._last_submit > call_s and self._last_batch_requests == 1  # not under load
            self._last_submit = now
            idle = quiet and not self._queue and not self._running
            inline = idle and call_s < _INLINE_MAX_CALL_S and count <= _INLINE_IMAGES and not background
            with self._lock:
                self._queue.append(item)
                self._queued_images += count
                if self._forming:
                    if self._queued_images >= self.max_batch_size:
                        self._filled.notify()
                elif not inline and self._can_start():
                    self._lock.notify()  # a thread that can start a call, none that would go back to sleep
            if inline:  # decided once the requests that came with it have queued too
                loop.call_soon(self._run_if_alone)
            self._queue_depth.set(self._queued_images)
            # Failed with 504 when the time is up (a timer, not asyncio.timeout: this runs on every request);
            # the threads then skip it if it is still queued.
            expiry = loop.call_later(self.request_timeout_s, _expire, item.future, self.key, self.request_timeout_s)
            try:
                return await item.future
            finally:
                expiry.cancel()
                if span is not None and item.batch_span is not None:
                    span.add_link(item.batch_span)

    def _run_if_alone(self) -> None:
        """On the event loop: run the queued request here if it is still alone and nothing runs (see the
        module docstring); otherwise wake a batch thread for the queue."""
        with self._lock:
            alone = len(self._queue) == 1 and not self._running and not self._stopped
            if not alone:
                self._lock.notify()
                return
            item = self._queue.popleft()
            self._queued_images -= len(item.images)
        self._queue_depth.set(self._queued_images)
        if item.future.done():  # its caller gave up already
            return
        self._last_batch_requests = 1
        outputs = self._call(item.images, [item])
        if outputs is None:
            _fail([item], InferenceFailed(f"inference failed on model {self.key}"))
        else:
            item.future.set_result(outputs)

    # -- the batch threads -------------------------------------------------------------------------
    def _can_start(self) -> bool:
        """Under the lock: whether a batch thread may start a call now. Something is queued, no thread is
        forming a batch, and no call runs, or a full batch is queued to run beside it."""
        full = self._queued_images >= self.max_batch_size
        return bool(self._queue) and not self._forming and (not self._calls or full)

    def _serve(self) -> None:
        lower_current_thread(self._nice)
        try:
            while True:
                with self._lock:
                    while not self._stopped and not self._can_start():
                        self._lock.wait()
                    if self._stopped:
                        return
                    if self._last_batch_requests > 1 and self.max_wait_s > 0 and not self._calls:
                        self._wait_for_fill()
                    batch, expired, popped = _pop_batch(self._queue, self.max_batch_size, self.queue_timeout_s)
                    self._queued_images -= popped
                    if self._queued_images >= self.max_batch_size:
                        self._lock.notify()  # a full batch is left: it runs beside this call
                    if batch:
                        self._last_batch_requests = len(batch)  # read by the next batch's fill decision
                        self._running.append(batch)
                        self._calls += 1
                self._queue_depth.set(self._queued_images)
                if expired:
                    self._queue_timeouts.inc(len(expired))
                    error = Overloaded(f"request waited over {self.queue_timeout_s:g} s in the queue")
                    _post(self._loop, _fail, expired, error)
                if batch:
                    try:
                        self._execute(batch)
                    finally:
                        with self._lock:  # this thread takes the next batch itself: no other is woken
                            self._calls -= 1
        finally:  # returned when stopped, or died of an error (logged by threading's excepthook)
            with self._lock:
                self._live_threads -= 1

    def _wait_for_fill(self) -> None:
        """Under the lock: wait until the batch is full, ``max_wait`` after its oldest request, or stop; the
        other threads wait meanwhile (``_forming``)."""
        deadline = self._queue[0].enqueued + self.max_wait_s
        self._forming = True
        try:
            while self._queue and self._queued_images < self.max_batch_size and not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._filled.wait(remaining)
        finally:
            self._forming = False

    def _execute(self, batch: list[_Pending]) -> None:
        inputs = batch[0].images if len(batch) == 1 else np.concatenate([item.images for item in batch])
        outputs = self._call(inputs, batch)
        if outputs is None:
            error = InferenceFailed(f"inference failed on model {self.key}")
            _post(self._loop, _settle, self._lock, self._running, batch, None, error)
        else:
            _post(self._loop, _settle, self._lock, self._running, batch, outputs, None)
