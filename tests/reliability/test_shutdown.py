"""SIGTERM under load: in-flight requests complete with 200, new connections are refused at once
(not left hanging, not answered with a 5xx), and ``python -m service`` exits with status 0."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from . import payloads as p
from .servers import ServerProcess

IMAGES_PER_REQUEST = 256  # the most one request may carry; each runs as its own model call
BUSY_FOR_S = 2.0  # about how long the server should still be busy when SIGTERM arrives
MAX_IN_FLIGHT = 32
PROBE_INTERVAL_S = 0.05


def _post(server: ServerProcess, call: p.Call) -> tuple[int, float]:
    """Send on a fresh connection; return the status and the time.monotonic() it completed."""
    with httpx.Client(base_url=server.base_url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        status = call.send(client).status_code
    return status, time.monotonic()


def _probe(server: ServerProcess) -> str:
    """A new connection's fate: 'refused', 'reset', 'timeout' or the HTTP status.

    'reset': the kernel completed the handshake from the listen backlog just before the server closed
    its listening socket, so the connection is closed unanswered (no request was processed).
    """
    try:
        with httpx.Client(base_url=server.base_url, timeout=5) as client:
            return str(client.get("/health/live").status_code)
    except httpx.ConnectError:
        return "refused"
    except httpx.RemoteProtocolError:
        return "reset"
    except httpx.TimeoutException:
        return "timeout"


@pytest.mark.reliability_slow
def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    spawn_server: Callable[..., ServerProcess], model_repository: Path
) -> None:
    # A queue that holds every request sent (on a fast CPU they are many): this is about draining, not admission.
    server = spawn_server(model_repository, {"CNN_MAX_QUEUE_IMAGES": str(MAX_IN_FLIGHT * IMAGES_PER_REQUEST)})
    heavy = p.v2_binary(p.valid_batch(IMAGES_PER_REQUEST))
    assert _post(server, heavy)[0] == 200  # warm-up: this batch size is traced before the clock starts
    started = time.monotonic()
    assert _post(server, heavy)[0] == 200
    in_flight = max(4, min(MAX_IN_FLIGHT, math.ceil(BUSY_FOR_S / (time.monotonic() - started)) + 1))

    with ThreadPoolExecutor(in_flight) as pool:
        requests: list[Future[tuple[int, float]]] = [pool.submit(_post, server, heavy) for _ in range(in_flight)]
        first_done = threading.Event()
        for future in requests:
            future.add_done_callback(lambda _: first_done.set())
        assert first_done.wait(60), "no request completed"
        # The server is still busy with the others (each is one 256-image model call).
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        probes: list[tuple[float, str]] = []
        deadline = signalled + 10
        while time.monotonic() < deadline:
            probes.append((time.monotonic(), _probe(server)))
            if probes[-1][1] == "refused":
                break
            time.sleep(PROBE_INTERVAL_S)
        results = [future.result(timeout=120) for future in requests]

    assert [status for status, _ in results] == [200] * in_flight
    last_completed = max(completed for _, completed in results)
    assert last_completed > signalled, "every request finished before SIGTERM: nothing was in flight"
    outcomes = [outcome for _, outcome in probes]
    assert outcomes[-1] == "refused", outcomes
    assert all(outcome in ("refused", "reset", "200") for outcome in outcomes), outcomes
    refused_at = probes[-1][0]
    assert refused_at < last_completed, "new connections were still accepted until the last request finished"

    assert server.process.wait(timeout=60) == 0
    log = server.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


def test_sigterm_when_idle_exits_0_quickly(spawn_server: Callable[..., ServerProcess], model_repository: Path) -> None:
    server = spawn_server(model_repository)
    with httpx.Client(base_url=server.base_url) as client:
        assert p.native_tensor(np.zeros((1, 28, 28, 1))).send(client).status_code == 200
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert _probe(server) == "refused"
