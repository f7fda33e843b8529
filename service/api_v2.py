"""Open Inference Protocol v2 (KServe / Triton) over REST, with the binary tensor data extension.

Inputs: the model's one input as FP32/FP64 (values in [0, 1]), UINT8 (0–255) or BYTES (encoded image
files: base64 strings in JSON, or length-prefixed raw bytes in binary). Output: ``probabilities`` (FP32).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.dependencies import get_inference, get_repository, require_api_key
from service.errors import InvalidInput
from service.inference import Inference
from service.preprocess import Polarity, tensor_from_json
from service.repository import ModelRepository, ModelVersion
from service.routing import versioned_route

router = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"], dependencies=[Depends(require_api_key)])

SERVER_NAME = "cnn-serving"
SERVER_VERSION = "0.1.0"
HEADER_LENGTH = "inference-header-content-length"
_MAX_RANK = 8
_MAX_DIMENSION = 2**31 - 1
_NUMERIC = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "UINT8": np.dtype("u1")}


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferOutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """The JSON part of an inference request (binary tensors, if any, follow it in the body)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[InferOutputRequest] | None = None


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelReady(BaseModel):
    name: str
    ready: bool


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=SERVER_VERSION, extensions=["binary_tensor_data"])


@versioned_route(router, "get", "/models/{name}", response_model=ModelMetadata, summary="Model metadata")
async def model_metadata(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: str | None = None
) -> ModelMetadata:
    model = repository.get(name, version)
    return ModelMetadata(
        name=model.name,
        versions=[str(v) for v in sorted(repository.models[model.name])],
        platform="tensorflow_savedmodel",
        inputs=[TensorMetadata(name=model.input_name, datatype="FP32", shape=model.card["input"]["shape"])],
        outputs=[TensorMetadata(name=model.output_name, datatype="FP32", shape=model.card["output"]["shape"])],
    )


@versioned_route(
    router,
    "get",
    "/models/{name}/ready",
    response_model=ModelReady,
    summary="Model readiness",
    responses={503: {"model": ModelReady}},
)
async def model_ready(
    name: str, repository: Annotated[ModelRepository, Depends(get_repository)], version: str | None = None
) -> Response:
    model = repository.find(name, version)
    return _json({"name": model.name, "ready": model.ready}, 200 if model.ready else 503)


# -- decoding ----------------------------------------------------------------------------------------
def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton's BYTES serialization: each element is a 4-byte little-endian length, then the bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("BYTES tensor data is truncated (incomplete length prefix)")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput("BYTES tensor data is truncated (element shorter than its length)")
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def _expected_count(shape: list[int]) -> int:
    if len(shape) > _MAX_RANK:
        raise InvalidInput(f"input shape {shape} has more than {_MAX_RANK} dimensions")
    if any(d < 0 or d > _MAX_DIMENSION for d in shape):
        raise InvalidInput(f"input shape {shape} has a dimension outside 0–{_MAX_DIMENSION}")
    return math.prod(shape)  # exact: an int64 product can wrap around to a count that matches the data


async def _decode_input(tensor: InferInput, binary: bytes, model: ModelVersion, inference: Inference) -> np.ndarray:
    """The request's one input (JSON ``data`` or the binary section after the header) → validated batch."""
    if tensor.name != model.input_name:
        raise InvalidInput(f"unknown input {tensor.name!r}; the model's input is {model.input_name!r}")
    size = (tensor.parameters or {}).get("binary_data_size")
    raw: bytes | None = None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InvalidInput(f"binary_data_size {size!r} does not fit the {len(binary)} bytes sent")
        raw = binary[:size]
    elif tensor.data is None:
        raise InvalidInput(f"input {tensor.name!r} has neither 'data' nor binary_data_size")
    count = _expected_count(tensor.shape)

    if tensor.datatype == "BYTES":
        if raw is not None:
            blobs = _bytes_elements(raw)
        else:
            flat = np.asarray(tensor.data, dtype=object).reshape(-1).tolist()
            if not all(isinstance(item, str) for item in flat):
                raise InvalidInput("BYTES elements in JSON must be base64 strings of image files")
            try:
                blobs = [base64.b64decode(item, validate=True) for item in flat]
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(f"BYTES element is not valid base64 ({exc})") from None
        if len(blobs) != count:
            raise InvalidInput(f"shape {tensor.shape} needs {count} BYTES elements, got {len(blobs)}")
        return await inference.decode_images(model, blobs, Polarity.auto)

    dtype = _NUMERIC.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"unsupported datatype {tensor.datatype!r}; use FP32, FP64, UINT8 or BYTES")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"shape {tensor.shape} of {tensor.datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=dtype)
    else:
        array = tensor_from_json(tensor.data, None).reshape(-1)
        if array.size != count:
            raise InvalidInput(f"shape {tensor.shape} needs {count} values, got {array.size}")
        if tensor.datatype == "UINT8" and array.dtype.kind == "f":
            raise InvalidInput("UINT8 data must be whole numbers 0–255")
        if tensor.datatype != "UINT8":
            array = array.astype(dtype)
    return inference.check_tensor(model, array.reshape(tensor.shape))


def _wants_binary(request: InferRequest, output: str) -> bool:
    if (request.parameters or {}).get("binary_data_output"):
        return True
    for entry in request.outputs or []:
        if entry.name == output:
            return bool((entry.parameters or {}).get("binary_data"))
    return False


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline a pydantic schema's ``$defs``: its ``#/$defs/...`` references do not resolve inside OpenAPI."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


# -- inference ---------------------------------------------------------------------------------------
_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_defs(InferRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header (length in Inference-Header-Content-Length) followed by tensor bytes.",
            },
        },
    }
}


@versioned_route(router, "post", "/models/{name}/infer", summary="Inference (v2)", openapi_extra=_INFER_DOC)
async def infer(
    name: str, request: Request, inference: Annotated[Inference, Depends(get_inference)], version: str | None = None
) -> Response:
    model = inference.admit(name, version)
    header, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    payload = await inference.parse_json(header)
    try:
        parsed = InferRequest.model_validate(payload)
    except ValueError as exc:
        raise InvalidInput(f"invalid inference request: {exc}") from None
    if len(parsed.inputs) != 1:
        raise InvalidInput(f"the model takes one input ({model.input_name!r}), got {len(parsed.inputs)}")
    for entry in parsed.outputs or []:
        if entry.name != model.output_name:
            raise InvalidInput(f"unknown output {entry.name!r}; the model's output is {model.output_name!r}")
    images = await _decode_input(parsed.inputs[0], binary, model, inference)
    probabilities = np.ascontiguousarray(await inference.classify(model, images, api="v2"), dtype="<f4")

    output: dict[str, Any] = {"name": model.output_name, "datatype": "FP32", "shape": list(probabilities.shape)}
    response: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if parsed.id is not None:
        response["id"] = parsed.id
    response["outputs"] = [output]
    if not _wants_binary(parsed, model.output_name):
        output["data"] = probabilities.reshape(-1).tolist()
        return _json(response)
    payload_bytes = probabilities.tobytes()
    output["parameters"] = {"binary_data_size": len(payload_bytes)}
    header_bytes = orjson.dumps(response)
    return Response(
        header_bytes + payload_bytes,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header_bytes))},
    )
