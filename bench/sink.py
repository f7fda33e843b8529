"""A local receiver for the observability runs: answers every HTTP POST with 200 at little CPU cost (an
OTLP/HTTP trace export or a CloudEvent alike) and counts what it got.

``python -m bench.sink --port N``; ``GET /count`` answers ``{"posts": n, "bytes": b}``. It parses with
httptools on uvloop, keeps connections alive, and looks at nothing but the body's length: it stands in
for a collector or an event sink on the same machine, not for their processing.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools
import uvloop

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Counts:
    posts = 0
    bytes = 0


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() == b"GET" and self.url == b"/count":
            body = json.dumps({"posts": Counts.posts, "bytes": Counts.bytes}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))  # fmt: skip
        else:
            Counts.posts += 1
            Counts.bytes += self.size
            self.transport.write(_OK)
        self.url, self.size = b"", 0


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
