"""gRPC with stock clients against a live ``python -m service``: ``tritonclient.grpc`` (KServe v2) and
TF Serving's own ``PredictionServiceStub`` and ``ModelServiceStub`` (``tensorflow-serving-api``), each
giving the same classes as the REST API for the same images; health checking, reflection, the API key
and the status codes of bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUNDLED_MODELS
from tests.reliability.servers import ServerProcess, running_server

IMAGES = 6


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("grpc") / "server.log"
    with running_server(
        bundled_repository, log, {"CNN_POLL_INTERVAL_S": "0", "CNN_MAX_REQUEST_BYTES": "1048576"}
    ) as process:
        yield process


@pytest.fixture(scope="module")
def images(fashion) -> np.ndarray:
    return fashion.test.images[:IMAGES]


@pytest.fixture(scope="module")
def rest_classes(server, images) -> np.ndarray:
    """What the REST API answers for the same images (PNG uploads)."""
    files = [("files", (f"{i}.png", png(image), "image/png")) for i, image in enumerate(images)]
    response = httpx.post(f"{server.base_url}/api/v1/models/fashion_cnn/predict", files=files, timeout=60)
    assert response.status_code == 200, response.text
    return np.array([p["class_id"] for p in response.json()["predictions"]])


@pytest.fixture(scope="module")
def triton(server):
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


def _triton_input(name: str, array: np.ndarray, datatype: str):
    import tritonclient.grpc as triton_grpc

    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


# -- KServe v2 through tritonclient.grpc ------------------------------------------------------------------
def test_triton_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("fashion_cnn") and triton.is_model_ready("lenet5", "1")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] and "model_repository" in server["extensions"]
    model = triton.get_model_metadata("fashion_cnn", as_json=True)
    assert model["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["-1", "28", "28", "1"]}]
    assert model["outputs"][0]["name"] == "probabilities" and model["versions"] == ["1"]
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} == {(name, "READY") for name in BUNDLED_MODELS}


def test_triton_unloads_and_loads_through_the_repository_rpcs(bundled_repository, tmp_path, images):
    """A server of its own: unloading the model under the module's shared server would break other tests."""
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    env = {"CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": '["lenet5"]'}
    with running_server(bundled_repository, tmp_path / "server.log", env) as own:
        client = triton_grpc.InferenceServerClient(own.grpc_target)
        client.unload_model("lenet5")
        assert not client.is_model_ready("lenet5")
        (entry,) = client.get_model_repository_index(as_json=True)["models"]
        assert entry["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            client.infer("lenet5", [_triton_input("images", images, "UINT8")])
        client.load_model("lenet5")
        assert client.is_model_ready("lenet5")
        assert client.infer("lenet5", [_triton_input("images", images, "UINT8")]).as_numpy("probabilities").shape == (
            IMAGES, 10,
        )  # fmt: skip
        client.close()


@pytest.mark.parametrize("datatype", ["FP32", "UINT8", "BYTES"])
def test_triton_infer_gives_the_rest_classes(triton, images, rest_classes, datatype):
    if datatype == "FP32":
        tensor = _triton_input("images", (images[..., None] / 255.0).astype(np.float32), "FP32")
    elif datatype == "UINT8":
        tensor = _triton_input("images", images, "UINT8")
    else:
        tensor = _triton_input("images", np.array([png(image) for image in images], dtype=object), "BYTES")
    result = triton.infer("fashion_cnn", [tensor], request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (IMAGES, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(probabilities.argmax(axis=1), rest_classes)
    assert result.get_response().id == "r-1" and result.get_response().model_version == "1"


def test_typed_contents_get_typed_outputs(server, images, rest_classes):
    """A request with typed contents (no raw_input_contents) is answered with typed fp32_contents."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="fashion_cnn", model_version="1")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[IMAGES, 28, 28])
    tensor.contents.uint_contents.extend(images.reshape(-1).tolist())
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    probabilities = np.array(response.outputs[0].contents.fp32_contents).reshape(IMAGES, 10)
    assert np.array_equal(probabilities.argmax(axis=1), rest_classes)


# -- TF Serving through its own stubs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


def test_tfserving_predict_gives_the_rest_classes(channel, images, rest_classes):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fashion_cnn"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto((images[..., None] / 255.0).astype(np.float32)))
    response = stub.Predict(request, timeout=30)
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert np.array_equal(probabilities.argmax(axis=1), rest_classes)
    assert response.model_spec.version.value == 1 and response.model_spec.signature_name == "serving_default"

    # Encoded images as DT_STRING, and a pinned version.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fashion_cnn"
    request.model_spec.version.value = 1
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([png(image) for image in images]))
    probabilities = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["probabilities"])
    assert np.array_equal(probabilities.argmax(axis=1), rest_classes)


@pytest.mark.parametrize("model", BUNDLED_MODELS)
def test_every_bundled_model_over_both_protocols(server, triton, channel, images, model):
    """Each protocol's Predict/ModelInfer gives the REST API's probabilities for every bundled model."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    rest = httpx.post(
        f"{server.base_url}/api/v1/models/{model}/predict",
        json={"tensor": images.tolist(), "dtype": "uint8"},
        timeout=60,
    ).json()["predictions"]
    expected = np.array([p["probabilities"] for p in rest])
    v2 = triton.infer(model, [_triton_input("images", images, "UINT8")]).as_numpy("probabilities")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([png(image) for image in images]))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    tfserving = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(v2, expected, atol=1e-5)
    np.testing.assert_allclose(tfserving, expected, atol=1e-5)


def test_tfserving_feature_maps_signature(channel, images, server):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet5"
    request.model_spec.signature_name = "feature_maps"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[:2].astype(np.uint8)))
    request.output_filter.extend(["C1", "F6"])
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert set(response.outputs) == {"C1", "F6"}
    c1 = tf.make_ndarray(response.outputs["C1"])
    assert c1.shape == (2, 28, 28, 6)
    rest = httpx.post(
        f"{server.base_url}/api/v1/models/lenet5/feature-maps?layer=C1",
        json={"tensor": images[0].tolist(), "dtype": "uint8"},
        timeout=30,
    ).json()["layers"][0]["data"]
    np.testing.assert_allclose(c1[0], np.array(rest), atol=1e-5)


