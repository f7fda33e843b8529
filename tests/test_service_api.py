"""The real app over the bundled models: all three APIs, feature maps, summaries and metrics."""

from __future__ import annotations

import base64
import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from .conftest import png_bytes

MODEL = "fashion_cnn"


@pytest.fixture(scope="module")
def sample(fashion):
    """200 test images (a fixed, class-balanced-by-chance slice) with labels."""
    return fashion.test.images[:200], fashion.test.labels[:200]


def test_health_and_model_list(client):
    assert client.get("/health/live").json() == {"live": True}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["models"]["fashion_cnn:1"] == "READY"
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert {"fashion_cnn", "fashion_resnet", "lenet5"} <= set(models)
    assert models[MODEL]["default_version"] == 1 and models[MODEL]["versions"][0]["state"] == "AVAILABLE"


def test_model_detail_and_summary(client, bundled_repository):
    card = json.loads((bundled_repository / MODEL / "1" / "model_card.json").read_text())
    detail = client.get(f"/api/v1/models/{MODEL}").json()
    assert detail["class_names"][0] == "T-shirt/top" and detail["metrics"]["test_accuracy"] >= 0.92
    assert detail["input"]["shape"] == [-1, 28, 28, 1]
    summary = client.get(f"/api/v1/models/{MODEL}/versions/1/summary").json()
    assert summary == card["summary"]
    conv1 = summary["layers"][0]
    assert conv1["name"] == "conv1" and conv1["kernel_size"] == [7, 7]
    assert conv1["output_shape"] == [28, 28, 64] and conv1["memory_bytes"] == 28 * 28 * 64 * 4
    assert conv1["mult_adds"] == 28 * 28 * 64 * 7 * 7 * 1 and conv1["params"] == 64 * 49 + 64


