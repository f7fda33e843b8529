"""A direct ASGI handler for the hottest endpoint, TF Serving's ``:predict``.

For a one-image request, FastAPI's routing, dependency resolution and request objects cost the event
loop about as much CPU as parsing the body. This middleware answers
``POST /v1/models/{name}[/versions/{version}]:predict`` itself, with the same code as the documented
route (:func:`service.api_tfserving.predict`), and passes every other request on unchanged.
It sits inside the metrics and body-size middlewares, so both still apply. ``CNN_FAST_PATH=false``
turns it off (the FastAPI route then answers).
"""

from __future__ import annotations

import re

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import api_tfserving
from service.dependencies import check_api_key
from service.errors import ServiceError, error_response
from service.inference import Inference

# The two route templates of api_tfserving.tf_predict, with Starlette's default ``[^/]+`` parameters.
_PREDICT_PATH = re.compile(r"/v1/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+))?:predict")


class PredictFastPath:
    """ASGI middleware: TF Serving ``:predict`` requests are answered here, everything else passes on."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        # The documented routes, set as ``scope["route"]`` so the metrics label requests by their template.
        self.routes = {
            route.path: route
            for route in api_tfserving.router.routes
            if getattr(route, "endpoint", None) is api_tfserving.tf_predict
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inference: Inference | None = getattr(self.state, "inference", None)
        match = None
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and inference is not None
            and not scope.get("root_path")
        ):
            match = _PREDICT_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        name, version = match["name"], match["version"]
        template = "/v1/models/{name}/versions/{version}:predict" if version else "/v1/models/{name}:predict"
        scope["route"] = self.routes.get(template)
        scope["path_params"] = {"name": name, "version": version} if version else {"name": name}
        try:
            headers = dict(scope["headers"]) if inference.settings.api_key else {}
            check_api_key(
                inference.settings.api_key,
                _decode_header(headers.get(b"x-api-key")),
                _decode_header(headers.get(b"authorization")),
            )
            model = inference.admit(name, version)  # 404 or an early 503 before the body is read
            body = await _read_body(receive)
            if body is None:  # the client went away
                return
            content = await api_tfserving.predict(inference, model, body)
        except ServiceError as exc:
            await error_response(exc.status_code, exc.message, exc.headers)(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _decode_header(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
