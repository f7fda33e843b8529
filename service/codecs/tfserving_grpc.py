"""TensorFlow Serving's gRPC ``PredictionService/Predict`` ↔ the internal request.

The messages are TF Serving's own, from the pinned ``tensorflow-serving-api`` package (their
``TensorProto`` is TensorFlow's, so importing this module imports TensorFlow). The input is one
``TensorProto``: ``DT_FLOAT``/``DT_DOUBLE`` in [0, 1] or ``DT_UINT8`` 0–255, as ``tensor_content`` or
typed values, or ``DT_STRING`` elements that are encoded image files. ``signature_name`` is
``serving_default`` (probabilities) or ``feature_maps`` (every layer's activations, or those in
``output_filter``); outputs are ``DT_FLOAT`` tensors with ``tensor_content``.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from contract import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE
from service.errors import InvalidInput
from service.request import Api, InferenceRequest, InferenceResult, Operation, TensorInput

_MAX_RANK = 8
# dtype → (the internal dtype name, numpy dtype, the typed field that holds the values)
_NUMERIC = {
    types_pb2.DT_FLOAT: ("float32", np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: ("float64", np.dtype("<f8"), "double_val"),
    types_pb2.DT_UINT8: ("uint8", np.dtype("u1"), "int_val"),
}


def version_ref(spec: model_pb2.ModelSpec) -> int | str | None:
    """The version a ``ModelSpec`` names: a number, a label, or ``None`` for the default."""
    if spec.HasField("version"):
        return spec.version.value
    return spec.version_label or None


def _shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput("the input tensor's shape must be known (unknown_rank is set)")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if len(shape) > _MAX_RANK or any(d < 0 for d in shape):
        raise InvalidInput(f"input shape {list(shape)} must have at most {_MAX_RANK} non-negative dimensions")
    return shape


def _to_request(proto: tensor_pb2.TensorProto, request: InferenceRequest) -> None:
    shape = _shape(proto)
    count = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING:
        if len(proto.string_val) != count:
            raise InvalidInput(f"shape {list(shape)} needs {count} DT_STRING elements, got {len(proto.string_val)}")
        request.images = list(proto.string_val)
        return
    if proto.dtype not in _NUMERIC:
        name = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else proto.dtype
        raise InvalidInput(f"unsupported dtype {name}; use DT_FLOAT, DT_DOUBLE, DT_UINT8 or DT_STRING (image files)")
    dtype_name, dtype, field = _NUMERIC[proto.dtype]
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise InvalidInput(
                f"shape {list(shape)} of {dtype_name} needs {count * dtype.itemsize} bytes of tensor_content, "
                f"got {len(proto.tensor_content)}"
            )
        values = np.frombuffer(proto.tensor_content, dtype=dtype)
    else:
        typed = getattr(proto, field)
        if len(typed) != count:
            raise InvalidInput(f"shape {list(shape)} needs {count} values in {field}, got {len(typed)}")
        if proto.dtype == types_pb2.DT_UINT8:
            wide = np.asarray(typed, dtype=np.int64)
            if wide.size and (int(wide.min()) < 0 or int(wide.max()) > 255):
                raise InvalidInput("DT_UINT8 values must be 0–255")
            values = wide.astype(np.uint8)
        else:
            values = np.asarray(typed, dtype=dtype)
    request.tensor = TensorInput(values, dtype=dtype_name, shape=shape)


def decode_predict(message: predict_pb2.PredictRequest) -> InferenceRequest:
    signature = message.model_spec.signature_name or SERVING_SIGNATURE
    if signature not in (SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE):
        raise InvalidInput(f'Serving signature name: "{signature}" not found in signature def')
    if len(message.inputs) != 1:
        names = sorted(message.inputs)
        raise InvalidInput(f"the signature has exactly one input, got {len(names)}: {names}")
    ((name, proto),) = message.inputs.items()
    request = InferenceRequest(
        message.model_spec.name, version_ref(message.model_spec), Api.tfserving,
        Operation.classify if signature == SERVING_SIGNATURE else Operation.feature_maps,
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