def test_native_multipart_accuracy_on_200_pngs(client, sample):
    images, labels = sample
    predicted = []
    for start in range(0, len(images), 50):
        files = [
            ("files", (f"{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images[start : start + 50])
        ]
        response = client.post(f"/api/v1/models/{MODEL}/predict?top_k=3", files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        predicted += [p["class_id"] for p in body["predictions"]]
        first = body["predictions"][0]
        assert len(first["top_k"]) == 3 and len(first["probabilities"]) == 10
        assert first["top_k"][0]["probability"] >= first["top_k"][1]["probability"]
        assert abs(sum(first["probabilities"]) - 1) < 1e-4
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert accuracy >= 0.90, accuracy


def test_same_image_same_answer_through_all_apis(client, sample):
    image, label = sample[0][3], int(sample[1][3])
    png = png_bytes(image)
    b64 = base64.b64encode(png).decode()
    floats = (image / 255.0).astype(np.float32)
    answers = {
        "native-multipart": client.post(
            f"/api/v1/models/{MODEL}/predict", files={"files": ("x.png", png, "image/png")}
        ).json()["predictions"][0]["probabilities"],
        "native-raw": client.post(
            f"/api/v1/models/{MODEL}/predict", content=png, headers={"content-type": "image/png"}
        ).json()["predictions"][0]["probabilities"],
        "native-base64": client.post(f"/api/v1/models/{MODEL}/predict", json={"images": [b64]}).json()["predictions"][
            0
        ]["probabilities"],
        "native-tensor": client.post(
            f"/api/v1/models/{MODEL}/predict", json={"tensor": [image.tolist()], "dtype": "uint8"}
        ).json()["predictions"][0]["probabilities"],
        "tfs-b64": client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": b64}]}).json()["predictions"][
            0
        ],
        "tfs-rows": client.post(
            f"/v1/models/{MODEL}/versions/1:predict", json={"instances": [floats[..., None].tolist()]}
        ).json()["predictions"][0],
        "tfs-columnar": client.post(
            f"/v1/models/{MODEL}:predict", json={"inputs": {"images": [floats.tolist()]}}
        ).json()["outputs"][0],
        "v2-uint8": client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [
                    {"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": image.ravel().tolist()}
                ]
            },
        ).json()["outputs"][0]["data"],
        "v2-bytes": client.post(
            f"/v2/models/{MODEL}/versions/1/infer",
            json={"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]},
        ).json()["outputs"][0]["data"],
    }
    reference = np.array(answers["native-multipart"])
    assert int(reference.argmax()) == label
    for api, probabilities in answers.items():
        np.testing.assert_allclose(probabilities, reference, atol=1e-5, err_msg=api)


def test_tf_serving_status_metadata_and_formats(client, sample):
    status = client.get(f"/v1/models/{MODEL}").json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get(f"/v1/models/{MODEL}/versions/1").json() == status
    metadata = client.get(f"/v1/models/{MODEL}/metadata").json()
    assert metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    serving = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert [d["size"] for d in serving["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert serving["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"

    floats = (sample[0][:2] / 255.0)[..., None].tolist()
    rows = client.post(f"/v1/models/{MODEL}:predict", json={"instances": floats}).json()
    assert np.array(rows["predictions"]).shape == (2, 10)
    maps = client.post(f"/v1/models/{MODEL}:predict", json={"signature_name": "feature_maps", "instances": floats[:1]})
    assert np.array(maps.json()["predictions"][0]["conv1"]).shape == (28, 28, 64)
    columnar = client.post(f"/v1/models/{MODEL}:predict", json={"signature_name": "feature_maps", "inputs": floats})
    assert np.array(columnar.json()["outputs"]["pool3"]).shape == (2, 3, 3, 256)
    for body, message in [
        ({"instances": floats, "inputs": floats}, "only one of"),
        ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances'"),
        ({"instances": []}, "non-empty"),
        ({"signature_name": "nope", "instances": floats}, "not found in signature def"),
    ]:
        response = client.post(f"/v1/models/{MODEL}:predict", json=body)
        assert response.status_code == 400 and message in response.json()["error"]


def test_v2_metadata_ready_and_binary_tensors(client, sample):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    metadata = client.get(f"/v2/models/{MODEL}").json()
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}

    batch = (sample[0][:64] / 255.0).astype("<f4")[..., None]
    header = json.dumps(
        {
            "id": "req-7",
            "inputs": [
                {
                    "name": "images",
                    "shape": [64, 28, 28, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": batch.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        f"/v2/models/{MODEL}/infer",
        content=header + batch.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    assert meta["id"] == "req-7" and meta["outputs"][0]["shape"] == [64, 10]
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 64 * 10 * 4
    probabilities = np.frombuffer(response.content[length:], "<f4").reshape(64, 10)
    assert np.mean(probabilities.argmax(1) == sample[1][:64]) >= 0.9

    pngs = [png_bytes(img) for img in sample[0][:3]]
    raw = b"".join(struct.pack("<I", len(p)) + p for p in pngs)
    header = json.dumps(
        {
            "inputs": [
                {"name": "images", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    response = client.post(
        f"/v2/models/{MODEL}/infer", content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    data = np.array(response.json()["outputs"][0]["data"]).reshape(3, 10)
    np.testing.assert_allclose(data, probabilities[:3], atol=1e-5)


def test_feature_maps_match_summary_shapes(client, sample):
    png = png_bytes(sample[0][0])
    summary = {layer["name"]: layer for layer in client.get(f"/api/v1/models/{MODEL}/summary").json()["layers"]}
    body = client.post(f"/api/v1/models/{MODEL}/feature-maps", files={"file": ("x.png", png, "image/png")}).json()
    assert body["model_name"] == MODEL and len(body["layers"]) == 11
    for layer in body["layers"]:
        assert layer["shape"] == summary[layer["name"]]["output_shape"]
        assert list(np.array(layer["data"]).shape) == layer["shape"]
    single = client.post(
        f"/api/v1/models/{MODEL}/feature-maps?layer=pool1", json={"tensor": sample[0][0].tolist(), "dtype": "uint8"}
    ).json()
    assert [layer["name"] for layer in single["layers"]] == ["pool1"]
    picture = client.post(
        f"/api/v1/models/{MODEL}/feature-maps?layer=conv1",
        files={"file": ("x.png", png, "image/png")},
        headers={"accept": "image/png"},
    )
    assert picture.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(picture.content))
    assert grid.size == (8 * 56 + 7 * 2, 8 * 56 + 7 * 2)  # 64 channels → 8×8 tiles of 28×28 scaled ×2
    dense = client.post(f"/api/v1/models/{MODEL}/feature-maps?layer=fc1&format=png", files={"file": ("x.png", png)})
    assert dense.status_code == 200 and Image.open(io.BytesIO(dense.content)).format == "PNG"


def test_polarity_of_product_photos(client, sample):
    """A dark object on a white background (a product photo), larger and in colour, is inverted back."""
    images, labels = sample[0][:20], sample[1][:20]
    files = []
    for image in images:
        photo = Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BICUBIC).convert("RGB")
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=95)
        files.append(("files", ("p.jpg", buffer.getvalue(), "image/jpeg")))
    auto = client.post(f"/api/v1/models/{MODEL}/predict", files=files).json()["predictions"]
    kept = client.post(f"/api/v1/models/{MODEL}/predict?polarity=keep", files=files).json()["predictions"]
    auto_accuracy = np.mean([p["class_id"] for p in auto] == labels)
    kept_accuracy = np.mean([p["class_id"] for p in kept] == labels)
    assert auto_accuracy >= 0.85 and kept_accuracy < auto_accuracy - 0.3


def test_lenet5_is_served_too(client, sample):
    response = client.post("/api/v1/models/lenet5/predict", json={"tensor": sample[0][:20].tolist(), "dtype": "uint8"})
    assert response.status_code == 200
    predicted = [p["class_id"] for p in response.json()["predictions"]]
    assert np.mean(np.array(predicted) == sample[1][:20]) >= 0.7


def test_concurrent_requests_are_batched(client, sample):
    pngs = [png_bytes(img) for img in sample[0][:96]]

    def call(png: bytes) -> int:
        response = client.post(
            f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": base64.b64encode(png).decode()}]}
        )
        return response.status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(call, pngs))
    assert statuses == [200] * len(pngs)
    metrics = client.get("/metrics").text
    merged = [
        line
        for line in metrics.splitlines()
        if line.startswith('cnn_batch_requests_bucket{le="1.0",model="fashion_cnn:1"}')
    ]
    total = [
        line for line in metrics.splitlines() if line.startswith('cnn_batch_requests_count{model="fashion_cnn:1"}')
    ]
    single, calls = float(merged[0].split()[-1]), float(total[0].split()[-1])
    assert calls > single, "no model call merged more than one request"
    assert (
        'cnn_requests_total{method="POST",model="fashion_cnn",route="/v1/models/{name}:predict",status="200"}'
        in metrics
    )


def test_api_key(bundled_repository):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings

    app = create_app(Settings(model_repository=bundled_repository, models=["lenet5"], api_key="s3cret"))
    with TestClient(app) as secured:
        assert secured.get("/api/v1/models").status_code == 401
        assert secured.get("/api/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert secured.get("/v2/models/lenet5", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert secured.get("/health/ready").status_code == 200  # probes need no key
        assert [m["name"] for m in secured.get("/api/v1/models", headers={"X-API-Key": "s3cret"}).json()["models"]] == [
            "lenet5"
        ]
