"""The native API under ``/api/v1``: models, layer summaries, predictions, feature maps and explanations.

``predict``, ``feature-maps`` and ``explain`` read the body (multipart files are parsed here, as transport) and hand
it to the pipeline with the pure codec of :mod:`service.codecs.native`.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from contract import ModelSummary
from service.codecs import native
from service.codecs.native_schemas import (
    ExplainResponse,
    FeatureMapsJSONRequest,
    FeatureMapsResponse,
    PredictJSONRequest,
    PredictResponse,
)
from service.core.errors import NotFound
from service.core.request import LABEL_PATTERN, ExplainSpec, Operation, Polarity
from service.inference.pipeline import Reader
from service.protocol import native as views
from service.protocol.native import LabelAssignment, ModelDetail, ModelEntry, ModelList
from service.protocol.plane import DataPlane
from service.transports.dependencies import explain_spec, get_plane, require_api_key, require_model_control
from service.transports.routing import (
    body_reader,
    client_gone,
    direct_post_route,
    naming_version,
    request_target,
    version_ref,
    versioned_route,
)

TAGS = ["native"]
router = APIRouter(prefix="/api/v1", tags=TAGS, dependencies=[Depends(require_api_key)])

_BINARY = {"type": "string", "format": "binary"}


def _body_doc(json_model: type, multipart_field: str, many: bool) -> dict:
    field = {"type": "array", "items": _BINARY} if many else _BINARY
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {multipart_field: field}, "required": [multipart_field]}
                },
                "application/json": {"schema": json_model.model_json_schema()},
                **{media: {"schema": _BINARY} for media in native.IMAGE_TYPES},
            },
        }
    }


def _body_reader(request: Request, media: str) -> Reader[bytes] | Reader[list[bytes]]:
    """The raw body, or for multipart the content of every file part (read after admission)."""
    if media != native.MULTIPART:
        return body_reader(request)

    async def read() -> tuple[list[bytes], int]:
        settings = request.app.state.plane.settings
        async with request.form(
            max_files=settings.max_images_per_request, max_part_size=settings.max_request_bytes
        ) as form:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            parts = [await upload.read() for upload in uploads]
        return parts, sum(map(len, parts))

    return read


_ENCODE_PREDICT = naming_version(native.encode_predict)
_ENCODE_FEATURE_MAPS = naming_version(native.encode_feature_maps)
_ENCODE_EXPLAIN = naming_version(native.encode_explain)


def _wants_png(format: str | None, request: Request) -> bool:
    """``format=png``, or no format and an ``Accept`` header that asks for PNG."""
    return format == "png" or (format is None and "image/png" in request.headers.get("accept", ""))


# -- models and summaries ---------------------------------------------------------------------------
@router.get("/models", response_model=ModelList, summary="List models, their versions, states, labels and rollouts")
async def list_models(plane: Annotated[DataPlane, Depends(get_plane)]) -> ModelList:
    names = sorted(plane.table.names)
    return ModelList(models=[views.model_entry(plane.table, plane.pipeline.shadows, name) for name in names])


@router.put(
    "/models/{name}/labels/{label}",
    response_model=ModelEntry,
    summary="Point a version label at an AVAILABLE version",
    description="Holds until the model config file changes. 400 when the version is not AVAILABLE, "
    "404 when it does not exist; 403 when model control is turned off.",
    dependencies=[Depends(require_model_control)],
)
async def set_label(
    name: str,
    label: Annotated[str, Path(pattern=LABEL_PATTERN)],
    body: LabelAssignment,
    plane: Annotated[DataPlane, Depends(get_plane)],
) -> ModelEntry:
    plane.control.set_label(name, label, body.version)
    return views.model_entry(plane.table, plane.pipeline.shadows, name)


@router.delete(
    "/models/{name}/labels/{label}",
    response_model=ModelEntry,
    summary="Remove a version label",
    dependencies=[Depends(require_model_control)],
)
async def delete_label(name: str, label: str, plane: Annotated[DataPlane, Depends(get_plane)]) -> ModelEntry:
    plane.control.set_label(name, label, None)
    return views.model_entry(plane.table, plane.pipeline.shadows, name)


@versioned_route(
    router, "get", "/models/{name}", response_model=ModelDetail, summary="Model card: architecture, input, classes"
)
async def model_detail(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> ModelDetail:
    return views.model_detail(plane.table, plane.pipeline.shadows, name, version_ref(version, label))


@versioned_route(
    router, "get", "/models/{name}/summary", response_model=ModelSummary, summary="Per-layer architecture summary"
)
async def model_summary(
    name: str,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
) -> ModelSummary:
    detail = views.model_detail(plane.table, plane.pipeline.shadows, name, version_ref(version, label))
    if detail.summary is None:
        raise NotFound(f"model {detail.name}:{detail.version} has no layer summary ({detail.state})")
    return detail.summary


# -- predict and feature maps -------------------------------------------------------------------------
async def predict(
    request: Request,
    name: str,
    version: str | None = None,
    label: str | None = None,
    top: Annotated[int | None, Query(alias="top_k", ge=1, description="How many classes to rank.")] = None,
    polarity: Annotated[Polarity, Query(description="auto: invert light backgrounds.")] = Polarity.auto,
) -> Response:
    plane = request.app.state.plane
    media = native.media_type(request.headers.get("content-type"))
    decode = partial(native.decode_predict, media=media, top_k=top or plane.settings.default_top_k, polarity=polarity)
    target = request_target(request, name, version, label)
    reader = _body_reader(request, media)
    return await plane.pipeline.handle(target, reader, decode, _ENCODE_PREDICT, client_gone(request))


def add_predict_routes(router: APIRouter, **kwargs: Any) -> None:
    """``POST /api/v1/models/{name}[/versions/{version}|/labels/{label}]/predict`` (:func:`direct_post_route`)."""
    direct_post_route(
        router, "/api/v1/models/{name}/predict", tags=TAGS, response_model=PredictResponse,
        summary="Classify one or many images",
        description="Body: multipart/form-data with one or more files in field `files`; or a raw image body; or "
        "JSON with base64 `images` or a `tensor` (n×28×28[×1], `dtype` uint8 0–255 or float32 0–1).",
        openapi_extra=_body_doc(PredictJSONRequest, "files", many=True), **kwargs,
    )(predict)  # fmt: skip


@versioned_route(
    router,
    "post",
    "/models/{name}/feature-maps",
    response_model=FeatureMapsResponse,
    summary="Activations of a layer (or all layers) for one image",
    description="`format=json` (default) returns arrays; `format=png` (or `Accept: image/png`) returns a grid "
    "picture of one layer, one tile per channel.",
    responses={200: {"content": {"image/png": {}}}},
    openapi_extra=_body_doc(FeatureMapsJSONRequest, "file", many=False),
)
async def feature_maps(
    name: str,
    request: Request,
    plane: Annotated[DataPlane, Depends(get_plane)],
    version: str | None = None,
    label: str | None = None,
    layer: Annotated[str | None, Query(description="Layer name; all layers when omitted (JSON only).")] = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> Response:
    media = native.media_type(request.headers.get("content-type"))
    decode = partial(
        native.decode_feature_maps, media=media, layer=layer, as_png=_wants_png(format, request), polarity=polarity
    )
    target = request_target(request, name, version, label, Operation.feature_maps)
    return await plane.pipeline.handle(
        target, _body_reader(request, media), decode, _ENCODE_FEATURE_MAPS, client_gone(request)
    )


@versioned_route(
    router,
    "post",
    "/models/{name}/explain",
    response_model=ExplainResponse,
    summary="Why the model chose a class for one image: Grad-CAM, saliency or occlusion",
    description="The image as for `feature-maps` (one file, raw image, base64 or tensor). `format=json` "
    "(default) returns the heatmap as a 28×28 array in [0, 1]; `format=png` (or `Accept: image/png`) returns "
    "it laid over the model's input, upscaled. Grad-CAM takes a convolutional `layer`; occlusion takes "
    "`patch_size` and `stride`.",
    responses={200: {"content": {"image/png": {}}}},
    openapi_extra=_body_doc(FeatureMapsJSONRequest, "file", many=False),
)
async def explain(
    name: str,
    request: Request,
    plane: Annotated[DataPlane, Depends(get_plane)],
    spec: Annotated[ExplainSpec, Depends(explain_spec)],
    version: str | None = None,
    label: str | None = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> Response:
    media = native.media_type(request.headers.get("content-type"))
    decode = partial(
        native.decode_explain, media=media, spec=spec, as_png=_wants_png(format, request), polarity=polarity
    )
    target = request_target(request, name, version, label, Operation.explain)
    return await plane.pipeline.handle(
        target, _body_reader(request, media), decode, _ENCODE_EXPLAIN, client_gone(request)
    )
