"""Open Inference Protocol v2 (KServe / Triton) ``infer`` ↔ the internal request, with binary tensors.

Inputs: the model's one input as FP32/FP64 (values in [0, 1]), UINT8 (0–255) or BYTES (encoded image
files: base64 strings in JSON, or length-prefixed raw bytes in binary). Output: the model's output as
FP32, in JSON or, when asked for, as binary data after the JSON header.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from service.core import tensors, wire
from service.core.errors import InvalidInput, describe_validation
from service.core.request import Api, InferenceRequest, InferenceResult

HEADER_LENGTH = "inference-header-content-length"


# -- wire schemas ---------------------------------------------------------------------------------------
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


# -- decoding ---------------------------------------------------------------------------------------------
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


def _binary_section(tensor: InferInput, binary: bytes) -> bytes | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise InvalidInput(f"input {tensor.name!r} has neither 'data' nor binary_data_size")
        return None
    if type(size) is not int or size < 0 or size > len(binary):  # not bool: True is an int in Python
        raise InvalidInput(f"binary_data_size {size!r} does not fit the {len(binary)} bytes sent")
    return binary[:size]


def _decode_input(tensor: InferInput, binary: bytes, request: InferenceRequest) -> None:
    """The request's one input (JSON ``data`` or the binary section after the header) → images or tensor."""
    raw = _binary_section(tensor, binary)
    shape = tensors.checked_shape(tensor.shape)
    if tensor.datatype == tensors.BYTES_V2:
        if raw is not None:
            blobs = tensors.length_prefixed(raw)
        else:
            flat = np.asarray(tensor.data, dtype=object).reshape(-1).tolist()
            if not all(isinstance(item, str) for item in flat):
                raise InvalidInput("BYTES elements in JSON must be base64 strings of image files")
            blobs = [wire.b64decode(item, f"BYTES element {i}") for i, item in enumerate(flat)]
        tensors.element_count(shape, len(blobs), "BYTES elements")
        request.images = blobs
        return
    dtype = tensors.BY_V2.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"unsupported datatype {tensor.datatype!r}; use {', '.join(tensors.BY_V2)} or BYTES")
    request.tensor = tensors.tensor(raw if raw is not None else tensor.data or [], dtype, shape)


def decode_infer(body: bytes, *, header_length: str | None) -> InferenceRequest:
    header, binary = _split_body(body, header_length)
    try:
        parsed = InferRequest.model_validate(wire.parse_json(header))
    except ValidationError as exc:
        raise InvalidInput(f"invalid inference request: {describe_validation(exc)}") from None
    if len(parsed.inputs) != 1:
        raise InvalidInput(f"the model takes one input, got {len(parsed.inputs)}")
    outputs = parsed.outputs or []
    request = InferenceRequest(
        Api.v2,
        input_name=parsed.inputs[0].name,
        outputs=tuple(entry.name for entry in outputs) or None,
        binary_output=bool((parsed.parameters or {}).get("binary_data_output"))
        or any((entry.parameters or {}).get("binary_data") for entry in outputs),
        request_id=parsed.id,
    )  # fmt: skip
    _decode_input(parsed.inputs[0], binary, request)
    return request


# -- encoding ---------------------------------------------------------------------------------------------
def encode_infer(result: InferenceResult) -> Response:
    probabilities = np.ascontiguousarray(result.probabilities, dtype="<f4")
    output: dict[str, Any] = {"name": result.card.output.name, "datatype": "FP32", "shape": list(probabilities.shape)}
    response: dict[str, Any] = {"model_name": result.model_name, "model_version": str(result.model_version)}
    if result.request.request_id is not None:
        response["id"] = result.request.request_id
    response["outputs"] = [output]
    if not result.request.binary_output:
        output["data"] = probabilities.reshape(-1)
        return Response(wire.dumps(response), media_type="application/json")
    payload = probabilities.tobytes()
    output["parameters"] = {"binary_data_size": len(payload)}
    header = wire.dumps(response)
    return Response(
        header + payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
