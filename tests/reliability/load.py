"""A bounded load generator (asyncio + httpx) and small helpers shared by the load tests."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from . import payloads as p


@dataclass(frozen=True)
class Outcome:
    call: p.Call
    status: int | None  # None: the request failed without a response
    seconds: float
    finished: float  # time.monotonic() when it completed
    headers: httpx.Headers | None = None
    error: str = ""


async def run_load(
    base_url: str,
    calls: Sequence[p.Call],
    *,
    concurrency: int,
    duration_s: float | None = None,
    total: int | None = None,
    timeout_s: float = 30.0,
    keepalive: bool = True,
) -> list[Outcome]:
    """Send ``calls`` round-robin from ``concurrency`` workers until ``total`` requests or ``duration_s``.

    Both bounds apply when given; at least one is required. In-flight requests finish (each within
    ``timeout_s``) before this returns.
    """
    if duration_s is None and total is None:
        raise ValueError("give duration_s, total or both")
    deadline = time.monotonic() + duration_s if duration_s is not None else float("inf")
    budget = total if total is not None else 10**9
    counter = iter(range(budget))
    outcomes: list[Outcome] = []
    # Idle connections are dropped well before the server's keep-alive timeout (5 s), so a request is
    # never sent on a connection the server is closing at that moment.
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0, keepalive_expiry=2.0
    )

    async def worker(client: httpx.AsyncClient) -> None:
        for index in counter:
            if time.monotonic() >= deadline:
                return
            call = calls[index % len(calls)]
            started = time.monotonic()
            try:
                response = await call.asend(client)
                await response.aclose()
                outcome = Outcome(
                    call, response.status_code, time.monotonic() - started, time.monotonic(), response.headers
                )
            except httpx.HTTPError as exc:
                outcome = Outcome(call, None, time.monotonic() - started, time.monotonic(), error=repr(exc))
            outcomes.append(outcome)

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def failures(outcomes: Sequence[Outcome], ok: Callable[[Outcome], bool]) -> list[str]:
    return [f"{o.call.method} {o.call.path[:60]} → {o.status} {o.error}" for o in outcomes if not ok(o)]


def mixed_calls(layers: Sequence[str]) -> list[p.Call]:
    """Every API and endpoint kind: predictions of 1–8 images, feature maps, summaries and metadata."""
    image = p.encode(p.garment())
    jpeg = p.encode(p.garment(), "JPEG")
    return [
        p.native_files([image]),
        p.native_tensor(p.valid_batch(4, seed=1)),
        p.native_b64([image, jpeg]),
        p.native_raw(jpeg, "image/jpeg"),
        p.tfserving_b64([image]),
        p.tfserving_instances(p.valid_batch(2, seed=2)),
        p.v2_json(p.valid_batch(1, seed=3)),
        p.v2_binary(p.valid_batch(8, seed=4)),
        p.v2_bytes_binary([image, jpeg]),
        p.feature_maps_file(image, query=f"layer={layers[len(layers) // 2]}"),
        p.feature_maps_file(jpeg, query=f"layer={layers[0]}&format=png"),
        p.Call("GET", "/api/v1/models"),
        p.Call("GET", f"/api/v1/models/{p.MODEL}"),
        p.Call("GET", f"/api/v1/models/{p.MODEL}/summary"),
        p.Call("GET", f"/v1/models/{p.MODEL}"),
        p.Call("GET", f"/v1/models/{p.MODEL}/metadata"),
        p.Call("GET", f"/v2/models/{p.MODEL}"),
        p.Call("GET", f"/v2/models/{p.MODEL}/ready"),
    ]
