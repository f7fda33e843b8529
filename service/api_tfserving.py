"""TensorFlow Serving's REST API (``/v1/models/...``): status, metadata and predict.

Row (``instances``) and columnar (``inputs``) requests, ``{"b64": ...}`` values (decoded as image
files, then preprocessed like uploads), ``signature_name`` ``serving_default`` or ``feature_maps``, and
``{"error": ...}`` bodies, as TF Serving answers them. Request bodies are parsed straight into numpy
(the hot path); the JSON schema is documented from :class:`TFServingPredictRequest`.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.dependencies import get_inference, get_repository, require_api_key
from service.errors import InvalidInput
from service.inference import Inference
from service.preprocess import Polarity, decode_base64, tensor_from_json
from service.repository import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE, ModelRepository, ModelState, ModelVersion

router = APIRouter(prefix="/v1", tags=["tensorflow-serving"], dependencies=[Depends(require_api_key)])

_STATE = {ModelState.LOADING: "LOADING", ModelState.AVAILABLE: "AVAILABLE", ModelState.UNAVAILABLE: "END"}


class TFServingPredictRequest(BaseModel):
    """``{"signature_name"?, "instances": [...]}`` or ``{"signature_name"?, "inputs": ...}``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"instances": [{"b64": "iVBORw0KGgo..."}]}, {"inputs": [[[[0.0]]]]}]},
    )

    signature_name: str | None = Field(None, description="serving_default (default) or feature_maps.")
    instances: list[Any] | None = Field(None, description="Row format: one entry per image.")
    inputs: Any | None = Field(None, description="Columnar format: the batch tensor, or {input_name: tensor}.")


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def _status(model: ModelVersion) -> dict[str, Any]:
    ok = model.state is not ModelState.UNAVAILABLE
    return {
        "version": str(model.version),
        "state": _STATE.get(model.state, "UNKNOWN"),
        "status": {"error_code": "OK" if ok else "UNKNOWN", "error_message": "" if ok else (model.error or "")},
    }


def _tensor_info(name: str, shape: list[int]) -> dict[str, Any]:
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False},
        "name": f"{name}:0",
    }


def _signature_defs(model: ModelVersion) -> dict[str, Any]:
    image = {model.input_name: _tensor_info(model.input_name, model.card["input"]["shape"])}
    layers = {layer["name"]: layer for layer in model.card.get("summary", {}).get("layers", [])}
    feature_outputs = {
        name: _tensor_info(name, [-1, *layers[name]["output_shape"]]) if name in layers else _tensor_info(name, [-1])
        for name in model.feature_layers
    }
    return {
        SERVING_SIGNATURE: {
            "inputs": image,
            "outputs": {model.output_name: _tensor_info(model.output_name, model.card["output"]["shape"])},
            "method_name": "tensorflow/serving/predict",
        },
        FEATURE_MAPS_SIGNATURE: {
            "inputs": image,
            "outputs": feature_outputs,
            "method_name": "tensorflow/serving/predict",
        },
    }


# -- decoding -----------------------------------------------------------------------------------------
def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _unwrap_named(value: Any, model: ModelVersion) -> Any:
    """``{"images": x}`` → ``x``; refuse other input names."""
    if isinstance(value, dict) and not _is_b64(value):
        if set(value) != {model.input_name}:
            raise InvalidInput(
                f"unknown input name(s) {sorted(value)}; the signature's only input is {model.input_name!r}"
            )
        return value[model.input_name]
    return value


async def _decode(payload: Any, model: ModelVersion, inference: Inference) -> tuple[np.ndarray, bool]:
    """Request JSON → (validated batch, row_format)."""
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object")
    unknown = set(payload) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise InvalidInput(f"unknown key(s) in request: {sorted(unknown)}")
    if "instances" in payload and "inputs" in payload:
        raise InvalidInput("Expecting only one of 'inputs' or 'instances' to be set")
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'instances' must be a non-empty list")
        values, row_format = [_unwrap_named(row, model) for row in rows], True
    elif "inputs" in payload:
        values, row_format = _unwrap_named(payload["inputs"], model), False
        if _is_b64(values):
            values = [values]
    else:
        raise InvalidInput("Missing 'inputs' or 'instances' key")
    if isinstance(values, list) and values and all(_is_b64(v) for v in values):
        blobs = [decode_base64(v["b64"], f"instance {i}") for i, v in enumerate(values)]
        return await inference.decode_images(model, blobs, Polarity.auto), row_format
    if isinstance(values, list) and any(_is_b64(v) for v in values):
        raise InvalidInput("mixing {'b64': ...} images and tensors in one request is not supported")
    tensor = tensor_from_json(values, np.float32)
    return inference.check_tensor(model, tensor), row_format


def _encode(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """TF Serving's response layout; arrays stay numpy (orjson writes them natively)."""
    if len(outputs) == 1:
        (only,) = outputs.values()
        return {"predictions": only} if row_format else {"outputs": only}
    if row_format:
        count = len(next(iter(outputs.values())))
        return {"predictions": [{name: value[i] for name, value in outputs.items()} for i in range(count)]}
    return {"outputs": outputs}


def _array_to_list(value: Any) -> Any:
    """orjson's fallback for arrays it does not write natively (not C-contiguous)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


# -- routes ------------------------------------------------------------------------------------------
@router.get("/models/{name}", summary="Model version status")
@router.get("/models/{name}/versions/{version}", summary="Model version status")
async def model_status(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: str | None = None
) -> Response:
    models = [repository.find(name, version)] if version is not None else list(repository.models.get(name, {}).values())
    if not models:
        repository.find(name)  # raises the 404
    return _json({"model_version_status": [_status(m) for m in sorted(models, key=lambda m: -m.version)]})


@router.get("/models/{name}/metadata", summary="Signature metadata")
@router.get("/models/{name}/versions/{version}/metadata", summary="Signature metadata")
async def model_metadata(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: str | None = None
) -> Response:
    model = repository.get(name, version)
    return _json(
        {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": _signature_defs(model)}},
        }
    )


_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TFServingPredictRequest.model_json_schema()}},
    }
}


async def predict(inference: Inference, model: ModelVersion, body: bytes) -> bytes:
    """One ``:predict`` call on an admitted model: the request body in, the JSON response out (errors raise)."""
    payload = await inference.parse_json(body)
    signature = (payload.get("signature_name") if isinstance(payload, dict) else None) or SERVING_SIGNATURE
    if signature not in (SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE):
        raise InvalidInput(f'Serving signature name: "{signature}" not found in signature def')
    images, row_format = await _decode(payload, model, inference)
    del payload  # hundreds of lists per image: free them now, not after inference
    if signature == SERVING_SIGNATURE:
        outputs = {model.output_name: await inference.classify(model, images, api="tfserving")}
    else:
        outputs = await inference.feature_maps(model, images, model.feature_layers)
    return orjson.dumps(_encode(outputs, row_format), default=_array_to_list, option=orjson.OPT_SERIALIZE_NUMPY)


@router.post("/models/{name}:predict", summary="Predict (TF Serving)", openapi_extra=_PREDICT_DOC)
@router.post("/models/{name}/versions/{version}:predict", summary="Predict (TF Serving)", openapi_extra=_PREDICT_DOC)
async def tf_predict(
    name: str, request: Request, inference: Annotated[Inference, Depends(get_inference)], version: str | None = None
) -> Response:
    # Requests normally reach predict() through service.fastpath.PredictFastPath; this route documents
    # the endpoint and answers when CNN_FAST_PATH=false.
    model = inference.admit(name, version)
    return Response(await predict(inference, model, await request.body()), media_type="application/json")
