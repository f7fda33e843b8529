"""A kept-alive HTTP/1.1 connection for POSTing small bodies from a background thread, at little CPU cost.

Each POST is one write of the request line, headers and body, and its response is parsed by httptools
(uvicorn's parser): about a quarter of the CPU of the standard library's client, whose response parsing
goes through the ``email`` package. Plain ``http`` and ``https`` URLs; a response that asks to close, or
any error, drops the connection and the next POST opens a new one.
"""

from __future__ import annotations

import select
import socket
import ssl
from urllib.parse import urlsplit

import httptools

_READ_BYTES = 65536


class PostError(OSError):
    """The POST got no complete HTTP response (refused, timed out, closed early or unparsable)."""


class _Unanswered(PostError):
    """The connection closed (or was reset) before any byte of a response."""


class _Response:
    """httptools' callbacks for one response: how far it has come, and whether the connection stays open
    (which the parser only tells until the message is complete)."""

    __slots__ = ("complete", "headers_complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.complete = self.headers_complete = self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.headers_complete = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


def _readable(connection: socket.socket) -> bool:
    """Whether the socket has something to read now (``poll``: unlike ``select``, any descriptor number)."""
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    return bool(poller.poll(0))


class HttpPoster:
    """POSTs to one URL over a connection kept open between calls (not thread-safe: one thread uses it)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.timeout_s = timeout_s
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        self._start = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
        self._socket: socket.socket | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """Send ``body`` with ``headers`` and return the response's status; :class:`PostError` (an
        ``OSError``) when no complete response came back. A kept-alive connection that the server has
        closed meanwhile is replaced, and the POST sent again on the new one."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"%scontent-length: %d\r\n%s\r\n%s" % (self._start, len(body), lines.encode("latin-1"), body)
        if self._socket is not None and _readable(self._socket):
            self.close()  # an idle connection with something to read: closed by the server
        reused = self._socket is not None
        try:
            try:
                return self._exchange(request)
            except _Unanswered:
                if not reused:
                    raise
                self.close()  # closed by the server as the request went out: once more, on a new one
                return self._exchange(request)
        except (OSError, httptools.HttpParserError) as exc:
            self.close()
            raise PostError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _exchange(self, request: bytes) -> int:
        if self._socket is None:
            connection = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_hostname=self.host)
            self._socket = connection
        response = _Response()
        parser = response.parser
        try:
            self._socket.sendall(request)
            data = self._socket.recv(_READ_BYTES)
        except ConnectionError as exc:
            raise _Unanswered(str(exc)) from exc
        if not data:
            raise _Unanswered("the connection closed before a response")
        while True:
            parser.feed_data(data)
            if response.complete:
                break
            data = self._socket.recv(_READ_BYTES)
            if not data:  # a body that ends with the connection: its status counts
                if not response.headers_complete:
                    raise PostError("the connection closed before a complete response")
                self.close()
                return parser.get_status_code()
        if not response.keep_alive:
            self.close()
        return parser.get_status_code()
