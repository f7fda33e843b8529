"""The batcher with a stand-in model function: merging, routing, limits and failures."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.core.errors import InferenceFailed, InferenceTimeout, Overloaded
from service.core.metrics import Metrics
from service.hosting.batcher import Batcher


def make_batcher(run, **overrides) -> Batcher:
    options = dict(max_batch_size=8, max_wait_s=0.002, max_queue_images=64, queue_timeout_s=5, request_timeout_s=5)
    options.update(overrides)
    return Batcher("test:1", run, ThreadPoolExecutor(2), Metrics(), **options)


def images(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 2, 2, 1), value, np.float32)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.02)
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    async def scenario():
        batcher = make_batcher(run)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(images(i, count=1 + i % 2)) for i in range(20)))
        await batcher.drain(1)
        return results

    results = asyncio.run(scenario())
    for i, rows in enumerate(results):
        assert rows.shape == (1 + i % 2, 1) and (rows == 4 * i).all()
    assert sum(calls) == sum(1 + i % 2 for i in range(20))
    assert max(calls) > 1 and max(calls) <= 8 and len(calls) < 20


def test_idle_server_does_not_wait_for_a_batch():
    async def scenario():
        batcher = make_batcher(lambda b: b[:, 0, 0], max_wait_s=1.0)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit(images(1))
        elapsed = time.perf_counter() - started
        await batcher.drain(1)
        return elapsed

    assert asyncio.run(scenario()) < 0.5  # far below the 1 s batch wait


def test_full_queue_is_refused_with_retry_after():
    release = threading.Event()

    def run(batch):
        release.wait(5)
        return batch[:, 0, 0]

    async def scenario():
        batcher = make_batcher(run, max_queue_images=4, max_batch_size=1)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images(9, count=2))
        release.set()
        await asyncio.gather(*pending)
        await batcher.drain(1)
        return refused.value

    error = asyncio.run(scenario())
    assert error.status_code == 503 and error.headers == {"Retry-After": "1"}


def test_model_failure_and_timeout_are_reported(caplog):
    def broken(batch):
        raise RuntimeError("boom in /secret/path/op Conv2D")

    def slow(batch):
        time.sleep(0.3)
        return batch[:, 0, 0]

    async def scenario():
        failing = make_batcher(broken)
        failing.start()
        with pytest.raises(InferenceFailed, match="inference failed on model test:1") as failed:
            await failing.submit(images(1))
        assert "boom" not in failed.value.message and "/secret" not in failed.value.message  # the log has it
        assert any("boom in /secret/path" in r.exc_text for r in caplog.records if r.exc_text)
        assert failing.alive  # the worker survives a failed batch
        await failing.drain(1)
        timing_out = make_batcher(slow, request_timeout_s=0.05)
        timing_out.start()
        with pytest.raises(InferenceTimeout):
            await timing_out.submit(images(1))
        await timing_out.drain(1)

    asyncio.run(scenario())


def test_wrong_row_count_fails_the_batch(caplog):
    async def scenario():
        batcher = make_batcher(lambda batch: batch[:1, 0, 0])
        batcher.start()
        with pytest.raises(InferenceFailed, match="inference failed"):
            await batcher.submit(images(1, count=3))
        await batcher.drain(1)

    asyncio.run(scenario())
    assert any("returned 1 rows for 3 inputs" in r.exc_text for r in caplog.records if r.exc_text)


def test_concurrent_batches_overlap_and_drain_waits_for_them():
    running, peak, lock = 0, 0, threading.Lock()
    finished: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        finished.append(len(batch))
        return batch[:, 0, 0]

    async def scenario(slots: int) -> float:
        batcher = make_batcher(run, max_batch_size=2, max_concurrent_batches=slots)
        batcher.start()
        started = time.perf_counter()
        pending = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(4)]
        await asyncio.sleep(0.03)  # both slots busy (or one), nothing finished yet
        await batcher.drain(5)  # must let the running calls finish
        assert all(task.done() and not task.exception() for task in pending)
        return time.perf_counter() - started

    one_slot = asyncio.run(scenario(1))
    assert peak == 1
    peak = 0
    two_slots = asyncio.run(scenario(2))
    assert peak == 2
    assert sum(finished) == 8
    assert two_slots < one_slot


def test_after_a_merged_batch_the_next_one_waits_to_fill():
    """The wait-for-fill decision uses the batch just taken, not one whose task has not started yet."""
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch[:, 0, 0]

    async def scenario():
        batcher = make_batcher(run, max_batch_size=8, max_concurrent_batches=2, max_wait_s=0.5)
        waits = 0
        wait_for_fill = batcher._wait_for_fill

        async def counted() -> None:
            nonlocal waits
            waits += 1
            await wait_for_fill()

        batcher._wait_for_fill = counted
        batcher.start()
        # Ten requests queue up before the worker first runs: it takes 8 (merged), then, with a call slot
        # still free and no await in between, decides whether to wait for the remaining 2 to fill up.
        await asyncio.gather(*(batcher.submit(images(i)) for i in range(10)))
        await batcher.drain(1)
        return waits

    assert asyncio.run(scenario()) == 1
    assert calls == [8, 2]


def test_bucket_padding_returns_each_request_exactly_its_own_rows():
    """Batches padded to 2 or 8 rows: the model sees the padded sizes, each request only its own rows."""
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.01)
        return batch.reshape(len(batch), -1)[:, :1]  # each row's own value; padding rows are 0

    # n → rows: 1 → 2, 3..8 → 8, 2 stays 2
    targets = (0, 2, 2, 8, 8, 8, 8, 8, 8)
    metrics = Metrics()

    async def scenario():
        batcher = Batcher(
            "test:1",
            run,
            ThreadPoolExecutor(2),
            metrics,
            max_batch_size=8,
            max_wait_s=0.002,
            max_queue_images=64,
            queue_timeout_s=5,
            request_timeout_s=5,
            pad_targets=targets,
        )
        batcher.start()
        alone = await batcher.submit(images(7.0))
        together = await asyncio.gather(*(batcher.submit(images(i + 1, count=1 + i % 3)) for i in range(12)))
        await batcher.drain(1)
        return alone, together

    alone, together = asyncio.run(scenario())
    assert calls[0] == 2 and alone.shape == (1, 1) and alone[0, 0] == 7.0
    for i, rows in enumerate(together):
        assert rows.shape == (1 + i % 3, 1) and (rows == i + 1).all()
    assert set(calls) <= {2, 8}, calls  # every batch ran at a bucket size
    padded = metrics.registry.get_sample_value("cnn_padded_images_total", {"model": "test:1"})
    assert padded == sum(calls) - 1 - sum(1 + i % 3 for i in range(12))
