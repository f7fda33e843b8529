"""Dynamic batching: concurrent requests for one model share a model call.

One :class:`Batcher` per loaded model version. Requests (each a ``(k, h, w, c)`` array, already
validated) wait in a queue; one worker task takes queued requests up to ``max_batch_size`` images,
runs the model once in a thread (never on the event loop), splits the output by each request's row
count and resolves each request's future. A batch may be padded with blank rows up to a faster batch
size (``pad_targets``, measured at load: :mod:`service.hosting.planner`); the padding's outputs are dropped.
Up to ``max_concurrent_batches`` calls run at once, so the
model keeps computing while the event loop decodes the next requests and encodes the last answers.

Waiting policy: when a call slot is free the worker starts at once with whatever is queued, so an idle
server adds no batching delay. Only when the previous call merged several requests (the server is under
load) does it wait up to ``max_wait`` for the batch to fill. Batches also form naturally while a call is
running.

Time is bounded in three places:
- ``max_wait``: how long a batch may wait to fill (milliseconds);
- ``queue_timeout``: a request older than this when taken is dropped with 503 (nobody should get work
  done after their client gave up);
- ``request_timeout``: the caller's end-to-end wait on its future (504); the request is then skipped
  if it is still queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.core.errors import InferenceFailed, InferenceTimeout, ModelNotReady, Overloaded
from service.core.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        key: str,
        run: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_concurrent_batches: int = 1,
        max_wait_s: float,
        max_queue_images: int,
        queue_timeout_s: float,
        request_timeout_s: float,
        pad_targets: tuple[int, ...] = (),
    ) -> None:
        self.key = key  # "name:version", in metrics and messages
        self._run = run
        self._executor = executor
        self._metrics = metrics
        # This model's children of the shared metrics, looked up once.
        self._queue_depth = metrics.queue_depth.labels(key)
        self._batch_size = metrics.batch_size.labels(key)
        self._batch_requests = metrics.batch_requests.labels(key)
        self._inference_seconds = metrics.inference.labels(key)
        self._padded = metrics.padded.labels(key)
        self.pad_targets = pad_targets  # rows a batch of n runs as: pad_targets[n] (n when out of range)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_images = max_queue_images
        self.queue_timeout_s = queue_timeout_s
        self.request_timeout_s = request_timeout_s
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._running: set[asyncio.Task] = set()
        self._last_batch_requests = 1
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher:{self.key}")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work, let queued requests finish (up to ``timeout_s``), then stop the worker."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        tasks = [task for task in (self._task, *self._running) if task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(ModelNotReady("server is shutting down"))
        self._queue.clear()

    # -- request side ------------------------------------------------------------------------------
    def admit(self, count: int = 0) -> None:
        """Refuse (503) when ``count`` more images would overflow the queue; ``count=0`` asks, before a
        request body is read, whether the queue is already full."""
        if self._queued_images + max(count, 1) > self.max_queue_images:
            self._metrics.rejected.labels(self.key, "queue_full").inc()
            raise Overloaded(f"model {self.key} is overloaded ({self._queued_images} images queued); retry shortly")

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Queue a validated batch of images and wait for its rows of the model's output."""
        if self._closing or not self.alive:
            raise ModelNotReady(f"model {self.key} is not accepting requests")
        count = len(images)
        self.admit(count)
        item = _Pending(images, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._queued_images += count
        self._queue_depth.set(self._queued_images)
        self._wakeup.set()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                return await item.future  # cancelled on timeout: the worker skips it if still queued
        except TimeoutError:
            raise InferenceTimeout(
                f"inference on {self.key} did not finish within {self.request_timeout_s:g} s"
            ) from None

    # -- worker side -------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()  # requests keep queueing while every slot is busy
            if self._last_batch_requests > 1 and self.max_wait_s > 0:
                await self._wait_for_fill()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            self._last_batch_requests = len(batch)  # read by the next iteration's fill decision
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _wait_for_fill(self) -> None:
        deadline = self._queue[0].enqueued + self.max_wait_s
        while self._queued_images < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        """Pop requests up to ``max_batch_size`` images (a larger single request runs alone)."""
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            item = self._queue[0]
            if batch and rows + len(item.images) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= len(item.images)
            if item.future.done():  # cancelled by its caller's timeout
                continue
            if now - item.enqueued > self.queue_timeout_s:
                self._metrics.rejected.labels(self.key, "queue_timeout").inc()
                item.future.set_exception(Overloaded(f"request waited over {self.queue_timeout_s:g} s in the queue"))
                continue
            batch.append(item)
            rows += len(item.images)
        self._queue_depth.set(self._queued_images)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        inputs = batch[0].images if len(batch) == 1 else np.concatenate([item.images for item in batch])
        count = len(inputs)
        self._batch_size.observe(count)
        self._batch_requests.observe(len(batch))
        target = self.pad_targets[count] if count < len(self.pad_targets) else count
        if target > count:
            inputs = np.concatenate([inputs, np.zeros((target - count, *inputs.shape[1:]), inputs.dtype)])
            self._padded.inc(target - count)
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"model returned {len(outputs)} rows for {len(inputs)} inputs")
        except asyncio.CancelledError:  # drain() gave up waiting for this call
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ModelNotReady("server is shutting down"))
            raise
        except Exception:  # the details (TensorFlow ops, paths) go to the log, not to the client
            logger.exception("inference failed on %s for a batch of %d", self.key, count)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed(f"inference failed on model {self.key}"))
            return
        finally:
            self._inference_seconds.observe(time.perf_counter() - started)
        offset = 0
        for item in batch:
            rows = len(item.images)
            if not item.future.done():
                item.future.set_result(outputs[offset : offset + rows])
            offset += rows
