"""The native API under ``/api/v1``: models, layer summaries, predictions and feature maps.

``predict`` and ``feature-maps`` read the body (multipart files are parsed here, as transport) and hand
it to the pipeline with the pure codec of :mod:`service.codecs.native`.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from contract import ModelSummary
from service.codecs import native
from service.dependencies import get_pipeline, get_runtime, require_api_key
from service.errors import NotFound
from service.pipeline import InferencePipeline
from service.request import Operation, Polarity
from service.routing import versioned_route
from service.runtime import Runtime
from service.schemas import (
    FeatureMapsJSONRequest,
    FeatureMapsResponse,
    ModelDetail,
    ModelEntry,
    ModelList,
    PredictJSONRequest,
    PredictResponse,
    VersionStatus,
)

router = APIRouter(prefix="/api/v1", tags=["native"], dependencies=[Depends(require_api_key)])

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


async def _read_body(request: Request, media: str) -> bytes | list[bytes]:
    """The raw body, or for multipart the content of every file part."""
    if media != native.MULTIPART:
        return await request.body()
    settings = request.app.state.settings
    async with request.form(
        max_files=settings.max_images_per_request, max_part_size=settings.max_request_bytes
    ) as form:
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        return [await upload.read() for upload in uploads]


# -- models and summaries ---------------------------------------------------------------------------
@router.get("/models", response_model=ModelList, summary="List models and their versions")
async def list_models(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelList:
    return ModelList(
        models=[
            ModelEntry(
                name=name,
                default_version=runtime.find(name).version,
                versions=[
                    VersionStatus(version=v.version, state=v.state.value, error=v.error) for v in versions.values()
                ],
            )
            for name, versions in sorted(runtime.repository.models.items())
        ]
    )


@versioned_route(
    router, "get", "/models/{name}", response_model=ModelDetail, summary="Model card: architecture, input, classes"
)
async def model_detail(
    name: str, runtime: Annotated[Runtime, Depends(get_runtime)], version: int | None = None
) -> ModelDetail:
    model = runtime.find(name, version)
    detail = ModelDetail(name=model.name, version=model.version, state=model.state.value, error=model.error)
    if model.card is None:
        return detail
    card = model.card
    return detail.model_copy(
        update={
            "architecture": card.architecture,
            "created": card.created,
            "input": card.input,
            "output": card.output,
            "class_names": card.class_names,
            "feature_layers": card.feature_layers,
            "metrics": card.metrics,
            "training": card.training,
            "summary": card.summary,
        }
    )


@versioned_route(
    router, "get", "/models/{name}/summary", response_model=ModelSummary, summary="Per-layer architecture summary"
)
async def model_summary(
    name: str, runtime: Annotated[Runtime, Depends(get_runtime)], version: int | None = None
) -> ModelSummary:
    model = runtime.find(name, version)
    if model.card is None or model.card.summary is None:
        raise NotFound(f"model {model.label} has no layer summary ({model.state.value})")
    return model.card.summary


# -- predict and feature maps -------------------------------------------------------------------------
@versioned_route(
    router,
    "post",
    "/models/{name}/predict",
    response_model=PredictResponse,
    summary="Classify one or many images",
    description="Body: multipart/form-data with one or more files in field `files`; or a raw image body; or "
    "JSON with base64 `images` or a `tensor` (n×28×28[×1], `dtype` uint8 0–255 or float32 0–1).",
    openapi_extra=_body_doc(PredictJSONRequest, "files", many=True),
)
async def predict(
    name: str,
    request: Request,
    pipeline: Annotated[InferencePipeline, Depends(get_pipeline)],
    version: int | None = None,
    top: Annotated[int | None, Query(alias="top_k", ge=1, description="How many classes to rank.")] = None,
    polarity: Annotated[Polarity, Query(description="auto: invert light backgrounds.")] = Polarity.auto,
) -> Response:
    pipeline.admit(name, version)  # 404, or an early 503, before the body is read
    media = native.media_type(request.headers.get("content-type"))
    decode = partial(
        native.decode_predict, media=media, model=name, version=version,
        top_k=top or pipeline.settings.default_top_k, polarity=polarity,
    )  # fmt: skip
    return await pipeline.handle(decode, native.encode_predict, await _read_body(request, media))


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
    pipeline: Annotated[InferencePipeline, Depends(get_pipeline)],
    version: int | None = None,
    layer: Annotated[str | None, Query(description="Layer name; all layers when omitted (JSON only).")] = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> Response:
    pipeline.admit(name, version, Operation.feature_maps)
    media = native.media_type(request.headers.get("content-type"))
    as_png = format == "png" or (format is None and "image/png" in request.headers.get("accept", ""))
    decode = partial(
        native.decode_feature_maps, media=media, model=name, version=version,
        layer=layer, as_png=as_png, polarity=polarity,
    )  # fmt: skip
    return await pipeline.handle(decode, native.encode_feature_maps, await _read_body(request, media))
