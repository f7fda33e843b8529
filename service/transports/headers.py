"""Security headers on every HTTP response: a Content-Security-Policy that the explorer page and /docs
work under (everything from this server, nothing framed), ``nosniff``, and no referrer."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class SecurityHeaders:
    def __init__(self, app: ASGIApp, docs_prefix: str = "/docs") -> None:
        self.app = app
        self.docs_prefix = docs_prefix
        self._page = [*_COMMON, (b"content-security-policy", PAGE_POLICY.encode())]
        self._docs = [*_COMMON, (b"content-security-policy", DOCS_POLICY.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._docs if scope["path"].startswith(self.docs_prefix) else self._page

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":  # no route sets these itself
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
