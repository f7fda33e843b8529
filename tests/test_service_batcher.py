"""The batcher with a stand-in model function: merging, routing, limits and failures."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.core.errors import InferenceFailed, InferenceTimeout, ModelNotReady, Overloaded
from service.core.metrics import Metrics
from service.hosting.batcher import Batcher


def make_batcher(run, **overrides) -> Batcher:
    options = dict(max_batch_size=8, max_wait_s=0.002, max_queue_images=64, queue_timeout_s=5, request_timeout_s=5)
    options.update(overrides)
    return Batcher("test:1", run, Metrics(), **options)


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
    """Under load (the last call merged requests) a lone request waits up to ``max_wait`` for company;
    after a call that ran one request alone, the next starts at once."""
    calls: list[int] = []
    release = threading.Event()

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        release.wait(5)
        return batch[:, 0, 0]

    async def timed(batcher: Batcher, value: float) -> float:
        started = time.perf_counter()
        await batcher.submit(images(value))
        return time.perf_counter() - started

    async def scenario() -> tuple[float, float]:
        batcher = make_batcher(run, max_batch_size=8, max_wait_s=0.4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(images(0)))  # runs alone, held in the model
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(1, 9)]
        await asyncio.sleep(0.05)
        release.set()  # the 8 queued meanwhile run as one merged call
        await asyncio.gather(first, *queued)
        after_merged = await timed(batcher, 9)  # waits for a batch to fill, then runs alone
        after_single = await timed(batcher, 10)
        await batcher.drain(1)
        return after_merged, after_single

    after_merged, after_single = asyncio.run(scenario())
    assert calls == [1, 8, 1, 1]
    assert after_merged >= 0.35, after_merged
    assert after_single < 0.3, after_single


def test_beside_a_running_call_another_starts_once_a_full_batch_is_queued_and_without_waiting():
    """With two batch threads, requests queued while a call runs wait for it (a second call on the model's
    other stream would run on half the cores); once a full batch is queued, the free thread starts at once,
    even under load, without waiting for the batch to fill."""
    calls: list[int] = []
    hold = threading.Event()  # the first call waits for it

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            hold.wait(5)
        return batch[:, 0, 0]

    async def scenario() -> tuple[bool, float]:
        batcher = make_batcher(run, max_batch_size=8, max_wait_s=0.4, max_concurrent_batches=2)
        batcher.start()
        held = asyncio.ensure_future(batcher.submit(images(0)))
        await asyncio.sleep(0.05)
        lone = asyncio.ensure_future(batcher.submit(images(1, 3)))
        await asyncio.sleep(0.1)
        waited = not lone.done()  # three images are under a full batch of 8
        await batcher.submit(images(2, 5))  # eight: both run now, beside the held call
        assert lone.done() and not held.done()
        started = time.perf_counter()  # the last call merged two requests: the server is under load
        await asyncio.gather(batcher.submit(images(3, 4)), batcher.submit(images(4, 4)))
        elapsed = time.perf_counter() - started
        assert not held.done()
        hold.set()
        await held
        await batcher.drain(1)
        return waited, elapsed

    waited, elapsed = asyncio.run(scenario())
    assert waited and calls == [1, 8, 8]
    assert elapsed < 0.3, elapsed  # no max_wait (0.4 s) for the batch to fill


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


def test_the_model_keeps_computing_while_the_event_loop_is_busy():
    """A batch thread takes the next batch when its call returns, not when the event loop next runs."""
    calls: list[float] = []

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.03)
        calls.append(time.perf_counter())
        return batch[:, 0, 0]

    async def scenario() -> int:
        batcher = make_batcher(run, max_batch_size=1, max_wait_s=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(4)]
        await asyncio.sleep(0)  # all four queued
        time.sleep(0.4)  # the event loop is busy (encoding answers, say) and runs nothing else
        done_meanwhile = len(calls)
        assert [row.item() for row in await asyncio.gather(*pending)] == [0, 1, 2, 3]
        await batcher.drain(1)
        return done_meanwhile

    assert asyncio.run(scenario()) == 4


def test_drain_fails_what_is_still_running_after_its_timeout():
    release = threading.Event()

    def run(batch: np.ndarray) -> np.ndarray:
        release.wait(5)
        return batch[:, 0, 0]

    async def scenario():
        batcher = make_batcher(run, max_batch_size=1)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(images(1)))
        queued = asyncio.ensure_future(batcher.submit(images(2)))
        await asyncio.sleep(0.05)
        await batcher.drain(0.1)
        release.set()
        results = await asyncio.gather(running, queued, return_exceptions=True)
        assert not batcher.alive
        with pytest.raises(ModelNotReady):
            await batcher.submit(images(3))
        return results

    for result in asyncio.run(scenario()):
        assert isinstance(result, ModelNotReady) and result.status_code == 503


def test_an_idle_batcher_runs_a_lone_image_on_the_event_loop_only_when_calls_are_fast():
    def scenario(call_s: float) -> list[str]:
        threads: list[str] = []

        def run(batch: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread().name)
            time.sleep(call_s)
            return batch[:, 0, 0]

        async def requests() -> None:
            batcher = make_batcher(run)
            batcher.start()
            for i in range(3):  # one at a time: the batcher is idle before each
                assert (await batcher.submit(images(i))).item() == i
            await asyncio.gather(*(batcher.submit(images(i)) for i in range(6)))  # queued together
            for i in range(2):  # one at a time again, after a merged call: under load, then not
                assert (await batcher.submit(images(i))).item() == i
            await batcher.drain(1)

        asyncio.run(requests())
        return threads

    fast = scenario(0.0)
    # The first call is timed in a batch thread; the next lone ones run on the event loop; requests
    # that come together are batched by the threads; right after that merged call the server counts as
    # under load, and a lone request runs in a thread too; after that one, on the event loop again.
    assert fast[0].startswith("batch-") and fast[1:3] == ["MainThread", "MainThread"]
    assert len(fast) == 6 and fast[3].startswith("batch-") and fast[4].startswith("batch-")
    assert fast[5] == "MainThread"
    slow = scenario(0.02)  # over the 5 ms the event loop may be held
    assert all(name.startswith("batch-") for name in slow)


def test_a_lone_image_runs_in_a_thread_when_another_request_came_within_a_call_of_it():
    """Requests arriving faster than one-image calls take mean load, even when each finds the batcher
    idle (gRPC messages arrive one per event-loop turn): the event loop must not stop for the call."""
    calls: list[tuple[int, str]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append((len(batch), threading.current_thread().name))
        time.sleep(0.004 if len(batch) == 1 else 0)  # one-image calls: 4 ms, under the 5 ms limit
        return batch[:, 0, 0]

    async def requests() -> None:
        batcher = make_batcher(run)
        batcher.start()
        await batcher.submit(images(0))  # timed in a thread: a one-image call takes 4 ms
        await batcher.submit(images(1, count=2))  # two images: in a thread, at once
        await batcher.submit(images(2))  # less than 4 ms after the last request came
        await asyncio.sleep(0.01)
        await batcher.submit(images(3))  # the last request came over 4 ms ago
        await batcher.drain(1)

    asyncio.run(requests())
    assert [count for count, _ in calls] == [1, 2, 1, 1]
    assert [name.startswith("batch-") for _, name in calls] == [True, True, True, False], calls


def test_a_request_that_timed_out_in_the_queue_stops_counting_against_it():
    release = threading.Event()
    metrics = Metrics()

    def run(batch: np.ndarray) -> np.ndarray:
        release.wait(5)
        return batch[:, 0, 0]

    async def scenario() -> None:
        batcher = Batcher("test:1", run, metrics, max_batch_size=1, max_wait_s=0, max_queue_images=4,
                          queue_timeout_s=5, request_timeout_s=0.1)  # fmt: skip
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(images(1)))  # held in the model
        await asyncio.sleep(0.02)
        with pytest.raises(InferenceTimeout):
            await batcher.submit(images(2, count=3))  # waits in the queue, gives up
        release.set()
        with pytest.raises(InferenceTimeout):
            await first
        await asyncio.sleep(0.05)  # the thread moves on and drops the abandoned request
        await batcher.submit(images(3, count=4))  # the queue has room for all four again
        await batcher.drain(1)

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("cnn_queue_images", {"model": "test:1"}) == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death
def test_a_batch_thread_that_dies_takes_its_batcher_out_of_service():
    """Its version stops counting as ready, and new requests get 503 instead of waiting in a dead queue."""

    def run(batch: np.ndarray) -> np.ndarray:
        return batch[:, 0, 0]

    async def scenario():
        batcher = make_batcher(run, max_batch_size=1, request_timeout_s=0.5)
        batcher.start()
        assert batcher.alive
        await batcher.submit(images(1, count=2))  # two images: never run on the event loop

        def die(batch):
            raise RuntimeError("outside the model call, where nothing catches it")

        batcher._execute = die
        stranded = asyncio.ensure_future(batcher.submit(images(2, count=2)))
        for _ in range(100):
            if not batcher.alive:
                break
            await asyncio.sleep(0.01)
        assert not batcher.alive
        with pytest.raises(ModelNotReady):
            await batcher.submit(images(3))
        with pytest.raises(InferenceTimeout):  # the one taken by the dying thread still gets an answer
            await stranded

    asyncio.run(scenario())
