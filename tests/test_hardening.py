"""One rule per input, whichever route carries it: version numbers are ASCII digits, booleans are not
pixels, a NaN image is refused like a NaN tensor; every 503 says when to retry and every 401 how to
authenticate; a repeated API key is refused; odd directory names never stop the repository scan."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.core.settings import Settings
from service.hosting.scan import scan_versions
from tests.lifecycle_helpers import MODEL, publish, publish_broken

ROWS = np.zeros((1, 28, 28, 1)).tolist()


@pytest.mark.parametrize("version", ["0_1", "%20%201", "%D9%A1", "%C2%B2", "+1", "9" * 30])
def test_a_version_is_ascii_digits_in_every_rest_dialect(client, version: str):
    calls = {
        "native": client.get(f"/api/v1/models/fashion_cnn/versions/{version}"),
        "native predict": client.post(f"/api/v1/models/fashion_cnn/versions/{version}/predict", json={"tensor": ROWS}),
        "TF Serving": client.post(f"/v1/models/fashion_cnn/versions/{version}:predict", json={"instances": ROWS}),
        "TF Serving status": client.get(f"/v1/models/fashion_cnn/versions/{version}"),
        "v2": client.get(f"/v2/models/fashion_cnn/versions/{version}/ready"),
    }
    answers = {name: (r.status_code, r.json()["error"]) for name, r in calls.items()}
    assert {status for status, _ in answers.values()} == {400}, answers
    assert all("ASCII digits" in error for _, error in answers.values()), answers


def test_booleans_are_not_pixels(client):
    tensor = np.full((1, 28, 28), 0.5).tolist()
    tensor[0][0][0] = True
    answers = [
        client.post("/api/v1/models/fashion_cnn/predict", json={"tensor": tensor}),
        client.post("/v1/models/fashion_cnn:predict", json={"instances": [tensor[0]]}),
        client.post(
            "/v2/models/fashion_cnn/infer",
            json={"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "FP32", "data": tensor}]},
        ),
    ]
    assert [r.status_code for r in answers] == [400, 400, 400]
    assert all("true" in r.json()["error"] for r in answers)


def test_a_float_image_of_nan_is_refused(client):
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), np.nan, np.float32), mode="F").save(buffer, format="TIFF")
    answer = client.post(
        "/api/v1/models/fashion_cnn/predict", content=buffer.getvalue(), headers={"Content-Type": "image/tiff"}
    )
    assert answer.status_code == 400 and "NaN" in answer.json()["error"]


def test_image_errors_name_no_library_internals(client):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)  # a text bomb: Pillow refuses it
    png = io.BytesIO()
    Image.new("L", (28, 28)).save(png, format="PNG", pnginfo=info)
    answer = client.post(
        "/api/v1/models/fashion_cnn/predict", content=png.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 400, answer.text
    assert "Plugin" not in answer.json()["error"] and "MAX_TEXT_CHUNK" not in answer.json()["error"]


def test_every_not_ready_503_says_when_to_retry(bundled_repository: Path):
    app = create_app(Settings(model_repository=bundled_repository, models=["lenet5"]))
    client = TestClient(app)  # not started: nothing is loaded yet
    for path in ("/health/ready", "/v2/health/ready"):
        response = client.get(path)
        assert response.status_code == 503 and response.headers["retry-after"] == "1", path


def _repository(tmp_path: Path, bundled_repository: Path) -> Path:
    repository = tmp_path / "models"
    (repository / MODEL).mkdir(parents=True)
    publish(bundled_repository / MODEL / "1", repository / MODEL, 1)
    return repository


def test_a_503_says_when_to_retry_and_a_401_how_to_authenticate(bundled_repository: Path, tmp_path: Path):
    repository = _repository(tmp_path, bundled_repository)
    publish_broken(bundled_repository / MODEL / "1", repository / MODEL, 2)
    settings = Settings(model_repository=repository, version_policy="all", poll_interval_s=0, api_key="k3y")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = {"X-API-Key": "k3y"}
        failed = client.post(f"/v1/models/{MODEL}/versions/2:predict", json={"instances": ROWS}, headers=key)
        assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
        not_ready = client.get(f"/v2/models/{MODEL}/versions/2/ready", headers=key)
        assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "1"
        assert client.post(f"/v1/models/{MODEL}/versions/1:predict", json={"instances": ROWS}, headers=key).is_success
        anonymous = client.get(f"/api/v1/models/{MODEL}")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        twice = client.get(f"/api/v1/models/{MODEL}", headers=[("X-API-Key", "wrong"), ("X-API-Key", "k3y")])
        assert twice.status_code == 401 and "once" in twice.json()["error"]
        label = client.put(f"/api/v1/models/{MODEL}/labels/stable", json={"version": True}, headers=key)
        assert label.status_code == 422
        big = client.post("/v2/repository/index", content=b'{"ready": false' + b" " * 8000 + b"}", headers=key)
        assert big.status_code == 413


def test_odd_directory_names_are_ignored_and_logged_once(bundled_repository: Path, tmp_path: Path, caplog):
    repository = _repository(tmp_path, bundled_repository)
    for odd in ("²", "١", "0_1", "v2", "notes"):
        (repository / MODEL / odd).mkdir()
    reported: set[Path] = set()
    with caplog.at_level(logging.WARNING, logger="service.hosting.scan"):
        assert sorted(scan_versions(repository / MODEL, reported)) == [1]
        assert sorted(scan_versions(repository / MODEL, reported)) == [1]
    assert len(caplog.records) == 5


def test_a_new_version_is_served_beside_odd_names(bundled_repository: Path, tmp_path: Path):
    repository = _repository(tmp_path, bundled_repository)
    (repository / MODEL / "²").mkdir()
    settings = Settings(model_repository=repository, poll_interval_s=0)
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        publish(bundled_repository / MODEL / "1", repository / MODEL, 2)
        client.portal.call(app.state.host.reconciler.sync)
        assert client.get(f"/api/v1/models/{MODEL}").json()["version"] == 2


# -- HTTP hygiene --------------------------------------------------------------------------------------------
def test_security_headers_on_every_response(client):
    for path in ("/", "/health/live", "/api/v1/models", "/api/v1/models/nope", "/docs"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
    assert "'unsafe-inline'" not in client.get("/").headers["content-security-policy"]  # the explorer page


def test_a_loopback_server_answers_only_its_own_names(client):
    assert client.get("/health/live", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/health/live", headers={"Host": "localhost"}).status_code == 200
    assert client.get("/health/live", headers={"Host": "[::1]:8000"}).status_code == 200
    rebound = client.get("/api/v1/models", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "CNN_ALLOWED_HOSTS" in rebound.json()["error"]


def test_model_control_refuses_what_a_browser_sends_cross_site(bundled_repository: Path, tmp_path: Path):
    repository = _repository(tmp_path, bundled_repository)
    settings = Settings(model_repository=repository, poll_interval_s=0)  # loopback: control allowed, no key
    with TestClient(create_app(settings)) as client:
        unload = f"/v2/repository/models/{MODEL}/unload"
        form = client.post(unload, content=b"x", headers={"Content-Type": "text/plain"})  # a "simple" request
        assert form.status_code == 415
        other_site = client.post(
            unload, headers={"Origin": "http://attacker.example", "Content-Type": "application/json"}
        )
        assert other_site.status_code == 403 and "origin" in other_site.json()["error"]
        label = client.put(f"/api/v1/models/{MODEL}/labels/stable", json={"version": 1}, headers={"Origin": "null"})
        assert label.status_code == 403
        assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200  # still loaded
        same_site = client.post(unload, headers={"Origin": "http://testserver"})  # the explorer's own origin
        assert same_site.status_code == 200 and client.get(f"/v2/models/{MODEL}/ready").status_code == 503
