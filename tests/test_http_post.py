"""The payload log's HTTP client (service/core/http_post.py) against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from service.core.http_post import HttpPoster, PostError
from tests.receivers import Receiver


@contextmanager
def scripted(answers: list[bytes]) -> Iterator[tuple[int, list[bytes], list[int]]]:
    """A server that reads one request per connection and writes the next scripted answer raw, then closes
    unless the answer is followed by more answers on the same connection (``b""`` ends a connection). Yields
    its port, the requests it read, and each request's connection number."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []
    connections: list[int] = []
    queue = list(answers)

    def read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def serve() -> None:
        number = 0
        while queue:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            number += 1
            with conn:
                while queue:
                    answer = queue.pop(0)
                    if answer == b"":
                        break
                    request = read_request(conn)
                    if not request:
                        break
                    requests.append(request)
                    connections.append(number)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], requests, connections
    finally:
        listener.close()
        thread.join(5)


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def test_posts_keep_one_connection_and_send_the_exact_headers_and_body() -> None:
    with Receiver() as receiver:
        poster = HttpPoster(f"{receiver.url}/events?x=1", timeout_s=5)
        bodies = [b'{"n": %d}' % n for n in range(20)]
        statuses = [poster.post(body, {"ce-id": str(n), "content-type": "application/json"})
                    for n, body in enumerate(bodies)]  # fmt: skip
        poster.close()
        posted = receiver.snapshot()
    assert statuses == [200] * 20
    assert [p.body for p in posted] == bodies
    assert [p.headers["ce-id"] for p in posted] == [str(n) for n in range(20)]
    assert {p.path for p in posted} == {"/events?x=1"}
    assert {p.headers["host"] for p in posted} == {f"127.0.0.1:{receiver.port}"}


def test_reuses_the_connection_and_reopens_after_connection_close() -> None:
    closing = b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbusy"
    with scripted([OK, OK, closing, b"", OK]) as (port, requests, connections):
        poster = HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=5)
        assert [poster.post(b"x", {}) for _ in range(4)] == [200, 200, 503, 200]
        poster.close()
    assert connections == [1, 1, 1, 2]
    assert all(request.startswith(b"POST / HTTP/1.1\r\n") for request in requests)


def test_an_idle_connection_the_server_closed_is_replaced_before_the_next_post() -> None:
    with scripted([OK, b"", OK]) as (port, requests, connections):
        poster = HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=5)
        assert poster.post(b"first", {}) == 200
        time.sleep(0.3)  # the server has closed the kept-alive connection meanwhile
        sent = []
        exchange = poster._exchange
        poster._exchange = lambda request: sent.append(request) or exchange(request)  # type: ignore[method-assign]
        assert poster.post(b"second", {}) == 200
    assert connections == [1, 2] and requests[1].endswith(b"second")
    assert len(sent) == 1  # seen closed before sending, not sent into the closed connection and again


def test_reads_chunked_and_close_delimited_bodies() -> None:
    chunked = b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    until_close = b"HTTP/1.0 201 Created\r\n\r\nsome body that ends with the connection"
    with scripted([chunked, OK, b"", until_close, b"", OK]) as (port, _, connections):
        poster = HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=5)
        assert [poster.post(b"x", {}) for _ in range(4)] == [202, 200, 201, 200]
    assert connections == [1, 1, 2, 3]


@pytest.mark.parametrize("answer", [b"", b"not http at all\r\n\r\n"], ids=["closed", "garbage"])
def test_no_valid_response_is_a_post_error_and_the_next_post_reconnects(answer: bytes) -> None:
    script = [b"", OK] if answer == b"" else [answer, b"", OK]
    with scripted(script) as (port, _, connections):
        poster = HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=5)
        with pytest.raises(PostError):
            poster.post(b"x", {})
        assert poster.post(b"x", {}) == 200
    assert connections[-1] == 2  # the second POST on a new connection


def test_a_refused_connection_and_a_silent_server_are_post_errors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog) and never answers
        port = silent.getsockname()[1]
        with pytest.raises(PostError, match="timed out"):
            HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=0.3).post(b"x", {})
    with pytest.raises(PostError):
        HttpPoster(f"http://127.0.0.1:{port}/", timeout_s=0.3).post(b"x", {})


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpPoster("ftp://127.0.0.1/", timeout_s=1)
