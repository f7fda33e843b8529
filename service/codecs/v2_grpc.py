"""Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService/ModelInfer``) ↔ the internal request.

The messages are the upstream ``grpc_service.proto``'s, as generated in the pinned ``tritonclient``
package. The model's one input comes as typed contents (``fp32_contents``, ``fp64_contents``,
``uint_contents`` for UINT8, ``bytes_contents`` for encoded image files) or as ``raw_input_contents``
(little-endian values; BYTES as 4-byte length-prefixed elements). The output is the model's
probabilities as FP32: in ``raw_output_contents`` when the request sent raw inputs or asked for
``binary_data`` on an output (as ``tritonclient.grpc`` reads them), else as typed ``fp32_contents``.
"""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.core import tensors
from service.core.errors import InvalidInput
from service.core.request import Api, InferenceRequest, InferenceResult, Target, version_or_label

_TYPED_FIELDS = {**{d.v2: d.v2_field for d in tensors.DTYPES}, tensors.BYTES_V2: "bytes_contents"}
_ALL_FIELDS = tuple(field.name for field in pb.InferTensorContents.DESCRIPTOR.fields)


def target(message: pb.ModelInferRequest, routing_key: str | None = None) -> Target:
    """The model version a ``ModelInfer`` call is for."""
    return Target(message.model_name, version_or_label(message.model_version), routing_key=routing_key)


def bytes_to_parse(message: pb.ModelInferRequest) -> int:
    """What decoding parses of a received message: nothing when it sends raw contents (taken as they are;
    typed contents beside them are refused), else its typed contents, the whole message. Neither the raw
    contents are copied to tell, nor the message sized (``ByteSize`` serializes it: 28 ms at 16 MB)."""
    return 0 if message.raw_input_contents else message.ByteSize()


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor):
    """The one typed contents field of the tensor's datatype; values in any other field are refused."""
    field = _TYPED_FIELDS[tensor.datatype]
    for other in _ALL_FIELDS:
        if other != field and len(getattr(tensor.contents, other)):
            raise InvalidInput(f"input {tensor.name!r} is {tensor.datatype} but its contents are in {other}")
    return getattr(tensor.contents, field)


def decode_infer(message: pb.ModelInferRequest) -> InferenceRequest:
    if len(message.inputs) != 1:
        raise InvalidInput(f"the model takes one input, got {len(message.inputs)}")
    tensor = message.inputs[0]
    if tensor.datatype not in _TYPED_FIELDS:
        raise InvalidInput(f"unsupported datatype {tensor.datatype!r}; use {', '.join(_TYPED_FIELDS)}")
    raw_inputs = len(message.raw_input_contents)
    if raw_inputs not in (0, len(message.inputs)):
        raise InvalidInput(f"{raw_inputs} raw_input_contents for {len(message.inputs)} input(s)")
    outputs = message.outputs
    request = InferenceRequest(
        Api.v2,
        input_name=tensor.name,
        outputs=tuple(output.name for output in outputs) or None,
        binary_output=bool(raw_inputs) or any(o.parameters["binary_data"].bool_param for o in outputs),
        request_id=message.id or None,
    )  # fmt: skip
    shape = tensors.checked_shape(tensor.shape)
    if raw_inputs:
        # a contents message left unset holds nothing: looked into only when sent
        if tensor.HasField("contents") and any(len(getattr(tensor.contents, field)) for field in _ALL_FIELDS):
            raise InvalidInput(f"input {tensor.name!r} has both typed contents and raw_input_contents")
        values = message.raw_input_contents[0]
    else:
        values = _typed_values(tensor)
    if tensor.datatype == tensors.BYTES_V2:
        blobs = tensors.length_prefixed(values) if raw_inputs else list(values)
        tensors.element_count(shape, len(blobs), "BYTES elements")
        request.images = blobs
    else:
        request.tensor = tensors.tensor(values, tensors.BY_V2[tensor.datatype], shape)
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
