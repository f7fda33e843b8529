"""One tensor corpus through every transport: the same bad tensor gets the same status, whichever wire
form carries it (v2 REST JSON and binary, v2 gRPC typed and raw, TF Serving gRPC typed and
``tensor_content``, TF Serving REST rows, the native JSON tensor), and a good one is classified alike.

Each case is a tensor as numpy values with a declared shape and dtype; each transport writes it in its own
form (a form that cannot express a case, such as NaN in JSON or 300 in a float buffer, skips it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.reliability.servers import ServerProcess, running_server

MODEL = "lenet5"
MAX_IMAGES = 16
GRPC_CODES = {200: grpc.StatusCode.OK, 400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.INVALID_ARGUMENT}  # fmt: skip
V2_TYPES = {"float32": "FP32", "float64": "FP64", "uint8": "UINT8", "int8": "INT8"}


@dataclass(frozen=True)
class Case:
    name: str
    values: np.ndarray  # flat
    shape: tuple[int, ...]
    dtype: str
    status: int
    model: str = MODEL

    @property
    def nested(self) -> list:
        return self.values.reshape(self.shape).tolist()

    @property
    def whole(self) -> bool:
        """The values fill the shape (nested JSON can carry only such tensors)."""
        return self.values.size == int(np.prod(self.shape))


def _zeros(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return np.zeros(int(np.prod(shape)), dtype=dtype)


def _filled(value: float, dtype: str) -> np.ndarray:
    return np.full(784, value, dtype=dtype)


CASES = [
    Case("good float32", np.linspace(0, 1, 784, dtype="float32"), (1, 28, 28, 1), "float32", 200),
    Case("good uint8", np.arange(784, dtype="uint8") % 200, (1, 28, 28, 1), "uint8", 200),
    Case("unknown model", _zeros((1, 28, 28, 1)), (1, 28, 28, 1), "float32", 404, model="no_such_model"),
    Case("rank 5", _zeros((1, 28, 28, 1, 1)), (1, 28, 28, 1, 1), "float32", 400),
    Case("rank 9", _zeros((1,) * 9), (1,) * 9, "float32", 400),
    Case("27x27 image", _zeros((1, 27, 27, 1)), (1, 27, 27, 1), "float32", 400),
    Case("empty batch", _zeros((0, 28, 28, 1)), (0, 28, 28, 1), "float32", 400),
    Case("float above 1", _filled(2.0, "float32"), (1, 28, 28, 1), "float32", 400),
    Case("negative float", _filled(-0.5, "float64"), (1, 28, 28, 1), "float64", 400),
    Case("NaN", _filled(np.nan, "float32"), (1, 28, 28, 1), "float32", 400),
    Case("uint8 over 255", _filled(300, "int64"), (1, 28, 28, 1), "uint8", 400),
    Case("too few values", _zeros((1, 28, 28, 1)), (2, 28, 28, 1), "float32", 400),
    Case("booleans", np.ones(784, dtype=bool), (1, 28, 28, 1), "float32", 400),  # JSON only: true is not 1
    Case("unsupported dtype", _zeros((1, 28, 28, 1), "int8"), (1, 28, 28, 1), "int8", 400),
    Case("too many images", _zeros((MAX_IMAGES + 1, 28, 28, 1)), (MAX_IMAGES + 1, 28, 28, 1), "float32", 413),
]


# -- the wire forms: each returns the status (HTTP) or None when it cannot express the case -------------------
def _json_ok(case: Case) -> bool:
    return case.whole and (case.values.dtype == bool or bool(np.isfinite(case.values).all()))


def v2_json(server: ServerProcess, case: Case) -> int | None:
    if not _json_ok(case) or case.dtype not in V2_TYPES:
        return None
    body = {"inputs": [{"name": "images", "shape": list(case.shape), "datatype": V2_TYPES[case.dtype],
                        "data": case.values.tolist()}]}  # fmt: skip
    return httpx.post(f"{server.base_url}/v2/models/{case.model}/infer", json=body, timeout=60).status_code


def _buffer(case: Case) -> bytes | None:
    """The values as the declared dtype's little-endian bytes (None when they do not fit it)."""
    if case.values.dtype == bool:
        return None
    target = np.dtype(case.dtype).newbyteorder("<")
    cast = case.values.astype(target)
    if not np.array_equal(cast.astype(case.values.dtype), case.values, equal_nan=True):
        return None
    return cast.tobytes()


