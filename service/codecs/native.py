"""The native API's ``predict``, ``feature-maps`` and ``explain`` bodies ↔ the internal request.

A body is multipart files (read by the route), a raw image, or JSON with base64 ``images``/``image``
or a ``tensor``; answers are :class:`~service.codecs.native_schemas.PredictResponse`, a feature-map JSON document
or a PNG grid of one layer, and :class:`~service.codecs.native_schemas.ExplainResponse` or a heatmap overlay PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.codecs.native_schemas import (
    ExplainResponse,
    FeatureMapsJSONRequest,
    PredictJSONRequest,
)
from service.codecs.visualize import feature_grid, heatmap_overlay, to_png
from service.core import tensors, wire
from service.core.errors import InvalidInput, UnsupportedMediaType, describe_validation
from service.core.request import Api, ExplainSpec, InferenceRequest, InferenceResult, Operation, Polarity

MULTIPART = "multipart/form-data"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")
_RAW_TYPES = (*IMAGE_TYPES, "application/octet-stream")
_JSON_TYPES = ("application/json", "text/json", "")


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header (JSON when absent)."""
    return (content_type or "application/json").split(";")[0].strip().lower()


def _parsed(body: bytes, schema: type[BaseModel]) -> BaseModel:
    try:
        return schema.model_validate(wire.parse_json(body))
    except ValidationError as exc:
        raise InvalidInput(f"invalid JSON body: {describe_validation(exc)}") from None


def _decode(content: bytes | Sequence[bytes], media: str, request: InferenceRequest, *, single: bool) -> None:
    """Fill in the request's images or tensor from the body."""
    if media == MULTIPART:
        request.images = list(content)
        if not request.images:
            field = "the image as form field 'file'" if single else "images as form field 'files'"
            raise InvalidInput(f"multipart body has no file parts; send {field}")
    elif media in _RAW_TYPES:
        request.images = [bytes(content)]
    elif media in _JSON_TYPES:
        parsed = _parsed(cast(bytes, content), FeatureMapsJSONRequest if single else PredictJSONRequest)
        if parsed.tensor is not None:
            request.tensor = tensors.tensor([parsed.tensor] if single else parsed.tensor, tensors.BY_NAME[parsed.dtype])
            return
        if single:
            request.images = [wire.b64decode(parsed.image, "image")]
        else:
            request.images = [wire.b64decode(b64, f"image {i}") for i, b64 in enumerate(parsed.images or [])]
            if not request.images:
                raise InvalidInput("no images in the request")
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media!r}; use multipart/form-data, application/json or an image type"
        )
    if single and len(request.images) != 1:
        raise InvalidInput(f"send exactly one image, got {len(request.images)}")


def decode_predict(
    content: bytes | Sequence[bytes],
    *,
    media: str,
    top_k: int,
    polarity: Polarity,
) -> InferenceRequest:
    request = InferenceRequest(Api.native, polarity=polarity, top_k=top_k)
    _decode(content, media, request, single=False)
    return request


def decode_feature_maps(
    content: bytes | Sequence[bytes],
    *,
    media: str,
    layer: str | None,
    as_png: bool,
    polarity: Polarity,
) -> InferenceRequest:
    if as_png and layer is None:
        raise InvalidInput("a PNG shows one layer: add ?layer=<name>")
    request = InferenceRequest(
        Api.native, Operation.feature_maps,
        polarity=polarity, outputs=(layer,) if layer is not None else None, as_png=as_png,
    )  # fmt: skip
    _decode(content, media, request, single=True)
    return request


def decode_explain(
    content: bytes | Sequence[bytes],
    *,
    media: str,
    spec: ExplainSpec,
    as_png: bool,
    polarity: Polarity,
) -> InferenceRequest:
    request = InferenceRequest(Api.native, Operation.explain, polarity=polarity, explain=spec, as_png=as_png)
    _decode(content, media, request, single=True)
    return request


def _score(class_id: int, probabilities: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    return {"class_id": class_id, "label": class_names[class_id], "probability": float(probabilities[class_id])}


def _ranked(row: np.ndarray, class_names: list[str], k: int) -> list[dict[str, Any]]:
    order = [int(row.argmax())] if k == 1 else np.argsort(-row, kind="stable")[:k]  # ties: the lower class first
    return [_score(int(i), row, class_names) for i in order]


def encode_predict(result: InferenceResult) -> Response:
    """A :class:`PredictResponse`, written straight from dicts (on every request: building the models
    and dumping them costs several times more)."""
    class_names = result.card.class_names
    k = min(result.request.top_k or 1, len(class_names))
    predictions = []
    for row in result.probabilities if result.probabilities is not None else ():
        ranked = _ranked(row, class_names, k)
        best = ranked[0]
        predictions.append({"label": best["label"], "class_id": best["class_id"], "probability": best["probability"],
                            "top_k": ranked, "probabilities": row.tolist()})  # fmt: skip
    response = {"model_name": result.model_name, "model_version": result.model_version, "predictions": predictions}
    return Response(wire.dumps(response), media_type="application/json")


def encode_feature_maps(result: InferenceResult) -> Response:
    """A PNG grid of the one asked layer, or every asked layer's activation of the image as JSON."""
    activations = result.activations or {}
    if result.request.as_png:
        (values,) = activations.values()
        return Response(to_png(feature_grid(values[0])), media_type="image/png")
    layers = [
        {"name": name, "shape": list(values.shape[1:]), "min": float(values.min()), "max": float(values.max()),
         "data": values[0]}
        for name, values in activations.items()
    ]  # fmt: skip
    content = {"model_name": result.model_name, "model_version": result.model_version, "layers": layers}
    return Response(wire.dumps(content), media_type="application/json")


def encode_explain(result: InferenceResult) -> Response:
    """The one image's heatmap as JSON, or laid over the model's input as a PNG."""
    explanation = result.explanation
    assert explanation is not None
    heatmap = explanation.heatmaps[0]
    if result.request.as_png:
        return Response(to_png(heatmap_overlay(explanation.inputs[0], heatmap)), media_type="image/png")
    names, probabilities = result.card.class_names, explanation.probabilities[0]
    response = ExplainResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        method=explanation.method.value,
        layer=explanation.layer,
        target=_score(int(explanation.targets[0]), probabilities, names),
        prediction=_score(int(probabilities.argmax()), probabilities, names),
        shape=list(heatmap.shape),
        heatmap=[],
    )
    content = response.model_dump()
    content["heatmap"] = heatmap  # written by orjson straight from the array
    return Response(wire.dumps(content), media_type="application/json")
