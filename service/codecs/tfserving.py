"""TensorFlow Serving's REST ``:predict`` (and KServe v1's ``:explain``) ↔ the internal request.

Row (``instances``) and columnar (``inputs``) requests, ``{"b64": ...}`` values (decoded as image
files, then preprocessed like uploads), ``signature_name`` ``serving_default`` or ``feature_maps``, as
TF Serving answers them. Bodies are parsed by hand straight into the request (the hot path); the JSON
schema is documented by :class:`TFServingPredictRequest`. A body whose ``instances`` or ``inputs`` is an
array of numbers is read without building a Python list per row (:func:`_numeric_payload`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contract import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE
from service.core import tensors, wire
from service.core.errors import InvalidInput
from service.core.request import Api, ExplainSpec, InferenceRequest, InferenceResult, Operation

_TENSOR_KEYS = frozenset({"instances", "inputs"})
_KEYS = frozenset({"signature_name", *_TENSOR_KEYS})


class TFServingPredictRequest(BaseModel):
    """``{"signature_name"?, "instances": [...]}`` or ``{"signature_name"?, "inputs": ...}``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"instances": [{"b64": "iVBORw0KGgo..."}]}, {"inputs": [[[[0.0]]]]}]},
    )

    signature_name: str | None = Field(None, description="serving_default (default) or feature_maps.")
    instances: list[Any] | None = Field(None, description="Row format: one entry per image.")
    inputs: Any | None = Field(None, description="Columnar format: the batch tensor, or {input_name: tensor}.")


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _unwrap_named(value: Any, names: set[str]) -> Any:
    """``{"<input>": x}`` → ``x``, remembering the name (checked against the signature later)."""
    if type(value) is dict and not _is_b64(value):
        if len(value) != 1:
            raise InvalidInput(f"unknown input name(s) {sorted(value)}; the signature has exactly one input")
        ((name, value),) = value.items()
        names.add(name)
    return value


def decode_predict(body: bytes) -> InferenceRequest:
    payload = _payload(body)
    signature = payload.get("signature_name") or SERVING_SIGNATURE
    if signature not in (SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE):
        raise InvalidInput(f'Serving signature name: "{signature}" not found in signature def')
    operation = Operation.classify if signature == SERVING_SIGNATURE else Operation.feature_maps
    return _request(payload, InferenceRequest(Api.tfserving, operation))


def decode_explain(body: bytes, *, spec: ExplainSpec) -> InferenceRequest:
    """KServe's v1 ``:explain``: the body of ``:predict`` (``serving_default`` only); what to explain
    comes from the query string."""
    payload = _payload(body)
    signature = payload.get("signature_name") or SERVING_SIGNATURE
    if signature != SERVING_SIGNATURE:
        raise InvalidInput(f"explain runs on signature {SERVING_SIGNATURE!r}, not {signature!r}")
    return _request(payload, InferenceRequest(Api.tfserving, Operation.explain, explain=spec))


def _payload(body: bytes) -> dict[str, Any]:
    numeric = _numeric_payload(body)
    if numeric is not None:
        return numeric
    payload = wire.parse_json(body)
    if type(payload) is not dict:
        raise InvalidInput("request body must be a JSON object")
    if not payload.keys() <= _KEYS:
        raise InvalidInput(f"unknown key(s) in request: {sorted(set(payload) - _KEYS)}")
    return payload


def _numeric_payload(body: bytes) -> dict[str, Any] | None:
    """The payload of a body whose only tensor is an array of numbers, that tensor as an array; ``None`` for
    any other body (bad ones included: the general path words their errors)."""
    member = tensors.numeric_json_member(body, _TENSOR_KEYS, {"signature_name"})
    if member is None:
        return None
    key, array, others = member
    payload: dict[str, Any] = {key: array}
    if others.get("signature_name") is not None:
        payload["signature_name"] = others["signature_name"]
    return payload


def _request(payload: dict[str, Any], request: InferenceRequest) -> InferenceRequest:
    """Fill in the request's images or tensor, input name and layout from ``instances`` or ``inputs``."""
    values = payload.get("instances", payload.get("inputs"))
    if isinstance(values, np.ndarray):  # from _numeric_payload: one tensor, no names, no images
        request.rows = "instances" in payload
        request.tensor = tensors.tensor(values, tensors.BY_NAME["float32"])
        return request
    names: set[str] = set()
    if "instances" in payload:
        if "inputs" in payload:
            raise InvalidInput("Expecting only one of 'inputs' or 'instances' to be set")
        rows = payload["instances"]
        if type(rows) is not list or not rows:
            raise InvalidInput("'instances' must be a non-empty list")
        values, request.rows = [_unwrap_named(row, names) for row in rows], True
    elif "inputs" in payload:
        values, request.rows = _unwrap_named(payload["inputs"], names), False
        if _is_b64(values):
            values = [values]
        if type(values) is not list:
            raise InvalidInput("'inputs' must be the batch: a list with one entry per image")
    else:
        raise InvalidInput("Missing 'inputs' or 'instances' key")
    if len(names) > 1:
        raise InvalidInput(f"unknown input name(s) {sorted(names)}; the signature has exactly one input")
    request.input_name = names.pop() if names else None
    if values and all(_is_b64(v) for v in values):
        request.images = [wire.b64decode(v["b64"], f"instance {i}") for i, v in enumerate(values)]
    elif any(_is_b64(v) for v in values):
        raise InvalidInput("mixing {'b64': ...} images and tensors in one request is not supported")
    else:
        request.tensor = tensors.tensor(values, tensors.BY_NAME["float32"])
    return request


def encode_predict(result: InferenceResult) -> Response:
    """TF Serving's response layout: ``predictions`` (rows) or ``outputs`` (columnar)."""
    if result.probabilities is not None:
        outputs = {result.card.output.name: result.probabilities}
    else:
        outputs = result.activations or {}
    if len(outputs) == 1:
        (only,) = outputs.values()
        content: dict[str, Any] = {"predictions": only} if result.request.rows else {"outputs": only}
    elif result.request.rows:
        count = len(next(iter(outputs.values())))
        content = {"predictions": [{name: value[i] for name, value in outputs.items()} for i in range(count)]}
    else:
        content = {"outputs": outputs}
    return Response(wire.dumps(content), media_type="application/json")


def encode_explain(result: InferenceResult) -> Response:
    """``{"explanations": [...]}``: per image, the class explained, its probability and the heatmap."""
    explanation = result.explanation
    assert explanation is not None
    names = result.card.class_names
    rows = [
        {
            "method": explanation.method.value,
            "layer": explanation.layer,
            "target": int(target),
            "label": names[int(target)],
            "probability": float(probabilities[target]),
            "heatmap": heatmap,
        }
        for target, probabilities, heatmap in zip(
            explanation.targets, explanation.probabilities, explanation.heatmaps, strict=True
        )
    ]
    return Response(wire.dumps({"explanations": rows}), media_type="application/json")
