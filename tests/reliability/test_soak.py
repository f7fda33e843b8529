"""Soak: 64 concurrent clients over every kind of endpoint for 60 s, with no failed request and a
resident set that stays flat (under 10% growth from the 5th to the 60th second)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .load import Outcome, failures, mixed_calls, run_load
from .payloads import Call
from .servers import ServerProcess

CLIENTS = 64
DURATION_S = 60.0
BASELINE_AT_S = 5.0
MAX_RSS_GROWTH = 0.10
MIN_REQUESTS = 1000

logger = logging.getLogger(__name__)


async def _soak(server: ServerProcess, calls: list[Call]) -> tuple[list[Outcome], list[tuple[float, int]]]:
    samples: list[tuple[float, int]] = []
    started = time.monotonic()

    async def sample_rss() -> None:
        while time.monotonic() - started < DURATION_S + 1:
            samples.append((time.monotonic() - started, server.rss_kib()))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_rss())
    outcomes = await run_load(server.base_url, calls, concurrency=CLIENTS, duration_s=DURATION_S, timeout_s=30)
    sampler.cancel()
    return outcomes, samples


@pytest.mark.reliability_slow
def test_soak_64_clients_60_s(spawn_server: Callable[..., ServerProcess], model_repository: Path) -> None:
    server = spawn_server(model_repository)
    with httpx.Client(base_url=server.base_url) as client:
        layers = client.get("/api/v1/models/fashion_cnn").json()["feature_layers"]
    calls = mixed_calls(layers)

    outcomes, samples = asyncio.run(_soak(server, calls))

    failed = failures(outcomes, lambda o: o.status == 200)
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:20]}"
    assert len(outcomes) >= MIN_REQUESTS, f"only {len(outcomes)} requests in {DURATION_S:g} s"
    assert {id(o.call) for o in outcomes} == {id(c) for c in calls}, "some endpoint kinds were never exercised"
    baseline = next(rss for t, rss in samples if t >= BASELINE_AT_S)
    final = samples[-1][1]
    logger.info(
        "soak: %d requests (%.0f/s), RSS %d KiB at %gs → %d KiB at %.0fs (%+.1f%%); every 10 s: %s",
        len(outcomes), len(outcomes) / DURATION_S, baseline, BASELINE_AT_S, final, samples[-1][0],
        100 * (final / baseline - 1), [rss for t, rss in samples if round(t) % 10 == 0],
    )  # fmt: skip
    assert samples[-1][0] >= DURATION_S - 1
    assert final <= baseline * (1 + MAX_RSS_GROWTH), f"RSS {baseline} → {final} KiB: {samples}"
    assert server.alive()
