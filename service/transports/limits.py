"""Request body size limit, enforced before the body is parsed (413 with a JSON error)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import PayloadTooLarge, error_response


class BodySizeLimit:
    """Refuse bodies over ``max_bytes``: by ``Content-Length`` up front, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body exceeds the limit of {self.max_bytes} bytes"
        for key, value in scope["headers"]:
            if key != b"content-length":
                continue
            if not value.isdigit():
                await error_response(
                    400, f"Content-Length must be a whole number of bytes, got {value[:32].decode('latin-1')!r}"
                )(scope, receive, send)
                return
            if int(value) > self.max_bytes:
                await error_response(413, message)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(message)
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:  # raised where no exception handler rendered it
            if not started:
                await error_response(413, message)(scope, receive, send)
