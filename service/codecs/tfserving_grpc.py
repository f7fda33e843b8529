"""TensorFlow Serving's gRPC ``PredictionService/Predict`` ↔ the internal request.

The messages are TF Serving's own, from the pinned ``tensorflow-serving-api`` package (their
``TensorProto`` is TensorFlow's, so importing this module imports TensorFlow). The input is one
``TensorProto``: ``DT_FLOAT``/``DT_DOUBLE`` in [0, 1] or ``DT_UINT8`` 0–255, as ``tensor_content`` or
typed values, or ``DT_STRING`` elements that are encoded image files. ``signature_name`` is
``serving_default`` (probabilities) or ``feature_maps`` (every layer's activations, or those in
``output_filter``); outputs are ``DT_FLOAT`` tensors with ``tensor_content``.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from contract import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE
from service.core import tensors
from service.core.errors import InvalidInput
from service.core.request import Api, InferenceRequest, InferenceResult, Operation, Target


def version_ref(spec: model_pb2.ModelSpec) -> int | str | None:
    """The version a ``ModelSpec`` names: a number, a label, or ``None`` for the default."""
    if spec.HasField("version"):
        return spec.version.value
    return spec.version_label or None


def target(message: predict_pb2.PredictRequest, routing_key: str | None = None) -> Target:
    """The model version a ``Predict`` call is for (admitted as a classification)."""
    return Target(message.model_spec.name, version_ref(message.model_spec), routing_key=routing_key)


def bytes_to_parse(message: predict_pb2.PredictRequest) -> int:
    """What decoding parses of a received message: nothing when each input's values are its
    ``tensor_content`` (taken as it is; its typed field is empty), else the whole message (see
    :func:`service.codecs.v2_grpc.bytes_to_parse`)."""

    def typed(proto: tensor_pb2.TensorProto) -> bool:
        dtype = tensors.BY_TF.get(proto.dtype)  # DT_STRING and unknown types included
        return dtype is None or len(getattr(proto, dtype.tf_field)) > 0

    return message.ByteSize() if any(map(typed, message.inputs.values())) else 0


def _to_request(proto: tensor_pb2.TensorProto, request: InferenceRequest) -> None:
    """The tensor's values: ``DT_STRING`` image files, ``tensor_content`` bytes, or its typed field."""
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput("the input tensor's shape must be known (unknown_rank is set)")
    shape = tensors.checked_shape(dim.size for dim in proto.tensor_shape.dim)
    if proto.dtype == tensors.STRING_TF:
        tensors.element_count(shape, len(proto.string_val), "DT_STRING elements")
        request.images = list(proto.string_val)
        return
    dtype = tensors.BY_TF.get(proto.dtype)
    if dtype is None:
        name = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else proto.dtype
        raise InvalidInput(f"unsupported dtype {name}; use DT_FLOAT, DT_DOUBLE, DT_UINT8 or DT_STRING (image files)")
    values = proto.tensor_content or getattr(proto, dtype.tf_field)
    request.tensor = tensors.tensor(values, dtype, shape)


def decode_predict(message: predict_pb2.PredictRequest) -> InferenceRequest:
    signature = message.model_spec.signature_name or SERVING_SIGNATURE
    if signature not in (SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE):
        raise InvalidInput(f'Serving signature name: "{signature}" not found in signature def')
    if len(message.inputs) != 1:
        names = sorted(message.inputs)
        raise InvalidInput(f"the signature has exactly one input, got {len(names)}: {names}")
    ((name, proto),) = message.inputs.items()
    request = InferenceRequest(
        Api.tfserving, Operation.classify if signature == SERVING_SIGNATURE else Operation.feature_maps,
        input_name=name, outputs=tuple(message.output_filter) or None,
    )  # fmt: skip
    _to_request(proto, request)
    return request


def _float_tensor(values: np.ndarray) -> tensor_pb2.TensorProto:
    array = np.ascontiguousarray(values, dtype="<f4")
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=array.tobytes())
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    return proto


def encode_predict(result: InferenceResult) -> predict_pb2.PredictResponse:
    if result.probabilities is not None:
        outputs = {result.card.output.name: result.probabilities}
        signature = SERVING_SIGNATURE
    else:
        outputs, signature = result.activations or {}, FEATURE_MAPS_SIGNATURE
    response = predict_pb2.PredictResponse()
    response.model_spec.name = result.model_name
    response.model_spec.version.value = result.model_version
    response.model_spec.signature_name = signature
    for name, values in outputs.items():
        response.outputs[name].CopyFrom(_float_tensor(values))
    return response
