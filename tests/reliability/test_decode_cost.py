"""Decompression bombs: small files of many pixels are decoded off the event loop (judged by their
headers, not their bytes), a request's pixels are capped in all, and the request timeout covers decoding
and stops the images not yet begun."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .servers import ServerProcess, running_server

TIMEOUT_S = 2.0
PREDICT = "/api/v1/models/lenet5/predict"


def _bomb(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bombs() -> list[bytes]:
    """40 M pixels each, in under 256 KB (small enough that their bytes alone would keep them on the event
    loop): 8-bit and 16-bit PNG, and a deflated float TIFF."""
    return [_bomb("L", (40_000_000, 1), "PNG"), _bomb("I;16", (6300, 6300), "PNG"), _bomb("F", (40_000_000, 1), "TIFF")]


@pytest.fixture(scope="module")
def server(bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CNN_MODELS": "lenet5", "CNN_POLL_INTERVAL_S": "0", "CNN_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
           "CNN_MAX_REQUEST_PIXELS": "1000000000"}  # fmt: skip
    with running_server(bundled_repository, tmp_path_factory.mktemp("bombs") / "server.log", env) as process:
        yield process


def _files(blobs: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.img", blob, "application/octet-stream")) for i, blob in enumerate(blobs)]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_server_answers_while_bombs_are_decoded(server: ServerProcess, bombs: list[bytes]):
    assert all(len(b) < 256 * 1024 for b in bombs)
    answered: list[int] = []

    def send(blob: bytes) -> None:  # one small file per request
        answered.append(httpx.post(server.base_url + PREDICT, files=_files([blob]), timeout=60).status_code)

    senders = [threading.Thread(target=send, args=(blob,)) for blob in bombs]
    for sender in senders:
        sender.start()
    time.sleep(0.3)  # decoding has begun
    slowest = 0.0
    small = {"tensor": np.zeros((1, 28, 28)).tolist()}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(5):
            started = time.monotonic()
            assert client.get("/health/live").status_code == 200
            assert client.post(PREDICT, json=small).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
    for sender in senders:
        sender.join(60)
    assert slowest < 0.5, f"the event loop stalled for {slowest:.2f} s while images were decoded"
    assert len(answered) == len(bombs) and set(answered) <= {200, 504}  # classified, or over the 2 s timeout


def _idle_cpu_seconds(pid: int, quiet_s: float = 0.5, limit_s: float = 15.0) -> float:
    """The process's CPU seconds once it stops spending (less than 0.05 s in ``quiet_s``)."""
    deadline, last = time.monotonic() + limit_s, _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _cpu_seconds(pid)
        if now - last < 0.05:
            return now
        last = now
    return last


def _decoding_cost(server: ServerProcess, blob: bytes) -> float:
    """Server CPU seconds to take one bomb alone (over the timeout or not, its decoding runs to the end)."""
    before = _idle_cpu_seconds(server.pid)
    httpx.post(server.base_url + PREDICT, files=_files([blob]), timeout=60)
    return _idle_cpu_seconds(server.pid) - before


def test_the_timeout_covers_decoding_and_stops_it(server: ServerProcess, bombs: list[bytes]):
    costs = [_decoding_cost(server, blob) for blob in bombs]
    started = time.monotonic()
    copies = 6  # eighteen bombs, 720 M pixels: under the server's cap
    answer = httpx.post(server.base_url + PREDICT, files=_files(bombs * copies), timeout=60)
    elapsed = time.monotonic() - started
    assert answer.status_code == 504 and "decoding" in answer.json()["error"]
    assert elapsed < TIMEOUT_S + 1.0, elapsed
    before = _cpu_seconds(server.pid)
    spent = _idle_cpu_seconds(server.pid) - before
    # The image being decoded finishes (at most the costliest bomb). The ones not begun would cost far more: all
    # of them less what one decoding thread can have spent before the timeout.
    allowed = max(costs) + 0.5
    left = copies * sum(costs) - TIMEOUT_S
    assert left > 2 * allowed, f"the bombs cost too little here to tell ({costs})"
    assert spent < allowed, f"the server kept decoding for {spent:.1f} CPU seconds after the request timed out"


def test_a_request_is_capped_in_pixels_before_decoding(bundled_repository: Path, tmp_path: Path, bombs: list[bytes]):
    env = {"CNN_MODELS": "lenet5", "CNN_POLL_INTERVAL_S": "0"}  # the default cap: 80 M pixels
    with running_server(bundled_repository, tmp_path / "server.log", env) as process:
        started = time.monotonic()
        answer = httpx.post(process.base_url + PREDICT, files=_files(bombs), timeout=60)
        assert answer.status_code == 413 and "pixels in all" in answer.json()["error"]
        assert time.monotonic() - started < 1.0  # refused from the headers, nothing decoded


def test_a_client_that_goes_away_stops_the_decoding(bundled_repository: Path, tmp_path: Path, bombs: list[bytes]):
    env = {"CNN_MODELS": "lenet5", "CNN_POLL_INTERVAL_S": "0", "CNN_REQUEST_TIMEOUT_S": "60",
           "CNN_MAX_REQUEST_PIXELS": "1000000000"}  # fmt: skip
    with running_server(bundled_repository, tmp_path / "server.log", env) as process:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(process.base_url + PREDICT, files=_files(bombs * 3), timeout=httpx.Timeout(60, read=0.7))
        before = _cpu_seconds(process.pid)
        time.sleep(6.0)
        spent = _cpu_seconds(process.pid) - before
        assert spent < 3.5, f"the server kept decoding for {spent:.1f} CPU seconds after its client left"
        assert httpx.get(process.base_url + "/health/live", timeout=5).status_code == 200
