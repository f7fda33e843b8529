"""One middleware for what every HTTP exchange must respect: on a loopback bind, a ``Host`` that names
this server (400 otherwise: a page whose DNS name was rebound to 127.0.0.1 cannot reach it); and security
headers on every response: a Content-Security-Policy that the explorer page and /docs work under
(everything from this server, nothing framed), ``nosniff``, and no referrer."""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import error_response

# The explorer page: its own script and style files, pictures from the API as blobs, calls to this server.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (/docs) starts from an inline script and styles some elements inline.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class HttpPolicy:
    """``allowed_hosts``: the ``Host`` names answered besides the loopback names (``None``: any host)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] | None, docs_prefix: str = "/docs") -> None:
        self.app = app
        self.docs_prefix = docs_prefix
        self.hosts = None if allowed_hosts is None else LOOPBACK_NAMES | {name.lower() for name in allowed_hosts}
        self._page = [*_COMMON, (b"content-security-policy", PAGE_POLICY.encode())]
        self._docs = [*_COMMON, (b"content-security-policy", DOCS_POLICY.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._docs if scope["path"].startswith(self.docs_prefix) else self._page
        if self.hosts is not None:
            host = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"host"), "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
            if name.lower() not in self.hosts:
                message = (
                    f"Host {host[:100]!r} does not name this server (CNN_ALLOWED_HOSTS lists the names it answers)"
                )
                await self._refusal(400, message, extra)(scope, receive, send)
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":  # no route sets these itself
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)

    @staticmethod
    def _refusal(status: int, message: str, extra: list[tuple[bytes, bytes]]) -> ASGIApp:
        response = error_response(status, message)
        response.raw_headers.extend(extra)
        return response