def v2_binary(server: ServerProcess, case: Case) -> int | None:
    raw = _buffer(case)
    if raw is None or case.dtype not in V2_TYPES:
        return None
    header = json.dumps({"inputs": [{"name": "images", "shape": list(case.shape), "datatype": V2_TYPES[case.dtype],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()  # fmt: skip
    response = httpx.post(
        f"{server.base_url}/v2/models/{case.model}/infer",
        content=header + raw,
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )
    return response.status_code


def tfserving_rows(server: ServerProcess, case: Case) -> int | None:
    if not _json_ok(case) or case.dtype not in ("float32", "float64") or not case.shape or case.shape[0] == 0:
        return None  # TF Serving's REST API takes float rows only
    body = {"instances": case.nested}
    return httpx.post(f"{server.base_url}/v1/models/{case.model}:predict", json=body, timeout=60).status_code


def native_tensor(server: ServerProcess, case: Case) -> int | None:
    if not _json_ok(case) or case.dtype not in ("float32", "uint8") or not case.shape:
        return None  # the native API declares float32 or uint8
    body = {"tensor": case.nested, "dtype": case.dtype}
    return httpx.post(f"{server.base_url}/api/v1/models/{case.model}/predict", json=body, timeout=60).status_code


def _grpc_status(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _v2_grpc(channel: grpc.Channel, case: Case, raw: bool) -> grpc.StatusCode | None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    if case.dtype not in V2_TYPES or case.values.dtype == bool:
        return None
    request = service_pb2.ModelInferRequest(model_name=case.model)
    tensor = request.inputs.add(name="images", datatype=V2_TYPES[case.dtype], shape=list(case.shape))
    if raw:
        buffer = _buffer(case)
        if buffer is None:
            return None
        request.raw_input_contents.append(buffer)
    else:
        field = {"float32": "fp32_contents", "float64": "fp64_contents", "uint8": "uint_contents"}.get(case.dtype)
        if field is None or (field == "uint_contents" and (case.values < 0).any()):
            return None
        getattr(tensor.contents, field).extend(case.values.tolist())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return _grpc_status(lambda: stub.ModelInfer(request, timeout=60))


def _tfserving_grpc(channel: grpc.Channel, case: Case, raw: bool) -> grpc.StatusCode | None:
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    if case.values.dtype == bool:
        return None
    dtypes = {"float32": types_pb2.DT_FLOAT, "float64": types_pb2.DT_DOUBLE, "uint8": types_pb2.DT_UINT8,
              "int8": types_pb2.DT_INT8}  # fmt: skip
    request = predict_pb2.PredictRequest()
    request.model_spec.name = case.model
    proto = request.inputs["images"]
    proto.dtype = dtypes[case.dtype]
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=d) for d in case.shape)
    if raw:
        buffer = _buffer(case)
        if buffer is None:
            return None
        proto.tensor_content = buffer
    else:
        field = {"float32": "float_val", "float64": "double_val", "uint8": "int_val", "int8": "int_val"}[case.dtype]
        getattr(proto, field).extend(case.values.tolist())
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return _grpc_status(lambda: stub.Predict(request, timeout=60))


TRANSPORTS: dict[str, Callable[..., int | grpc.StatusCode | None]] = {
    "v2 REST JSON": v2_json,
    "v2 REST binary": v2_binary,
    "TF Serving REST rows": tfserving_rows,
    "native JSON tensor": native_tensor,
    "v2 gRPC typed": lambda s, c, ch: _v2_grpc(ch, c, raw=False),
    "v2 gRPC raw": lambda s, c, ch: _v2_grpc(ch, c, raw=True),
    "TF Serving gRPC typed": lambda s, c, ch: _tfserving_grpc(ch, c, raw=False),
    "TF Serving gRPC tensor_content": lambda s, c, ch: _tfserving_grpc(ch, c, raw=True),
}


@pytest.fixture(scope="module")
def server(bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CNN_MODELS": json.dumps([MODEL]), "CNN_POLL_INTERVAL_S": "0", "CNN_MAX_IMAGES_PER_REQUEST": str(MAX_IMAGES)}
    with running_server(bundled_repository, tmp_path_factory.mktemp("corpus") / "server.log", env) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


def _send(name: str, server: ServerProcess, case: Case, channel: grpc.Channel) -> int | grpc.StatusCode | None:
    send = TRANSPORTS[name]
    return send(server, case) if "gRPC" not in name else send(server, case, channel)


def _expected(name: str, case: Case) -> int | grpc.StatusCode:
    """The HTTP status, or over gRPC its twin (:func:`service.transports.grpc_call.status_code`)."""
    return GRPC_CODES[case.status] if "gRPC" in name else case.status


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_corpus_gets_one_status_in_every_transport(server, channel, case: Case):
    statuses = {name: _send(name, server, case, channel) for name in TRANSPORTS}
    sent = {name: status for name, status in statuses.items() if status is not None}
    assert len(sent) >= 3, f"{case.name}: too few transports can carry it: {statuses}"
    wrong = {name: status for name, status in sent.items() if status != _expected(name, case)}
    assert not wrong, f"{case.name}: expected {case.status}, got {wrong}"
    assert httpx.get(f"{server.base_url}/health/live", timeout=10).status_code == 200


def test_every_transport_carries_a_good_float_tensor(server, channel):
    good = CASES[0]
    assert {name: _send(name, server, good, channel) for name in TRANSPORTS} == {
        name: _expected(name, good) for name in TRANSPORTS
    }