def test_tfserving_metadata_and_status(channel):
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fashion_cnn"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert [d.size for d in serving.inputs["images"].tensor_shape.dim] == [-1, 28, 28, 1]
    assert list(serving.outputs) == ["probabilities"]
    assert "conv5" in signatures.signature_def["feature_maps"].outputs

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "lenet5"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
    (version,) = status.model_version_status
    assert version.version == 1 and version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


# -- health, reflection, unimplemented -------------------------------------------------------------------
def test_health_checking_and_reflection(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    services = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService", "grpc.health.v1.Health"} <= services  # fmt: skip


def test_calls_outside_the_implemented_ones_are_unimplemented(server, channel, triton):
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

    with pytest.raises(grpc.RpcError) as classify:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(
            classification_pb2.ClassificationRequest(), timeout=10
        )
    assert classify.value.code() == grpc.StatusCode.UNIMPLEMENTED
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
        triton.get_model_config("fashion_cnn")
    assert "Traceback" not in server.log() and "NotImplementedError" not in server.log()


def test_versions_are_ascii_digits_over_grpc(channel):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    for version in ("²", "١", "0_1", " 1", "9" * 5000):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelReady(service_pb2.ModelReadyRequest(name="fashion_cnn", version=version), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, version
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="fashion_cnn", version="1"), timeout=10).ready


