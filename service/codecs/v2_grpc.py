"""Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService/ModelInfer``) ↔ the internal request.

The messages are the upstream ``grpc_service.proto``'s, as generated in the pinned ``tritonclient``
package. The model's one input comes as typed contents (``fp32_contents``, ``fp64_contents``,
``uint_contents`` for UINT8, ``bytes_contents`` for encoded image files) or as ``raw_input_contents``
(little-endian values; BYTES as 4-byte length-prefixed elements). The output is the model's
probabilities as FP32: in ``raw_output_contents`` when the request sent raw inputs or asked for
``binary_data`` on an output (as ``tritonclient.grpc`` reads them), else as typed ``fp32_contents``.
"""

from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.codecs.v2 import DTYPE_NAMES, NUMERIC_DTYPES, bytes_elements, checked_shape
from service.errors import InvalidInput
from service.request import Api, InferenceRequest, InferenceResult, TensorInput

_TYPED_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "UINT8": "uint_contents", "BYTES": "bytes_contents"}
_ALL_FIELDS = (
    "bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents", "fp32_contents",
    "fp64_contents", "bytes_contents",
)  # fmt: skip


def version_ref(version: str) -> int | str | None:
    """``model_version``: empty is the default version, a number a version, anything else a label."""
    if not version:
        return None
    return int(version) if version.isdigit() else version


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> list:
    field = _TYPED_FIELDS[tensor.datatype]
    for other in _ALL_FIELDS:
        if other != field and len(getattr(tensor.contents, other)):
            raise InvalidInput(f"input {tensor.name!r} is {tensor.datatype} but its contents are in {other}")
    return list(getattr(tensor.contents, field))


def decode_infer(message: pb.ModelInferRequest) -> InferenceRequest:
    if len(message.inputs) != 1:
        raise InvalidInput(f"the model takes one input, got {len(message.inputs)}")
    tensor = message.inputs[0]
    if tensor.datatype not in _TYPED_FIELDS:
        raise InvalidInput(f"unsupported datatype {tensor.datatype!r}; use FP32, FP64, UINT8 or BYTES")
    raw_inputs = len(message.raw_input_contents)
    if raw_inputs not in (0, len(message.inputs)):
        raise InvalidInput(f"{raw_inputs} raw_input_contents for {len(message.inputs)} input(s)")
    outputs = message.outputs
    request = InferenceRequest(
        message.model_name, version_ref(message.model_version), Api.v2,
        input_name=tensor.name,
        outputs=tuple(output.name for output in outputs) or None,
        binary_output=bool(raw_inputs) or any(o.parameters["binary_data"].bool_param for o in outputs),
        request_id=message.id or None,
    )  # fmt: skip
    shape = checked_shape(list(tensor.shape))
    count = math.prod(shape)
    if raw_inputs:
        if any(len(getattr(tensor.contents, field)) for field in _ALL_FIELDS):
            raise InvalidInput(f"input {tensor.name!r} has both typed contents and raw_input_contents")
        raw = message.raw_input_contents[0]
    else:
        raw = None
    if tensor.datatype == "BYTES":
        blobs = bytes_elements(raw) if raw is not None else _typed_values(tensor)
        if len(blobs) != count:
            raise InvalidInput(f"shape {list(shape)} needs {count} BYTES elements, got {len(blobs)}")
        request.images = blobs
        return request
    dtype = NUMERIC_DTYPES[tensor.datatype]
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"shape {list(shape)} of {tensor.datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        values = np.frombuffer(raw, dtype=dtype)
    else:
        typed = _typed_values(tensor)
        if len(typed) != count:
            raise InvalidInput(f"shape {list(shape)} needs {count} values, got {len(typed)}")
        if tensor.datatype == "UINT8":
            wide = np.asarray(typed, dtype=np.uint32)
            if wide.size and int(wide.max()) > 255:
                raise InvalidInput("UINT8 values must be 0–255")
            values = wide.astype(np.uint8)
        else:
            values = np.asarray(typed, dtype=dtype)
    request.tensor = TensorInput(values, dtype=DTYPE_NAMES[tensor.datatype], shape=shape)
    return request


def encode_infer(result: InferenceResult) -> pb.ModelInferResponse:
    probabilities = np.ascontiguousarray(result.probabilities, dtype="<f4")
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=str(result.model_version), id=result.request.request_id or ""
    )
    output = response.outputs.add(name=result.card.output.name, datatype="FP32", shape=list(probabilities.shape))
    if result.request.binary_output:
        response.raw_output_contents.append(probabilities.tobytes())
    else:
        output.contents.fp32_contents.extend(probabilities.reshape(-1).tolist())
    return response
