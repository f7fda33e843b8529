"""The shape of the inference path: pure codecs decode into one request type, the pipeline runs it.

Also the defects this shape fixed: EXIF orientation, bounded TF Serving feature maps, image counts
checked before conversion, large JSON converted and large answers encoded off the event loop.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from service.codecs import native, tfserving, v2
from service.core.request import Api, InferenceRequest, Operation, Polarity
from service.core.tensors import to_array

from .conftest import REPO_ROOT, png_bytes

MODEL = "fashion_cnn"
PIXELS = np.linspace(0, 1, 784, dtype=np.float32).reshape(28, 28, 1)


def _v2_binary(array: np.ndarray) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "images", "shape": list(array.shape), "datatype": "FP32",
                 "parameters": {"binary_data_size": array.nbytes}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    return header + array.astype("<f4").tobytes(), str(len(header))


def test_each_dialect_decodes_into_the_internal_request():
    png = png_bytes((PIXELS[..., 0] * 255).astype(np.uint8))
    rows = json.dumps({"instances": [{"images": PIXELS.tolist()}]}).encode()
    body, header_length = _v2_binary(PIXELS[np.newaxis])
    decoded = {
        "tfserving rows": tfserving.decode_predict(rows),
        "tfserving b64": tfserving.decode_predict(
            json.dumps({"signature_name": "feature_maps", "inputs": [{"b64": base64.b64encode(png).decode()}]}).encode()
        ),
        "v2 binary": v2.decode_infer(body, header_length=header_length),
        "v2 bytes": v2.decode_infer(
            json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                                    "data": [base64.b64encode(png).decode()]}]}).encode(),
            header_length=None,
        ),
        "native multipart": native.decode_predict(
            [png, png], media=native.MULTIPART, top_k=3, polarity=Polarity.keep
        ),
        "native feature maps": native.decode_feature_maps(
            json.dumps({"tensor": PIXELS[..., 0].tolist()}).encode(),
            media="application/json", layer="conv1", as_png=True, polarity=Polarity.auto,
        ),
    }  # fmt: skip
    for label, request in decoded.items():
        assert type(request) is InferenceRequest, label
        assert request.count >= 1, label
        assert (request.images is None) != (request.tensor is None), label

    rows_request = decoded["tfserving rows"]
    assert rows_request.api is Api.tfserving and rows_request.operation is Operation.classify
    assert rows_request.input_name == "images" and rows_request.rows and rows_request.tensor.dtype.name == "float32"
    b64_request = decoded["tfserving b64"]
    assert b64_request.operation is Operation.feature_maps and b64_request.images == [png] and not b64_request.rows
    binary = decoded["v2 binary"]
    assert binary.api is Api.v2 and binary.binary_output and binary.request_id == "r1"
    assert binary.tensor.shape == (1, 28, 28, 1) and np.array_equal(to_array(binary.tensor)[0], PIXELS)
    assert binary.outputs == ("probabilities",)
    assert decoded["v2 bytes"].images == [png]
    multipart = decoded["native multipart"]
    assert multipart.images == [png, png] and multipart.top_k == 3
    assert multipart.polarity is Polarity.keep
    maps = decoded["native feature maps"]
    assert maps.operation is Operation.feature_maps and maps.outputs == ("conv1",) and maps.as_png
    assert maps.tensor.count == 1


@pytest.mark.parametrize(("images", "top_k"), [(1, 1), (3, 3), (2, 10)])
def test_native_answers_are_the_documented_schema_as_pydantic_writes_it(images, top_k):
    """The hot path writes its answer from dicts; it must be what :class:`PredictResponse` would write."""
    from contract import ModelCard
    from service.codecs.native_schemas import PredictResponse
    from service.core.request import InferenceResult

    card = ModelCard.read(REPO_ROOT / "model_repository" / MODEL / "1")
    probabilities = np.random.default_rng(images).dirichlet(np.ones(10), images).astype(np.float32)
    request = InferenceRequest(Api.native, Operation.classify, top_k=top_k)
    body = native.encode_predict(InferenceResult(request, MODEL, 1, card, probabilities=probabilities)).body
    assert PredictResponse.model_validate_json(body).model_dump_json().encode() == body
    first = json.loads(body)["predictions"][0]
    assert len(first["top_k"]) == top_k and first["class_id"] == int(probabilities[0].argmax())


@pytest.mark.parametrize("top_k", [1, 3])
def test_tied_classes_rank_the_lower_class_id_first(top_k: int) -> None:
    from contract import ModelCard
    from service.core.request import InferenceResult

    card = ModelCard.read(REPO_ROOT / "model_repository" / MODEL / "1")
    probabilities = np.array([[0.05, 0.3, 0.05, 0.3, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0]], np.float32)
    request = InferenceRequest(Api.native, Operation.classify, top_k=top_k)
    body = native.encode_predict(InferenceResult(request, MODEL, 1, card, probabilities=probabilities)).body
    first = json.loads(body)["predictions"][0]
    assert first["class_id"] == 1 and [c["class_id"] for c in first["top_k"]] == [1, 3, 5][:top_k]


def test_the_v2_schema_documented_is_the_one_parsed():
    """OpenAPI shows the pydantic models; the codec parses with their msgspec twins: the same fields."""
    for documented, parsed in ((v2.InferRequest, v2._Request), (v2.InferInput, v2._Input),
                               (v2.InferOutputRequest, v2._Output)):  # fmt: skip
        assert set(documented.model_fields) == set(parsed.__struct_fields__), documented.__name__
        required = {name for name, field in documented.model_fields.items() if field.is_required()}
        assert required == set(
            parsed.__struct_fields__[: len(parsed.__struct_fields__) - len(parsed.__struct_defaults__)]
        )


def test_codecs_import_neither_the_batcher_nor_the_model_owners():
    """The dialect modules are pure: importing them loads no inference machinery and no TensorFlow."""
    code = (
        "import sys\n"
        "import service.codecs.native, service.codecs.tfserving, service.codecs.v2\n"
        "loaded = [m for m in sys.modules if m.startswith(('service.hosting', 'service.inference', 'tensorflow'))]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == ""


def _jpeg(image: Image.Image, orientation: int | None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_exif_rotated_phone_photos_are_classified_upright(client, fashion):
    """Orientation 6 (stored turned left: display turns it right) and 8 (the reverse), as phones save them."""
    items = [Image.fromarray(img).resize((112, 112), Image.Resampling.LANCZOS) for img in fashion.test.images[:12]]
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}

    def classify(blobs: list[bytes]) -> np.ndarray:
        files = [("files", (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]
        response = client.post(f"/api/v1/models/{MODEL}/predict", files=files)
        assert response.status_code == 200, response.text
        return np.array([p["probabilities"] for p in response.json()["predictions"]])

    upright = classify([_jpeg(item, None) for item in items])
    for orientation, transpose in stored.items():
        rotated = classify([_jpeg(item.transpose(transpose), orientation) for item in items])
        assert (rotated.argmax(axis=1) == upright.argmax(axis=1)).all(), orientation
        np.testing.assert_allclose(rotated, upright, atol=0.05)
        ignored = classify([_jpeg(item.transpose(transpose), None) for item in items])  # the tag stripped
        assert (ignored.argmax(axis=1) != upright.argmax(axis=1)).any(), "rotation should matter for some items"


def test_tfserving_feature_maps_are_bounded(client):
    def call(count: int):
        body = {"signature_name": "feature_maps", "instances": np.zeros((count, 28, 28, 1)).tolist()}
        return client.post("/v1/models/lenet5:predict", json=body)

    assert call(8).status_code == 200
    refused = call(9)
    assert refused.status_code == 413
    assert refused.json()["error"] == "9 images in one request exceeds the limit of 8 for feature maps"


def test_feature_map_calls_run_at_most_two_at_once(client, monkeypatch):
    from service.hosting.loader import LoadedModel

    original = LoadedModel.feature_maps
    running, peak, lock = 0, 0, threading.Lock()

    def counted(self, images, layers):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.1)
            return original(self, images, layers)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(LoadedModel, "feature_maps", counted)
    body = {"tensor": np.zeros((28, 28)).tolist()}
    with ThreadPoolExecutor(6) as pool:
        responses = list(
            pool.map(lambda _: client.post(f"/api/v1/models/{MODEL}/feature-maps?layer=conv1", json=body), range(6))
        )
    assert [r.status_code for r in responses] == [200] * 6
    assert peak == 2


def test_image_count_is_checked_before_the_tensor_is_converted(client):
    ragged = [[[0.0]], [[0.0], [0.0]]] * 129  # 258 rows, not even rectangular
    response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ragged})
    assert response.status_code == 413
    assert "258 images in one request exceeds the limit of 256" in response.json()["error"]
    v2_body = {"inputs": [{"name": "images", "shape": [300, 28, 28, 1], "datatype": "FP32", "data": [0.0]}]}
    response = client.post(f"/v2/models/{MODEL}/infer", json=v2_body)
    assert response.status_code == 413 and "300 images" in response.json()["error"]


def test_large_json_tensors_are_converted_and_large_answers_encoded_off_the_event_loop(client, monkeypatch):
    import service.inference.pipeline
    import service.transports.rest_tfserving

    threads: dict[str, list[str]] = {"convert": [], "encode": []}
    convert, encode = service.inference.pipeline.tensor_to_batch, service.transports.rest_tfserving._ENCODE_PREDICT

    def recording(kind, fn):
        def wrapper(*args, **kwargs):
            threads[kind].append(threading.current_thread().name)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(service.inference.pipeline, "tensor_to_batch", recording("convert", convert))
    monkeypatch.setattr(service.transports.rest_tfserving, "_ENCODE_PREDICT", recording("encode", encode))
    rows = np.zeros((64, 28, 28, 1)).tolist()
    # One image; 64 as one array of numbers (parsed into an array, only checked: on the event loop); 64 as
    # named rows (JSON lists, converted value by value: in a worker thread).
    for instances in (rows[:1], rows, [{"images": row} for row in rows]):
        assert client.post(f"/v1/models/{MODEL}:predict", json={"instances": instances}).status_code == 200
    feature_maps = {"signature_name": "feature_maps", "instances": np.zeros((4, 28, 28, 1)).tolist()}
    assert client.post(f"/v1/models/{MODEL}:predict", json=feature_maps).status_code == 200
    small, array, lists, _maps = threads["convert"]
    assert not small.startswith("inference") and not array.startswith("inference"), threads
    assert lists.startswith("inference"), threads
    assert not threads["encode"][0].startswith("inference") and threads["encode"][3].startswith("inference"), threads


def test_v2_refuses_a_boolean_binary_data_size(client):
    header = json.dumps(
        {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "FP32",
                     "parameters": {"binary_data_size": True}}]}
    ).encode()  # fmt: skip
    response = client.post(
        f"/v2/models/{MODEL}/infer",
        content=header + b"\0" * 3136,
        headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert response.status_code == 400 and "binary_data_size True" in response.json()["error"]


def test_v2_json_and_binary_answer_alike(client, fashion):
    images = (fashion.test.images[:4, ..., np.newaxis] / 255.0).astype(np.float32)
    body, header_length = _v2_binary(images)
    binary = client.post(
        f"/v2/models/{MODEL}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": header_length, "content-type": "application/octet-stream"},
    )
    assert binary.status_code == 200
    length = int(binary.headers["inference-header-content-length"])
    meta = json.loads(binary.content[:length])
    assert meta["id"] == "r1" and meta["outputs"][0]["shape"] == [4, 10]
    from_binary = np.frombuffer(binary.content[length:], "<f4").reshape(4, 10)
    as_json = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [{"name": "images", "shape": [4, 28, 28, 1], "datatype": "FP32", "data": images.ravel().tolist()}]
        },
    ).json()
    np.testing.assert_allclose(np.array(as_json["outputs"][0]["data"]).reshape(4, 10), from_binary, atol=1e-6)
    assert struct.calcsize("<f") * 40 == len(binary.content) - length


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e3"])
def test_a_non_numeric_content_length_is_a_400(value):
    import asyncio

    from service.transports.limits import BodySizeLimit

    sent: list[dict] = []

    async def inner(scope, receive, send):  # never reached
        raise AssertionError("the request should have been refused")

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", value)]}
    asyncio.run(BodySizeLimit(inner, max_bytes=1024)(scope, receive, send))
    assert sent[0]["status"] == 400
    assert b"Content-Length must be a whole number" in sent[1]["body"]


def test_feature_map_waiters_get_503_when_no_slot_frees_in_time(bundled_repository, monkeypatch):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings
    from service.hosting.loader import LoadedModel

    entered, release = threading.Event(), threading.Event()
    original = LoadedModel.feature_maps

    def blocked(self, images, layers):
        entered.set()
        release.wait(10)
        return original(self, images, layers)

    settings = Settings(
        model_repository=bundled_repository, models=["lenet5"], max_concurrent_feature_maps=1, request_timeout_s=0.5
    )
    body = {"tensor": np.zeros((28, 28)).tolist()}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client, ThreadPoolExecutor(2) as pool:
        monkeypatch.setattr(LoadedModel, "feature_maps", blocked)  # after the warm-up at start
        first = pool.submit(client.post, "/api/v1/models/lenet5/feature-maps", json=body)
        assert entered.wait(10)  # the first call holds the only slot
        second = client.post("/api/v1/models/lenet5/feature-maps", json=body)
        release.set()
        assert first.result().status_code == 200
    assert second.status_code == 503 and "retry shortly" in second.json()["error"]
    assert second.headers["retry-after"] == "1"


def test_a_grpc_message_of_raw_contents_is_decoded_on_the_event_loop():
    """What the pipeline weighs before decoding in a worker thread: what is left to parse of a gRPC message,
    its typed contents; raw contents (decoding takes them as they are) are not counted."""
    import asyncio

    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2
    from tritonclient.grpc import service_pb2 as pb

    from service.codecs import tfserving_grpc, v2_grpc
    from service.inference.pipeline import _OFFLOAD_PARSE_BYTES
    from service.transports.grpc_call import message_reader

    images = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    v2_raw, v2_typed = pb.ModelInferRequest(model_name=MODEL), pb.ModelInferRequest(model_name=MODEL)
    for message in (v2_raw, v2_typed):
        message.inputs.add(name="images", datatype="FP32", shape=list(images.shape))
    v2_raw.raw_input_contents.append(images.tobytes())
    v2_typed.inputs[0].contents.fp32_contents.extend(images.ravel())
    tf_raw, tf_typed = predict_pb2.PredictRequest(), predict_pb2.PredictRequest()
    tf_raw.inputs["images"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=images.tobytes()))
    tf_typed.inputs["images"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=images.ravel()))

    def to_parse(message, codec) -> int:
        return asyncio.run(message_reader(message, codec.bytes_to_parse)())[1]

    for raw, typed, codec in ((v2_raw, v2_typed, v2_grpc), (tf_raw, tf_typed, tfserving_grpc)):
        assert to_parse(raw, codec) < 1024 < _OFFLOAD_PARSE_BYTES < images.nbytes <= to_parse(typed, codec)
        assert to_parse(typed, codec) == typed.ByteSize()


def test_a_v2_body_is_decoded_in_a_thread_only_for_its_json(client, monkeypatch):
    """64 images as a v2 binary tensor: the JSON header is all there is to parse, so it is decoded on the
    event loop; the same images as JSON ``data`` are parsed in a worker thread."""
    import service.codecs.v2

    threads: list[str] = []
    decode = service.codecs.v2.decode_infer

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(service.codecs.v2, "decode_infer", recording)
    images = np.zeros((64, 28, 28, 1), dtype=np.float32)
    body, length = _v2_binary(images)
    assert v2.bytes_to_parse(body, length) == int(length) < 1024
    assert v2.bytes_to_parse(body, None) == v2.bytes_to_parse(body, "x") == v2.bytes_to_parse(body, "0") == len(body)
    response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers={v2.HEADER_LENGTH: length})
    assert response.status_code == 200, response.text
    data = {
        "inputs": [{"name": "images", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}]
    }
    assert client.post(f"/v2/models/{MODEL}/infer", json=data).status_code == 200
    binary, json_body = threads
    assert not binary.startswith("inference") and json_body.startswith("inference"), threads
