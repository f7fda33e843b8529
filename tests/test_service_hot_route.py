"""The hot routes (TF Serving ``:predict``, v2 ``infer`` and the native ``predict`` as
:class:`~service.transports.routing.DirectRoute`)
answer exactly as the same endpoints do as ordinary FastAPI routes, with their dependency and parameter
handling."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import png_bytes

MODEL = "fashion_cnn"
KEY = "s3cret"


def _app(repository, *, direct: bool):
    from fastapi import APIRouter, Depends
    from fastapi.routing import APIRoute

    from service.app import create_app
    from service.core.settings import Settings
    from service.transports import rest_native, rest_tfserving, rest_v2
    from service.transports.dependencies import require_api_key
    from service.transports.routing import versioned_route

    settings = Settings(
        model_repository=repository, models=[MODEL, "lenet5"], max_request_bytes=256 * 1024, api_key=KEY
    )
    app = create_app(settings)
    if not direct:  # the same endpoint as a plain APIRoute, tried before the direct one
        reference = APIRouter(dependencies=[Depends(require_api_key)])
        versioned_route(reference, "post", "/v1/models/{name}:predict")(rest_tfserving.predict)
        versioned_route(reference, "post", "/v2/models/{name}/infer")(rest_v2.infer)
        versioned_route(reference, "post", "/api/v1/models/{name}/predict")(rest_native.predict)
        app.router.routes[:0] = reference.routes
        assert all(type(route) is APIRoute for route in app.router.routes[:9])
    return app


@pytest.fixture(scope="module")
def clients(bundled_repository) -> Iterator[dict]:
    """Both variants, each with an API key so the key check is compared too."""
    from fastapi.testclient import TestClient

    direct, plain = _app(bundled_repository, direct=True), _app(bundled_repository, direct=False)
    with TestClient(direct, raise_server_exceptions=False) as d, TestClient(plain, raise_server_exceptions=False) as p:
        yield {"direct": d, "plain": p}


def _cases(sample: np.ndarray) -> list[tuple[str, str, dict | list, bytes]]:
    images = sample[:2]
    rows = (images[..., np.newaxis] / 255.0).round(4).tolist()
    auth = {"X-API-Key": KEY, "content-type": "application/json"}

    def body(value) -> bytes:
        return json.dumps(value).encode()

    b64 = base64.b64encode(png_bytes(images[0])).decode()
    floats = (images[..., np.newaxis] / 255.0).astype("<f4")
    tensor = {"name": "images", "shape": list(floats.shape), "datatype": "FP32"}
    header = body({"inputs": [{**tensor, "parameters": {"binary_data_size": floats.nbytes}}]})
    binary = {**auth, "content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    v2_json = body({"inputs": [{**tensor, "data": floats.ravel().tolist()}]})
    png = {**auth, "content-type": "image/png"}
    native = f"/api/v1/models/{MODEL}/predict"
    boundary = "hotroutetestboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes(images[0])
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = {**auth, "content-type": f"multipart/form-data; boundary={boundary}"}
    return [
        ("native PNG", native, png, png_bytes(images[0])),
        ("native multipart", f"{native}?top_k=2", form, multipart),
        ("native top_k", f"{native}?top_k=3&polarity=keep", png, png_bytes(images[1])),
        ("native version in query", f"{native}?version=1", png, png_bytes(images[1])),
        ("native bad top_k", f"{native}?top_k=0", png, png_bytes(images[0])),
        ("native bad polarity", f"{native}?polarity=sideways", png, png_bytes(images[0])),
        ("native tensor", f"/api/v1/models/{MODEL}/versions/1/predict", auth, body({"tensor": rows})),
        ("native not an image", native, png, b"not a png"),
        ("native no key", native, {"content-type": "image/png"}, png_bytes(images[0])),
        ("v2 JSON", f"/v2/models/{MODEL}/infer", auth, v2_json),
        ("v2 binary", f"/v2/models/{MODEL}/versions/1/infer", binary, header + floats.tobytes()),
        ("v2 short binary", f"/v2/models/{MODEL}/infer", binary, header + floats.tobytes()[:100]),
        ("v2 no key", f"/v2/models/{MODEL}/infer", {}, v2_json),
        ("v2 unknown model", "/v2/models/nope/infer", auth, v2_json),
        ("v2 bad label", f"/v2/models/{MODEL}/labels/nope/infer", auth, v2_json),
        ("v2 bad datatype", f"/v2/models/{MODEL}/infer", auth, v2_json.replace(b"FP32", b"FP16")),
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
        (
            "two keys, the first right",
            f"/v1/models/{MODEL}:predict",
            [("X-API-Key", KEY), ("X-API-Key", "nope")],
            body({"instances": rows}),
        ),
        (
            "two keys, the second right",
            f"/v1/models/{MODEL}:predict",
            [("X-API-Key", "nope"), ("X-API-Key", KEY)],
            body({"instances": rows}),
        ),
    ]


def test_direct_route_answers_like_a_plain_route(clients, fashion):
    statuses = {}
    for label, path, headers, content in _cases(fashion.test.images[:2]):
        direct = clients["direct"].post(path, headers=headers, content=content)
        plain = clients["plain"].post(path, headers=headers, content=content)
        statuses[label] = direct.status_code
        assert direct.status_code == plain.status_code, label
        assert direct.headers["content-type"] == plain.headers["content-type"] == "application/json", label
        assert direct.headers.get("retry-after") == plain.headers.get("retry-after"), label
        assert direct.json() == plain.json(), label
        if direct.status_code != 200:
            assert set(direct.json()) == {"error"}, label
    assert statuses["rows"] == statuses["v2 JSON"] == statuses["v2 binary"] == statuses["native PNG"] == 200
    assert statuses["native multipart"] == statuses["native top_k"] == statuses["native tensor"] == 200
    assert statuses["native bad top_k"] == statuses["native bad polarity"] == 422
    assert statuses["native not an image"] == 400
    assert statuses["v2 short binary"] == statuses["v2 bad datatype"] == 400 and statuses["v2 no key"] == 401
    # A repeated key header is refused whichever copy is right (as over gRPC).
    assert statuses["no key"] == statuses["two keys, the first right"] == statuses["two keys, the second right"] == 401
    assert statuses["unknown model"] == 404 and statuses["too large"] == 413


def test_direct_route_results_are_correct_and_counted(clients, fashion):
    images, labels = fashion.test.images[:32], fashion.test.labels[:32]
    rows = (images[..., np.newaxis] / 255.0).round(4).tolist()
    response = clients["direct"].post(
        f"/v1/models/{MODEL}:predict", json={"instances": rows}, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 200
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (32, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    assert (predictions.argmax(axis=1) == labels).mean() >= 0.85
    metrics = clients["direct"].get("/metrics").text
    assert 'route="/v1/models/{name}:predict",status="200"' in metrics
    assert 'route="/v1/models/{name}:predict",status="401"' in metrics
    assert 'route="/v1/models/{name}/versions/{version}:predict",status="404"' in metrics
    assert 'route="/v1/models/{name}:predict",status="400"' in metrics


def test_direct_route_is_documented_like_any_route(clients):
    paths = clients["direct"].get("/openapi.json").json()["paths"]
    for path, field in (
        ("/v1/models/{name}:predict", "instances"),
        ("/v1/models/{name}/versions/{version}:predict", "instances"),
        ("/v2/models/{name}/infer", "datatype"),
        ("/v2/models/{name}/versions/{version}/infer", "datatype"),
        ("/api/v1/models/{name}/predict", "multipart/form-data"),
    ):
        operation = paths[path]["post"]
        assert field in json.dumps(operation["requestBody"])
        parameters = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert parameters == ({"name", "version"} if "versions" in path else {"name"})


def test_other_requests_are_routed_as_before(clients):
    auth = {"X-API-Key": KEY}
    assert clients["direct"].get(f"/v1/models/{MODEL}", headers=auth).json()["model_version_status"][0]["state"] == (
        "AVAILABLE"
    )
    for method, path in [("GET", f"/v1/models/{MODEL}:predict"), ("POST", f"/v1/models/{MODEL}/extra/x:predict")]:
        direct = clients["direct"].request(method, path, headers=auth)
        plain = clients["plain"].request(method, path, headers=auth)
        assert (direct.status_code, direct.json()) == (plain.status_code, plain.json())
        assert direct.status_code == 404
