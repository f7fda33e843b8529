"""Malformed requests get a 4xx JSON error naming the problem, and the next request still succeeds."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from .conftest import png_bytes

MODEL = "fashion_cnn"
GOOD_PNG = png_bytes(np.zeros((28, 28), np.uint8))
NOISY_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels (the data is tiny: a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def upload(content: bytes, content_type: str = "image/png") -> dict:
    return {"files": [("files", ("upload", content, content_type))]}


def v2(shape, datatype, data) -> dict:
    return {"json": {"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data}]}}


V2_BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {"name": "images", "shape": [1, 28, 28, 1], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
        ]
    }
).encode()
NATIVE = f"/api/v1/models/{MODEL}/predict"
TFS = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"

BAD_REQUESTS = {
    "not an image": ("post", NATIVE, upload(b"hello, world", "image/png"), 400, "not a decodable image"),
    "truncated PNG": ("post", NATIVE, upload(NOISY_PNG[: len(NOISY_PNG) // 2]), 400, "truncated or corrupt"),
    "truncated JPEG": ("post", NATIVE, upload(jpeg_bytes()[:200], "image/jpeg"), 400, "truncated or corrupt"),
    "unsupported format": (
        "post",
        NATIVE,
        upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        400,
        "not a decodable image",
    ),
    "pixel bomb": ("post", NATIVE, upload(forged_png(20_000, 20_000)), 413, "exceeds"),
    "zero-size image": ("post", NATIVE, upload(forged_png(0, 0)), 400, "image"),
    "oversize body": ("post", NATIVE, upload(b"\0" * (3 * 1024 * 1024)), 413, "exceeds the limit"),
    "no files": (
        "post",
        NATIVE,
        {"data": {"note": "x"}, "files": {"other": ("a.txt", b"", "text/plain")}},
        400,
        "image",
    ),
    "unsupported content type": (
        "post",
        NATIVE,
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        415,
        "Content-Type",
    ),
    "malformed JSON": (
        "post",
        NATIVE,
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "malformed JSON",
    ),
    "both images and tensor": ("post", NATIVE, {"json": {"images": [], "tensor": []}}, 400, "exactly one"),
    "bad base64": ("post", NATIVE, {"json": {"images": ["***"]}}, 400, "base64"),
    "wrong shape": ("post", NATIVE, {"json": {"tensor": [[1, 2, 3]]}}, 400, "does not match the model input"),
    "wrong dtype": ("post", NATIVE, {"json": {"tensor": [[["a"] * 28] * 28]}}, 400, "numbers"),
    "ragged tensor": ("post", NATIVE, {"json": {"tensor": [[1, 2], [3]]}}, 400, "rectangular"),
    "empty batch": ("post", NATIVE, {"json": {"tensor": []}}, 400, "does not match"),
    "empty image list": ("post", NATIVE, {"json": {"images": []}}, 400, "no images"),
    "out of range floats": ("post", NATIVE, {"json": {"tensor": np.full((1, 28, 28), 3.0).tolist()}}, 400, "[0, 1]"),
    "top_k zero": ("post", NATIVE + "?top_k=0", upload(GOOD_PNG), 422, "top_k"),
    "unknown model": ("post", "/api/v1/models/resnet/predict", upload(GOOD_PNG), 404, "not found"),
    "unknown version": ("post", f"/api/v1/models/{MODEL}/versions/7/predict", upload(GOOD_PNG), 404, "no version 7"),
    "unknown layer": (
        "post",
        f"/api/v1/models/{MODEL}/feature-maps?layer=conv9",
        {"files": {"file": ("x.png", GOOD_PNG)}},
        404,
        "no layer 'conv9'",
    ),
    "png of all layers": (
        "post",
        f"/api/v1/models/{MODEL}/feature-maps?format=png",
        {"files": {"file": ("x.png", GOOD_PNG)}},
        400,
        "one layer",
    ),
    "two images for feature maps": (
        "post",
        f"/api/v1/models/{MODEL}/feature-maps",
        {"files": [("f", ("a.png", GOOD_PNG)), ("f", ("b.png", GOOD_PNG))]},
        400,
        "exactly one",
    ),
    "dotted model name": ("get", "/api/v1/models/..%2F..%2Fetc", {}, 404, ""),
    "tfs rank-2 tensor": (
        "post",
        TFS,
        {"json": {"instances": [[1.0, 2.0, 3.0]]}},
        400,
        "does not match the model input",
    ),
    "tfs NaN": (
        "post",
        TFS,
        {
            "content": b'{"instances": ['
            + json.dumps(np.zeros((28, 28, 1)).tolist()).replace("0.0", "NaN", 1).encode()
            + b"]}"
        },
        400,
        "NaN",
    ),
    "tfs unknown input": ("post", TFS, {"json": {"instances": [{"pixels": 1}]}}, 400, "unknown input"),
    "tfs mixed b64 and tensor": (
        "post",
        TFS,
        {"json": {"instances": [{"b64": base64.b64encode(GOOD_PNG).decode()}, [[0.0]]]}},
        400,
        "mixing",
    ),
    "tfs body not object": ("post", TFS, {"json": [1, 2]}, 400, "JSON object"),
    "tfs unknown model": ("post", "/v1/models/nope:predict", {"json": {"instances": [[0]]}}, 404, "not found"),
    "tfs unknown version": ("get", f"/v1/models/{MODEL}/versions/9", {}, 404, "no version 9"),
    "v2 wrong shape": ("post", V2, v2([1, 3], "FP32", [1, 2, 3]), 400, "does not match the model input"),
    "v2 count mismatch": ("post", V2, v2([1, 28, 28, 1], "FP32", [0.0] * 10), 400, "needs 784 values"),
    "v2 unsupported datatype": ("post", V2, v2([1, 28, 28, 1], "INT8", [0] * 784), 400, "unsupported datatype"),
    "v2 unknown input": (
        "post",
        V2,
        {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}},
        400,
        "unknown input",
    ),
    "v2 no inputs": ("post", V2, {"json": {"inputs": []}}, 400, "inputs"),
    "v2 data not an array": ("post", V2, v2([1, 28, 28, 1], "FP32", {"a": 1}), 400, "'data' must be a JSON array"),
    "v2 shape not integers": ("post", V2, v2(["1", 28, 28, 1], "FP32", [0.0] * 784), 400, "shape"),
    "v2 data with booleans": ("post", V2, v2([1, 28, 28, 1], "FP32", [True] * 784), 400, "not true or false"),
    "v2 bad binary size": (
        "post",
        V2,
        {
            "content": V2_BINARY_HEADER + b"\0" * 10,
            "headers": {"Inference-Header-Content-Length": str(len(V2_BINARY_HEADER))},
        },
        400,
        "binary_data_size",
    ),
    "v2 bad header length": (
        "post",
        V2,
        {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}},
        400,
        "outside the body",
    ),
    "v2 unknown output": (
        "post",
        V2,
        {
            "json": {
                "inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [0] * 784}],
                "outputs": [{"name": "logits"}],
            }
        },
        400,
        "unknown output",
    ),
    "v2 unknown model": ("get", "/v2/models/nope/ready", {}, 404, "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_4xx_json_and_server_keeps_serving(client, case):
    method, url, kwargs, status, message = BAD_REQUESTS[case]
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert message in response.json()["error"]
    follow_up = client.post(NATIVE, files={"files": ("ok.png", GOOD_PNG, "image/png")})
    assert follow_up.status_code == 200


def test_one_by_one_image_is_a_valid_image(client):
    response = client.post(NATIVE, files={"files": ("dot.png", png_bytes(np.full((1, 1), 255, np.uint8)), "image/png")})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1


def test_load_errors_reach_clients_without_paths_or_internals(tmp_path, bundled_repository):
    """The log gets the cause with its path; the status API gets a stable reason."""
    import shutil

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings

    for name in ("lenet5", "corrupt", "no_card"):
        shutil.copytree(bundled_repository / "lenet5" / "1", tmp_path / name / "1")
    (tmp_path / "no_card" / "1" / "model_card.json").unlink()
    (tmp_path / "corrupt" / "1" / "variables" / "variables.index").write_bytes(b"not a checkpoint index")
    app = create_app(Settings(model_repository=tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        versions = {m["name"]: m["versions"][0] for m in client.get("/api/v1/models").json()["models"]}
        assert versions["lenet5"]["state"] == "AVAILABLE"
        no_card = versions["no_card"]
        assert (no_card["version"], no_card["state"], no_card["error"]) == (1, "END", "model_card.json is missing")
        assert [t["state"] for t in no_card["transitions"]] == ["START", "LOADING", "END"]
        assert versions["corrupt"]["error"] == "the SavedModel could not be loaded"
        refused = client.post("/v1/models/corrupt:predict", json={"instances": np.zeros((1, 28, 28, 1)).tolist()})
        assert refused.status_code == 503
        everything = json.dumps([versions, refused.json(), client.get("/v1/models/corrupt").json()])
        assert str(tmp_path) not in everything and "variables" not in everything
