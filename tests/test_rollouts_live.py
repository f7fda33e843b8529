"""A canary split on a live ``python -m service``, in every protocol: native REST, TF Serving REST and gRPC,
v2 REST and gRPC. 2,000 default-route requests per protocol under an 80/20 split land 20% ± 3% on the
canary; a routing key (header or gRPC metadata) always lands on one version; a request naming a version is
never re-routed; a weight edit in the config file applies without a restart."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.lifecycle_helpers import MODEL, publish
from tests.reliability.servers import ServerProcess, running_server

REQUESTS = 2000
PIXELS = np.zeros((1, 28, 28, 1), dtype=np.float32)
# One request's answering version, given the version it names (None: the default route) and a routing key.
Send = Callable[[int | None, str | None], int]


def _config(path: Path, traffic: dict[str, float]) -> None:
    path.write_text(json.dumps({"model_config_list": [{
        "name": MODEL, "base_path": MODEL, "model_version_policy": {"all": {}},
        "version_labels": {"stable": 1, "canary": 2}, "traffic": traffic,
    }]}))  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, bundled_repository: Path) -> Path:
    root = tmp_path_factory.mktemp("rollouts")
    (root / MODEL).mkdir()
    for version in (1, 2):
        publish(bundled_repository / MODEL / "1", root / MODEL, version)
    _config(root / "models.json", {"stable": 80, "canary": 20})
    return root / "models.json"


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerProcess]:
    env = {"CNN_MODEL_CONFIG": str(config), "CNN_POLL_INTERVAL_S": "0.2"}
    with running_server(config.parent, config.parent / "server.log", env) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


def _rest(http: httpx.Client, path: Callable[[int | None], str], body: dict, from_body: bool) -> Send:
    def send(version: int | None, key: str | None) -> int:
        response = http.post(path(version), json=body, headers={"X-Routing-Key": key} if key else {})
        assert response.status_code == 200, response.text
        answered = int(response.headers["x-model-version"])
        if from_body:
            assert int(response.json()["model_version"]) == answered
        return answered

    return send


def _versioned(prefix: str, suffix: str) -> Callable[[int | None], str]:
    return lambda version: f"{prefix}{'' if version is None else f'/versions/{version}'}{suffix}"


def _tfserving_grpc(channel: grpc.Channel) -> Send:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    tensor = tf.make_tensor_proto(PIXELS)

    def send(version: int | None, key: str | None) -> int:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        if version is not None:
            request.model_spec.version.value = version
        request.inputs["images"].CopyFrom(tensor)
        response = stub.Predict(request, timeout=30, metadata=[("x-routing-key", key)] if key else None)
        return response.model_spec.version.value

    return send


def _v2_grpc(channel: grpc.Channel) -> Send:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def send(version: int | None, key: str | None) -> int:
        request = service_pb2.ModelInferRequest(model_name=MODEL, model_version="" if version is None else str(version))
        request.inputs.add(name="images", datatype="FP32", shape=[1, 28, 28, 1])
        request.raw_input_contents.append(PIXELS.tobytes())
        response = stub.ModelInfer(request, timeout=30, metadata=[("x-routing-key", key)] if key else None)
        return int(response.model_version)

    return send


@pytest.fixture(scope="module")
def protocols(http: httpx.Client, channel: grpc.Channel) -> dict[str, Send]:
    v2_body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": [0.0] * 784}]}
    return {
        "native": _rest(http, _versioned(f"/api/v1/models/{MODEL}", "/predict"),
                        {"tensor": PIXELS[..., 0].tolist()}, from_body=True),
        "tfserving REST": _rest(http, _versioned(f"/v1/models/{MODEL}", ":predict"),
                                {"instances": PIXELS.tolist()}, from_body=False),
        "v2 REST": _rest(http, _versioned(f"/v2/models/{MODEL}", "/infer"), v2_body, from_body=True),
        "tfserving gRPC": _tfserving_grpc(channel),
        "v2 gRPC": _v2_grpc(channel),
    }  # fmt: skip


PROTOCOLS = ["native", "tfserving REST", "v2 REST", "tfserving gRPC", "v2 gRPC"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_80_20_split_in_every_protocol(protocols: dict[str, Send], protocol: str) -> None:
    send = protocols[protocol]
    landed = Counter(send(None, None) for _ in range(REQUESTS))
    assert set(landed) == {1, 2}
    assert abs(landed[2] / REQUESTS - 0.2) <= 0.03, landed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keys_stick_and_named_versions_are_never_re_routed(protocols: dict[str, Send], protocol: str) -> None:
    send = protocols[protocol]
    by_key = {key: {send(None, key) for _ in range(3)} for key in (f"user-{i}" for i in range(40))}
    assert all(len(versions) == 1 for versions in by_key.values()), by_key
    assert set().union(*by_key.values()) == {1, 2}  # 40 keys: both versions get some
    for version in (1, 2):
        assert {send(version, None) for _ in range(20)} == {version}
        assert {send(version, "user-1") for _ in range(5)} == {version}


def test_a_weight_edit_applies_without_a_restart(config: Path, protocols: dict[str, Send]) -> None:
    send = protocols["native"]
    _config(config, {"stable": 0, "canary": 100})
    deadline = time.monotonic() + 20
    while send(None, None) != 2 or {send(None, None) for _ in range(20)} != {2}:
        assert time.monotonic() < deadline, "the new weights did not apply within 20 s"
        time.sleep(0.1)
    for protocol in PROTOCOLS:
        assert {protocols[protocol](None, None) for _ in range(20)} == {2}, protocol
    _config(config, {"stable": 80, "canary": 20})
