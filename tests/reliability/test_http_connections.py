"""Connections that hold a server without asking anything: one that sends nothing, one that sends its
headers a byte at a time, and an idle keep-alive one are closed after their timeouts, while a real
request on the same server is answered."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from .servers import HOST, running_server

HEADER_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None if it still holds it after ``seconds``)."""
    sock.settimeout(seconds)
    started = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_silent_slow_and_idle_connections_are_closed(bundled_repository: Path, tmp_path: Path):
    env = {"CNN_MODELS": "lenet5", "CNN_POLL_INTERVAL_S": "0", "CNN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "CNN_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S)}  # fmt: skip
    with running_server(bundled_repository, tmp_path / "server.log", env) as server:
        silent = socket.create_connection((HOST, server.port))
        slow = socket.create_connection((HOST, server.port))
        slow.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        idle = socket.create_connection((HOST, server.port))
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b" 200 " in idle.recv(4096)
        assert httpx.get(f"{server.base_url}/health/live", timeout=5).status_code == 200  # others are served
        for held in (silent, slow, idle):
            closed = _closed_within(held, HEADER_TIMEOUT_S + 2.0)
            assert closed is not None and closed <= HEADER_TIMEOUT_S + 1.0, closed
            held.close()
