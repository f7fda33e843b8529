"""TensorFlow Serving's REST API (``/v1/models/...``): status, metadata and predict; and KServe v1's
``:explain`` on the same paths.

``:predict`` is the hot path: a :class:`~service.transports.routing.DirectRoute` that hands the body to the
pipeline with the pure codec of :mod:`service.codecs.tfserving`. Errors are ``{"error": ...}`` bodies,
as TF Serving answers them.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.codecs import tfserving
from service.core.request import ExplainSpec, Operation
from service.core.wire import json_response
from service.protocol import tfserving as views
from service.protocol.plane import DataPlane
from service.transports.dependencies import explain_spec, get_plane, require_api_key
from service.transports.routing import (
    body_reader,
    client_gone,
    direct_post_route,
    naming_version,
    request_target,
    version_ref,
    versioned_route,
)

TAGS = ["tensorflow-serving"]
router = APIRouter(prefix="/v1", tags=TAGS, dependencies=[Depends(require_api_key)])


@versioned_route(router, "get", "/models/{name}", summary="Model version status (newest first)")
async def model_status(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    return json_response(views.model_status(plane.table, name, version_ref(version, label)))


@versioned_route(router, "get", "/models/{name}/metadata", summary="Signature metadata")
async def model_metadata(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    record = plane.table.ready(name, version_ref(version, label))
    plan = record.loaded.plan if record.loaded else None
    return json_response(
        {
            "model_spec": {"name": record.name, "signature_name": "", "version": str(record.version)},
            "metadata": {
                "signature_def": {"signature_def": views.signature_defs(record.card)},
                "serving": plan.model_dump(mode="json") if plan else None,
            },
        }
    )


_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": tfserving.TFServingPredictRequest.model_json_schema()}},
    }
}


@versioned_route(
    router,
    "post",
    "/models/{name}:explain",
    summary="Explain (KServe v1)",
    description="KServe's v1 `:explain`: the body of `:predict` (`instances` or `inputs`, tensors or "
    '`{"b64": ...}` images); the method and its parameters in the query string. Answers '
    '`{"explanations": [{"method", "layer", "target", "label", "probability", "heatmap"}, ...]}`, one per '
    "image, each heatmap the model's input size with values in [0, 1].",
    openapi_extra=_PREDICT_DOC,
)
async def explain(
    name: str,
    request: Request,
    plane: Annotated[DataPlane, Depends(get_plane)],
    spec: Annotated[ExplainSpec, Depends(explain_spec)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    target = request_target(request, name, version, label, Operation.explain)
    decode = partial(tfserving.decode_explain, spec=spec)
    return await plane.pipeline.handle(target, body_reader(request), decode, _ENCODE_EXPLAIN, client_gone(request))


_ENCODE_EXPLAIN = naming_version(tfserving.encode_explain)
_ENCODE_PREDICT = naming_version(tfserving.encode_predict)


async def predict(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    target = request_target(request, name, version, label)
    pipeline = request.app.state.plane.pipeline
    return await pipeline.handle(
        target, body_reader(request), tfserving.decode_predict, _ENCODE_PREDICT, client_gone(request)
    )


def add_predict_routes(router: APIRouter, **kwargs: Any) -> None:
    """``POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict`` (:func:`direct_post_route`)."""
    direct_post_route(
        router,
        "/v1/models/{name}:predict",
        tags=TAGS,
        summary="Predict (TF Serving)",
        openapi_extra=_PREDICT_DOC,
        **kwargs,
    )(predict)
