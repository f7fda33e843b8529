"""The direct ``:predict`` handler answers exactly as the FastAPI route it stands in for."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import png_bytes

MODEL = "fashion_cnn"
KEY = "s3cret"


def _app(repository, *, fast_path: bool, api_key: str | None = None):
    from service.app import create_app
    from service.settings import Settings

    return create_app(
        Settings(
            model_repository=repository,
            models=[MODEL, "lenet5"],
            max_request_bytes=256 * 1024,
            fast_path=fast_path,
            api_key=api_key,
        )
    )


@pytest.fixture(scope="module")
def clients(bundled_repository) -> Iterator[dict]:
    """Both variants, each with an API key so the key check is compared too."""
    from fastapi.testclient import TestClient

    fast = _app(bundled_repository, fast_path=True, api_key=KEY)
    slow = _app(bundled_repository, fast_path=False, api_key=KEY)
    with TestClient(fast, raise_server_exceptions=False) as f, TestClient(slow, raise_server_exceptions=False) as s:
        yield {"fast": f, "fastapi": s}


def _cases(sample: np.ndarray) -> list[tuple[str, str, dict, bytes]]:
    images = sample[:2]
    rows = (images[..., np.newaxis] / 255.0).round(4).tolist()
    auth = {"X-API-Key": KEY, "content-type": "application/json"}

    def body(value) -> bytes:
        return json.dumps(value).encode()

    b64 = base64.b64encode(png_bytes(images[0])).decode()
    return [
        ("rows", f"/v1/models/{MODEL}:predict", auth, body({"instances": rows})),
        ("columnar", f"/v1/models/{MODEL}/versions/1:predict", auth, body({"inputs": rows})),
        ("b64", f"/v1/models/{MODEL}:predict", auth, body({"instances": [{"b64": b64}]})),
        ("named", f"/v1/models/{MODEL}:predict", auth, body({"instances": [{"images": rows[0]}]})),
        ("bearer", f"/v1/models/{MODEL}:predict", {"Authorization": f"Bearer {KEY}"}, body({"instances": rows})),
        ("no key", f"/v1/models/{MODEL}:predict", {}, body({"instances": rows})),
        ("wrong key", f"/v1/models/{MODEL}:predict", {"X-API-Key": "nope"}, body({"instances": rows})),
        ("unknown model", "/v1/models/nope:predict", auth, body({"instances": rows})),
        ("unknown version", f"/v1/models/{MODEL}/versions/9:predict", auth, body({"instances": rows})),
        ("bad version", f"/v1/models/{MODEL}/versions/x:predict", auth, body({"instances": rows})),
        ("malformed JSON", f"/v1/models/{MODEL}:predict", auth, b'{"instances": [1,'),
        ("empty body", f"/v1/models/{MODEL}:predict", auth, b""),
        ("wrong shape", f"/v1/models/{MODEL}:predict", auth, body({"instances": [[1.0, 2.0, 3.0]]})),
        ("ragged", f"/v1/models/{MODEL}:predict", auth, body({"instances": [[[0.0]], [[0.0], [0.0]]]})),
        ("strings", f"/v1/models/{MODEL}:predict", auth, body({"instances": [["0.5"]]})),
        ("bad signature", f"/v1/models/{MODEL}:predict", auth, body({"signature_name": "x", "instances": rows})),
        ("too large", f"/v1/models/{MODEL}:predict", auth, body({"instances": rows * 100})),
        ("feature maps", "/v1/models/lenet5:predict", auth, body({"signature_name": "feature_maps", "inputs": rows})),
    ]


def test_fast_path_answers_like_the_fastapi_route(clients, fashion):
    for label, path, headers, content in _cases(fashion.test.images[:2]):
        fast = clients["fast"].post(path, headers=headers, content=content)
        slow = clients["fastapi"].post(path, headers=headers, content=content)
        assert fast.status_code == slow.status_code, label
        assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json", label
        assert fast.headers.get("retry-after") == slow.headers.get("retry-after"), label
        assert fast.json() == slow.json(), label
        if fast.status_code != 200:
            assert set(fast.json()) == {"error"}, label


def test_fast_path_results_are_correct_and_counted(clients, fashion):
    images, labels = fashion.test.images[:32], fashion.test.labels[:32]
    rows = (images[..., np.newaxis] / 255.0).round(4).tolist()
    response = clients["fast"].post(f"/v1/models/{MODEL}:predict", json={"instances": rows}, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (32, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    assert (predictions.argmax(axis=1) == labels).mean() >= 0.85
    metrics = clients["fast"].get("/metrics").text
    assert 'route="/v1/models/{name}:predict",status="200"' in metrics
    assert 'route="/v1/models/{name}:predict",status="401"' in metrics
    assert 'route="/v1/models/{name}/versions/{version}:predict",status="404"' in metrics
    assert 'route="/v1/models/{name}:predict",status="400"' in metrics


def test_other_requests_pass_through(clients):
    auth = {"X-API-Key": KEY}
    assert clients["fast"].get(f"/v1/models/{MODEL}", headers=auth).json()["model_version_status"][0]["state"] == (
        "AVAILABLE"
    )
    for method, path in [("GET", f"/v1/models/{MODEL}:predict"), ("POST", f"/v1/models/{MODEL}/extra/x:predict")]:
        fast = clients["fast"].request(method, path, headers=auth)
        slow = clients["fastapi"].request(method, path, headers=auth)
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
        assert fast.status_code == 404