# -- the API key -----------------------------------------------------------------------------------------
def test_api_key_through_metadata(bundled_repository, tmp_path, images):
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    env = {"CNN_API_KEY": "s3cret", "CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": '["lenet5"]'}
    with running_server(bundled_repository, tmp_path / "server.log", env) as keyed:
        client = triton_grpc.InferenceServerClient(keyed.grpc_target)
        tensor = _triton_input("images", images, "UINT8")
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.infer("lenet5", [tensor])
        assert client.infer("lenet5", [tensor], headers={"x-api-key": "s3cret"}).as_numpy("probabilities").shape == (
            IMAGES,
            10,
        )
        bearer = client.infer("lenet5", [tensor], headers={"authorization": "Bearer s3cret"})
        assert bearer.as_numpy("probabilities").shape == (IMAGES, 10)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):  # unimplemented ones too
            client.get_model_config("lenet5")
        with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
            client.get_model_config("lenet5", headers={"x-api-key": "s3cret"})
        client.close()
        with grpc.insecure_channel(keyed.grpc_target) as channel:  # a repeated key is refused, as over HTTP
            from tritonclient.grpc import service_pb2, service_pb2_grpc

            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            twice = (("x-api-key", "wrong"), ("x-api-key", "s3cret"))
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerReady(service_pb2.ServerReadyRequest(), metadata=twice, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- metrics and shutdown ---------------------------------------------------------------------------------
def test_grpc_calls_are_counted_in_the_metrics(server, triton, images):
    from tritonclient.utils import InferenceServerException

    def count(status: str) -> float:
        text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
        route = "/inference.GRPCInferenceService/ModelInfer"
        prefix = f'cnn_requests_total{{method="GRPC",model="fashion_cnn",route="{route}",status="{status}"}}'
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))

    ok, invalid = count("OK"), count("INVALID_ARGUMENT")
    triton.infer("fashion_cnn", [_triton_input("images", images, "UINT8")])
    with pytest.raises(InferenceServerException):
        triton.infer("fashion_cnn", [_triton_input("images", images[:, :3], "UINT8")])
    assert count("OK") == ok + 1
    assert count("INVALID_ARGUMENT") == invalid + 1


def test_sigterm_lets_grpc_calls_in_flight_finish(bundled_repository, tmp_path):
    import signal
    import time

    from tritonclient.grpc import service_pb2, service_pb2_grpc

    batch = np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8)
    request = service_pb2.ModelInferRequest(model_name="fashion_cnn")
    request.inputs.add(name="images", datatype="UINT8", shape=list(batch.shape))
    request.raw_input_contents.append(batch.tobytes())
    env = {"CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": '["fashion_cnn"]'}
    with running_server(bundled_repository, tmp_path / "server.log", env) as process:
        with grpc.insecure_channel(process.grpc_target) as opened:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(opened)
            stub.ModelInfer(request, timeout=60)  # connected and warm
            calls = [stub.ModelInfer.future(request, timeout=60) for _ in range(6)]
            # In flight: received by the server (a call still on the wire at SIGTERM is a new call, refused).
            time.sleep(0.3)
            process.process.send_signal(signal.SIGTERM)
            results = [call.result() for call in calls]  # raises if a call in flight was dropped
            assert all(result.outputs[0].shape == [256, 10] for result in results)
            assert process.process.wait(timeout=60) == 0
        assert "gRPC stopped" in process.log()


def test_sigterm_stops_grpc_admission_at_once_while_http_drains(bundled_repository, tmp_path):
    """An HTTP request still arriving keeps uvicorn draining; gRPC must not wait for it to refuse calls."""
    import signal
    import socket
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = {"CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": '["lenet5"]', "CNN_SHUTDOWN_TIMEOUT_S": "8"}
    with running_server(bundled_repository, tmp_path / "server.log", env) as process:
        with socket.create_connection(("127.0.0.1", process.port)) as slow:
            slow.sendall(b"POST /v1/models/lenet5:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")  # fmt: skip
            time.sleep(0.3)  # the request is in flight
            process.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = None
            while time.monotonic() - signalled < 2.0:
                # When the call that was not served started: a connection made as the server stops may hang
                # to the call's deadline instead of being refused, and that wait is the client's, not the server's.
                attempt = time.monotonic()
                try:
                    with grpc.insecure_channel(process.grpc_target) as channel:
                        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                        status = check.status
                except grpc.RpcError as exc:
                    status = exc.code()
                if status != health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
            refused_after = attempt - signalled
            assert status != health_pb2.HealthCheckResponse.SERVING and refused_after < 0.5, (status, refused_after)
            assert process.alive()  # HTTP is still draining the slow request
        assert process.process.wait(timeout=60) == 0


def test_a_grpc_port_in_use_stops_the_start_with_a_clear_error(bundled_repository):
    import socket

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(Settings(model_repository=bundled_repository, models=["lenet5"], grpc_port=port))
        with pytest.raises(RuntimeError, match=f"gRPC cannot listen on 127.0.0.1:{port}"), TestClient(app):
            pass
