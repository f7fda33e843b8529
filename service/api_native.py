"""The native API under ``/api/v1``: models, layer summaries, predictions and feature maps."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.dependencies import get_inference, get_repository, require_api_key
from service.errors import InvalidInput, NotFound, UnsupportedMediaType
from service.inference import Inference, top_k
from service.preprocess import Polarity, decode_base64, tensor_from_json
from service.repository import ModelRepository, ModelVersion
from service.routing import versioned_route
from service.schemas import (
    ClassScore,
    FeatureMapsJSONRequest,
    FeatureMapsResponse,
    ImagePrediction,
    LayerActivation,
    ModelDetail,
    ModelEntry,
    ModelList,
    ModelSummary,
    PredictJSONRequest,
    PredictResponse,
    VersionStatus,
)
from service.visualize import feature_grid, to_png

router = APIRouter(prefix="/api/v1", tags=["native"], dependencies=[Depends(require_api_key)])

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")
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
                **{media: {"schema": _BINARY} for media in _IMAGE_TYPES},
            },
        }
    }


async def _uploaded_files(request: Request, inference: Inference) -> list[bytes]:
    settings = inference.settings
    async with request.form(
        max_files=settings.max_images_per_request, max_part_size=settings.max_request_bytes
    ) as form:
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        return [await upload.read() for upload in uploads]


async def _read_images(
    request: Request, inference: Inference, model: ModelVersion, polarity: Polarity, *, single: bool
) -> np.ndarray:
    """Decode the request body (multipart files, a raw image, or JSON) into a validated batch."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        blobs = await _uploaded_files(request, inference)
        if not blobs:
            raise InvalidInput("multipart body has no file parts; send images as form field 'files'")
    elif media in _IMAGE_TYPES or media == "application/octet-stream":
        blobs = [await request.body()]
    elif media in ("application/json", "text/json", ""):
        payload = await inference.parse_json(await request.body())
        schema = FeatureMapsJSONRequest if single else PredictJSONRequest
        try:
            parsed = schema.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput(f"invalid JSON body: {exc.errors(include_url=False, include_input=False)}") from None
        if parsed.tensor is not None:
            tensor = tensor_from_json(parsed.tensor, None)
            if single:
                tensor = tensor[np.newaxis]
            if parsed.dtype == "uint8" and tensor.dtype.kind == "f":
                raise InvalidInput("dtype uint8 needs whole numbers 0–255")
            if parsed.dtype == "float32":
                tensor = tensor.astype(np.float32)
            return inference.check_tensor(model, tensor)
        blobs = (
            [decode_base64(parsed.image, "image")]
            if single
            else [decode_base64(b64, f"image {i}") for i, b64 in enumerate(parsed.images or [])]
        )
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media!r}; use multipart/form-data, application/json or an image type"
        )
    if single and len(blobs) != 1:
        raise InvalidInput(f"send exactly one image, got {len(blobs)}")
    return await inference.decode_images(model, blobs, polarity)


# -- models and summaries ---------------------------------------------------------------------------
@router.get("/models", response_model=ModelList, summary="List models and their versions")
async def list_models(repository: Annotated[ModelRepository, Depends(get_repository)]) -> ModelList:
    return ModelList(
        models=[
            ModelEntry(
                name=name,
                default_version=repository.find(name).version,
                versions=[
                    VersionStatus(version=v.version, state=v.state.value, error=v.error) for v in versions.values()
                ],
            )
            for name, versions in sorted(repository.models.items())
        ]
    )


@versioned_route(
    router, "get", "/models/{name}", response_model=ModelDetail, summary="Model card: architecture, input, classes"
)
async def model_detail(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: int | None = None
) -> ModelDetail:
    model = repository.find(name, version)
    card = model.card
    return ModelDetail(
        name=model.name,
        version=model.version,
        state=model.state.value,
        error=model.error,
        architecture=card.get("architecture"),
        created=card.get("created"),
        input=card.get("input"),
        output=card.get("output"),
        class_names=card.get("class_names", []),
        feature_layers=model.feature_layers if card else [],
        metrics=card.get("metrics", {}),
        training=card.get("training", {}),
        summary=card.get("summary"),
    )


@versioned_route(
    router, "get", "/models/{name}/summary", response_model=ModelSummary, summary="Per-layer architecture summary"
)
async def model_summary(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: int | None = None
) -> ModelSummary:
    model = repository.find(name, version)
    if "summary" not in model.card:
        raise NotFound(f"model {model.label} has no layer summary ({model.state.value})")
    return ModelSummary.model_validate(model.card["summary"])


# -- predict ----------------------------------------------------------------------------------------
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
    inference: Annotated[Inference, Depends(get_inference)],
    version: int | None = None,
    top: Annotated[int | None, Query(alias="top_k", ge=1, description="How many classes to rank.")] = None,
    polarity: Annotated[Polarity, Query(description="auto: invert light backgrounds.")] = Polarity.auto,
) -> PredictResponse:
    model = inference.admit(name, version)
    images = await _read_images(request, inference, model, polarity, single=False)
    probabilities = await inference.classify(model, images, api="native")
    k = min(top or inference.settings.default_top_k, len(model.class_names))
    predictions = []
    for row in probabilities:
        ranked = [
            ClassScore(class_id=i, label=label, probability=p) for i, label, p in top_k(row, model.class_names, k)
        ]
        best = ranked[0]
        predictions.append(
            ImagePrediction(
                label=best.label,
                class_id=best.class_id,
                probability=best.probability,
                top_k=ranked,
                probabilities=row.tolist(),
            )
        )
    return PredictResponse(model_name=model.name, model_version=model.version, predictions=predictions)


# -- feature maps -----------------------------------------------------------------------------------
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
    inference: Annotated[Inference, Depends(get_inference)],
    version: int | None = None,
    layer: Annotated[str | None, Query(description="Layer name; all layers when omitted (JSON only).")] = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="Response format.")] = None,
    polarity: Annotated[Polarity, Query()] = Polarity.auto,
) -> FeatureMapsResponse | Response:
    model = inference.repository.get(name, version)
    wants_png = format == "png" or (format is None and "image/png" in request.headers.get("accept", ""))
    layers = model.layer_names(layer)
    if wants_png and len(layers) != 1:
        raise InvalidInput("a PNG shows one layer: add ?layer=<name>")
    images = await _read_images(request, inference, model, polarity, single=True)
    activations = await inference.feature_maps(model, images, layers)
    if wants_png:
        return Response(to_png(feature_grid(activations[layers[0]][0])), media_type="image/png")
    return FeatureMapsResponse(
        model_name=model.name,
        model_version=model.version,
        layers=[
            LayerActivation(
                name=layer_name,
                shape=list(values.shape[1:]),
                min=float(values.min()),
                max=float(values.max()),
                data=values[0].tolist(),
            )
            for layer_name, values in activations.items()
        ],
    )
