"""The native API under ``/api/v1``: models, layer summaries, predictions, feature maps and explanations.

``predict``, ``feature-maps`` and ``explain`` read the body (multipart files are parsed here, as transport) and hand
it to the pipeline with the pure codec of :mod:`service.codecs.native`.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from contract import ModelSummary
from service.codecs import native
from service.dependencies import explain_spec, get_pipeline, get_runtime, require_api_key, require_model_control
from service.errors import NotFound
from service.explain import default_gradcam_layer, gradcam_layers
from service.model_config import LABEL_PATTERN
from service.pipeline import InferencePipeline
from service.repository import ModelVersion, VersionState
from service.request import ExplainSpec, Operation, Polarity
from service.routing import version_ref, versioned_route
from service.runtime import Runtime
from service.schemas import (
    ExplainResponse,
    FeatureMapsJSONRequest,
    FeatureMapsResponse,
    LabelAssignment,
    ModelDetail,
    ModelEntry,
    ModelList,
    PredictJSONRequest,
    PredictResponse,
    Transition,
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


def _wants_png(format: str | None, request: Request) -> bool:
    """``format=png``, or no format and an ``Accept`` header that asks for PNG."""
    return format == "png" or (format is None and "image/png" in request.headers.get("accept", ""))


# -- models and summaries ---------------------------------------------------------------------------
def _version_status(model: ModelVersion) -> VersionStatus:
    transitions = [Transition(state=state.value, at=at) for state, at in model.transitions]
    return VersionStatus(version=model.version, state=model.state.value, error=model.error, transitions=transitions)


def _model_entry(runtime: Runtime, name: str) -> ModelEntry:
    versions = runtime.repository.versions(name)
    default = runtime.find(name) if versions else None
    labels = {label: runtime.find(name, label).version for label in runtime.repository.labels.get(name, {})}
    return ModelEntry(
        name=name,
        default_version=default.version if default and runtime.is_ready(default) else None,
        labels=labels,
        versions=[_version_status(v) for v in versions],
    )


@router.get("/models", response_model=ModelList, summary="List models, their versions, states and labels")
async def list_models(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelList:
    return ModelList(models=[_model_entry(runtime, name) for name in sorted(runtime.model_names)])


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
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> ModelEntry:
    runtime.set_label(name, label, body.version)
    return _model_entry(runtime, name)


@router.delete(
    "/models/{name}/labels/{label}",
    response_model=ModelEntry,
    summary="Remove a version label",
    dependencies=[Depends(require_model_control)],
)
async def delete_label(name: str, label: str, runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelEntry:
    runtime.set_label(name, label, None)
    return _model_entry(runtime, name)


@versioned_route(
    router, "get", "/models/{name}", response_model=ModelDetail, summary="Model card: architecture, input, classes"
)
async def model_detail(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: int | None = None,
    label: str | None = None,
) -> ModelDetail:
    model = runtime.find(name, version_ref(version, label))
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
            "gradcam_layers": gradcam_layers(card),
            "gradcam_default": default_gradcam_layer(card) if card.summary is not None else None,
            "metrics": card.metrics,
            "training": card.training,
            "summary": card.summary,
            "serving": model.plan if model.state is VersionState.AVAILABLE else None,
        }
    )


@versioned_route(
    router, "get", "/models/{name}/summary", response_model=ModelSummary, summary="Per-layer architecture summary"
)
async def model_summary(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: int | None = None,
    label: str | None = None,
) -> ModelSummary:
    model = runtime.find(name, version_ref(version, label))
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
    label: str | None = None,
    top: Annotated[int | None, Query(alias="top_k", ge=1, description="How many classes to rank.")] = None,
    polarity: Annotated[Polarity, Query(description="auto: invert light backgrounds.")] = Polarity.auto,
) -> Response:
    ref = version_ref(version, label)
    pipeline.admit(name, ref)  # 404, or an early 503, before the body is read
    media = native.media_type(request.headers.get("content-type"))
    decode = partial(
        native.decode_predict, media=media, model=name, version=ref,
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
    label: str | None = None,
    layer: Annotated[str | None, Query(description="Layer name; all layers when omitted (JSON only).")] = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> Response:
    ref = version_ref(version, label)
    pipeline.admit(name, ref, Operation.feature_maps)
    media = native.media_type(request.headers.get("content-type"))
    as_png = _wants_png(format, request)
    decode = partial(
        native.decode_feature_maps, media=media, model=name, version=ref,
        layer=layer, as_png=as_png, polarity=polarity,
    )  # fmt: skip
    return await pipeline.handle(decode, native.encode_feature_maps, await _read_body(request, media))


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
    pipeline: Annotated[InferencePipeline, Depends(get_pipeline)],
    spec: Annotated[ExplainSpec, Depends(explain_spec)],
    version: int | None = None,
    label: str | None = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> Response:
    ref = version_ref(version, label)
    pipeline.admit(name, ref, Operation.explain)
    media = native.media_type(request.headers.get("content-type"))
    as_png = _wants_png(format, request)
    decode = partial(
        native.decode_explain, media=media, model=name, version=ref, spec=spec, as_png=as_png, polarity=polarity
    )
    return await pipeline.handle(decode, native.encode_explain, await _read_body(request, media))
