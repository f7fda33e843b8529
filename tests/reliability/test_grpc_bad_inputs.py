"""The bad-input corpus over gRPC: every bad request gets its status code (INVALID_ARGUMENT for what is
wrong with the input, NOT_FOUND for unknown models and versions, RESOURCE_EXHAUSTED for a message over
the size limit, DEADLINE_EXCEEDED past the client's deadline) with a message, and the server answers a
valid call of the same service right after it.

The tensors and image files are the REST corpus's (:mod:`tests.reliability.test_bad_inputs`), sent as
KServe v2 ``ModelInfer`` (raw and typed contents) and TF Serving ``Predict`` (``tensor_content``,
typed values, ``DT_STRING`` images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from . import payloads as p
from .servers import ServerProcess
from .test_bad_inputs import BAD_IMAGES, BAD_TENSORS

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class BadCall:
    send: Callable[[grpc.Channel], Any]  # raises grpc.RpcError
    code: grpc.StatusCode
    service: str  # "v2" or "tfserving": which valid call must work after it


# -- request builders -----------------------------------------------------------------------------------
def v2_request(model: str = p.MODEL, version: str = "", **kwargs: Any):
    from tritonclient.grpc import service_pb2

    return service_pb2.ModelInferRequest(model_name=model, model_version=version, **kwargs)


def v2_raw(array: np.ndarray, datatype: str = "FP32", model: str = p.MODEL, version: str = ""):
    request = v2_request(model, version)
    request.inputs.add(name="images", datatype=datatype, shape=list(array.shape))
    dtype = {"FP32": "<f4", "FP64": "<f8", "UINT8": "u1"}[datatype]
    request.raw_input_contents.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return request


def v2_typed(array: np.ndarray, datatype: str = "FP32"):
    request = v2_request()
    tensor = request.inputs.add(name="images", datatype=datatype, shape=list(array.shape))
    field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "UINT8": "uint_contents"}[datatype]
    getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    return request


def v2_bytes(blobs: list[bytes]):
    request = v2_request()
    request.inputs.add(name="images", datatype="BYTES", shape=[len(blobs)])
    request.raw_input_contents.append(p.length_prefixed(blobs))
    return request


def infer(request) -> Callable[[grpc.Channel], Any]:
    from tritonclient.grpc import service_pb2_grpc

    return lambda channel: service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)


def tf_predict(proto=None, *, model: str = p.MODEL, inputs: dict | None = None, **spec: Any):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, tensor in (inputs if inputs is not None else {"images": proto}).items():
        request.inputs[name].CopyFrom(tensor)
    return request


def tensor_proto(values: Any, **kwargs: Any):
    import tensorflow as tf

    return tf.make_tensor_proto(values, **kwargs)


def predict(request) -> Callable[[grpc.Channel], Any]:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return lambda channel: prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)


VALID = {
    "v2": lambda: infer(v2_raw(p.valid_batch(1))),
    "tfserving": lambda: predict(tf_predict(tensor_proto(p.valid_batch(1)))),
}


# -- the corpus ----------------------------------------------------------------------------------------
def _cases() -> dict[str, pytest.ParameterSet]:
    cases: dict[str, BadCall] = {}
    for name, (array, _) in BAD_TENSORS.items():
        datatype = "UINT8" if array().dtype == np.uint8 else "FP32"
        cases[f"{name}@v2-raw"] = BadCall(lambda ch, a=array, d=datatype: infer(v2_raw(a(), d))(ch), INVALID, "v2")
        cases[f"{name}@v2-typed"] = BadCall(lambda ch, a=array, d=datatype: infer(v2_typed(a(), d))(ch), INVALID, "v2")
        cases[f"{name}@tfserving-tensor-content"] = BadCall(
            lambda ch, a=array: predict(tf_predict(tensor_proto(a())))(ch), INVALID, "tfserving"
        )
    for name, (blob, _) in BAD_IMAGES.items():
        cases[f"{name}@v2-bytes"] = BadCall(lambda ch, b=blob: infer(v2_bytes([b()]))(ch), INVALID, "v2")
        cases[f"{name}@tfserving-string"] = BadCall(
            lambda ch, b=blob: predict(tf_predict(tensor_proto([b()])))(ch), INVALID, "tfserving"
        )
    image = p.valid_batch(1)
    raw = np.ascontiguousarray(image, "<f4").tobytes()

    def v2_with(mutate: Callable[[Any], None]) -> Callable[[grpc.Channel], Any]:
        request = v2_raw(image)
        mutate(request)
        return infer(request)

    def typed_in_wrong_field(request) -> None:
        del request.raw_input_contents[:]
        request.inputs[0].contents.int_contents.extend([0] * 784)

    def typed_and_raw(request) -> None:
        request.inputs[0].contents.fp32_contents.extend([0.0] * 784)

    def second_input(request) -> None:
        request.inputs.add(name="extra", datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\0" * 4)

    specific: dict[str, tuple[Callable[[], Callable[[grpc.Channel], Any]], grpc.StatusCode, str]] = {
        "v2-unknown-model": (lambda: infer(v2_raw(image, model="nope")), NOT_FOUND, "v2"),
        "v2-unknown-version": (lambda: infer(v2_raw(image, version="7")), NOT_FOUND, "v2"),
        "v2-unknown-label": (lambda: infer(v2_raw(image, version="canary")), NOT_FOUND, "v2"),
        "v2-no-inputs": (lambda: infer(v2_request()), INVALID, "v2"),
        "v2-two-inputs": (lambda: v2_with(second_input), INVALID, "v2"),
        "v2-wrong-input-name": (lambda: v2_with(lambda r: setattr(r.inputs[0], "name", "pixels")), INVALID, "v2"),
        "v2-unknown-output": (lambda: v2_with(lambda r: r.outputs.add(name="logits")), INVALID, "v2"),
        "v2-raw-shorter-than-shape": (lambda: v2_with(lambda r: r.raw_input_contents.__setitem__(0, raw[:-4])),
                                      INVALID, "v2"),
        "v2-raw-count-mismatch": (lambda: v2_with(lambda r: r.raw_input_contents.append(raw)), INVALID, "v2"),
        "v2-typed-count-mismatch": (lambda: infer(_typed_short()), INVALID, "v2"),
        "v2-typed-in-wrong-field": (lambda: v2_with(typed_in_wrong_field), INVALID, "v2"),
        "v2-typed-and-raw": (lambda: v2_with(typed_and_raw), INVALID, "v2"),
        "v2-int64": (lambda: v2_with(lambda r: setattr(r.inputs[0], "datatype", "INT64")), INVALID, "v2"),
        "v2-uint8-300": (lambda: infer(_uint8_typed(300)), INVALID, "v2"),
        "v2-negative-dimension": (lambda: v2_with(lambda r: r.inputs[0].shape.__setitem__(0, -1)), INVALID, "v2"),
        "v2-rank-9": (lambda: v2_with(lambda r: r.inputs[0].shape.extend([1] * 5)), INVALID, "v2"),
        "v2-bytes-truncated-prefix": (lambda: infer(_bytes_raw(b"\x10\0\0")), INVALID, "v2"),
        "tfserving-unknown-model": (lambda: predict(tf_predict(tensor_proto(image), model="nope")), NOT_FOUND,
                                    "tfserving"),
        "tfserving-unknown-version": (lambda: predict(tf_predict(tensor_proto(image), version=7)), NOT_FOUND,
                                      "tfserving"),
        "tfserving-unknown-label": (lambda: predict(tf_predict(tensor_proto(image), version_label="canary")),
                                    NOT_FOUND, "tfserving"),
        "tfserving-no-inputs": (lambda: predict(tf_predict(inputs={})), INVALID, "tfserving"),
        "tfserving-two-inputs": (lambda: predict(tf_predict(inputs={"images": tensor_proto(image),
                                                                    "more": tensor_proto(image)})),
                                 INVALID, "tfserving"),
        "tfserving-wrong-input-name": (lambda: predict(tf_predict(inputs={"pixels": tensor_proto(image)})), INVALID,
                                       "tfserving"),
        "tfserving-bad-signature": (lambda: predict(tf_predict(tensor_proto(image), signature_name="classify")),
                                    INVALID, "tfserving"),
        "tfserving-int32": (lambda: predict(tf_predict(tensor_proto(np.zeros((1, 28, 28, 1), np.int32)))), INVALID,
                            "tfserving"),
        "tfserving-content-shorter-than-shape": (lambda: predict(tf_predict(_short_content())), INVALID, "tfserving"),
        "tfserving-float-val-count-mismatch": (lambda: predict(tf_predict(_float_val_short())), INVALID, "tfserving"),
        "tfserving-unknown-rank": (lambda: predict(tf_predict(_unknown_rank())), INVALID, "tfserving"),
        "tfserving-strings-vs-shape": (lambda: predict(tf_predict(_strings_vs_shape())), INVALID, "tfserving"),
        "tfserving-unknown-output-filter": (lambda: predict(_with_output_filter("logits")), INVALID, "tfserving"),
        "tfserving-metadata-field": (lambda: _metadata(["version"]), INVALID, "tfserving"),
        "tfserving-status-unknown-model": (lambda: _status("nope"), NOT_FOUND, "tfserving"),
        # The shared server runs with CNN_ALLOW_MODEL_CONTROL=false.
        "v2-unload-with-model-control-off": (lambda: _unload(p.MODEL), grpc.StatusCode.PERMISSION_DENIED, "v2"),
    }  # fmt: skip
    for name, (build, code, service) in specific.items():
        cases[name] = BadCall(lambda ch, build=build: build()(ch), code, service)
    return {name: pytest.param(bad, id=name) for name, bad in cases.items()}


def _typed_short():
    request = v2_typed(p.valid_batch(1))
    del request.inputs[0].contents.fp32_contents[-1]
    return request


def _uint8_typed(value: int):
    request = v2_request()
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28]).contents.uint_contents.extend([value] * 784)
    return request


def _bytes_raw(raw: bytes):
    request = v2_request()
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(raw)
    return request


def _short_content():
    proto = tensor_proto(p.valid_batch(1))
    proto.tensor_content = proto.tensor_content[:-4]
    return proto


def _float_val_short():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5] * 783)
    proto.tensor_shape.dim.add(size=1)
    for size in (28, 28, 1):
        proto.tensor_shape.dim.add(size=size)
    return proto


def _unknown_rank():
    proto = tensor_proto(p.valid_batch(1))
    proto.tensor_shape.unknown_rank = True
    return proto


def _strings_vs_shape():
    proto = tensor_proto([p.encode(p.garment())] * 2)
    proto.tensor_shape.dim[0].size = 3
    return proto


def _with_output_filter(name: str):
    request = tf_predict(tensor_proto(p.valid_batch(1)))
    request.output_filter.append(name)
    return request


def _metadata(fields: list[str]) -> Callable[[grpc.Channel], Any]:
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = p.MODEL
    return lambda channel: prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request)


def _status(model: str) -> Callable[[grpc.Channel], Any]:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return lambda channel: model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)


def _unload(model: str) -> Callable[[grpc.Channel], Any]:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.RepositoryModelUnloadRequest(model_name=model)
    return lambda channel: service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload(request, timeout=30)


CASES = _cases()


@pytest.fixture(scope="module")
def channel(served: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.grpc_target) as opened:
        yield opened


def _expect(code: grpc.StatusCode, send: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as failure:
        send()
    assert failure.value.code() == code, (failure.value.code(), failure.value.details())
    return failure.value.details()


@pytest.mark.parametrize("bad", list(CASES.values()))
def test_bad_call_gets_its_status_and_the_server_keeps_serving(bad: BadCall, channel: grpc.Channel) -> None:
    details = _expect(bad.code, lambda: bad.send(channel))
    assert details and "Traceback" not in details and "/" not in details.split(":")[0]
    VALID[bad.service]()(channel)  # raises if the server stopped answering


def test_message_over_the_size_limit_is_refused(channel: grpc.Channel) -> None:
    """Over CNN_MAX_REQUEST_BYTES (16 MiB by default) gRPC itself refuses the message."""
    big = np.zeros((6000, 28, 28, 1), np.float32)  # 18.8 MB of raw contents
    _expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: infer(v2_raw(big))(channel))
    VALID["v2"]()(channel)


def test_deadline_is_honoured(channel: grpc.Channel) -> None:
    """A call whose deadline passes while the model runs ends with DEADLINE_EXCEEDED; the server goes on."""
    from tritonclient.grpc import service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    batch = v2_raw(p.valid_batch(256))
    _expect(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: stub.ModelInfer(batch, timeout=0.02))
    assert stub.ModelInfer(batch, timeout=60).outputs[0].shape == [256, 10]
