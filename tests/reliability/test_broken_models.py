"""Model versions that fail to load are reported, logged and refused, while the healthy ones serve.

The repository holds ``fashion_cnn/1`` (good), ``fashion_cnn/2`` (corrupt ``saved_model.pb``),
``corrupt/1`` (the same corruption), ``no_card/1`` (no ``model_card.json``) and ``bad_card/1`` (a card
that is not JSON).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from . import payloads as p
from .servers import ServerProcess, running_server

BROKEN = {"corrupt": 1, "no_card": 1, "bad_card": 1}


def _broken_repository(good_repository: Path, root: Path) -> Path:
    good = good_repository / "fashion_cnn" / "1"
    shutil.copytree(good, root / "fashion_cnn" / "1")
    for target in (root / "fashion_cnn" / "2", root / "corrupt" / "1", root / "no_card" / "1", root / "bad_card" / "1"):
        shutil.copytree(good, target)
    for target in (root / "fashion_cnn" / "2", root / "corrupt" / "1"):
        (target / "saved_model.pb").write_bytes(b"\x08\x01this is not a SavedModel protobuf" * 64)
    (root / "no_card" / "1" / "model_card.json").unlink()
    (root / "bad_card" / "1" / "model_card.json").write_text('{"input": ')
    return root


@pytest.fixture(scope="module")
def broken(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server over the repository with broken versions."""
    root = tmp_path_factory.mktemp("broken")
    with running_server(_broken_repository(model_repository, root / "repository"), root / "server.log") as server:
        yield server


@pytest.fixture
def client(broken: ServerProcess) -> Iterator[httpx.Client]:
    """A client of :func:`broken` (this module's own, overriding the suite-wide ``client``)."""
    with httpx.Client(base_url=broken.base_url, timeout=60.0) as http:
        yield http


def test_each_failure_is_logged_with_its_path(broken: ServerProcess) -> None:
    errors = [line for line in broken.log().splitlines() if " ERROR " in line]
    for label, path in [("fashion_cnn:2", "fashion_cnn/2"), ("corrupt:1", "corrupt/1"), ("no_card:1", "no_card/1"),
                        ("bad_card:1", "bad_card/1")]:  # fmt: skip
        assert any(f"model {label} failed to load from" in line and path in line for line in errors), (label, errors)
    assert not any("fashion_cnn:1" in line for line in errors)


def test_model_list_shows_unavailable_versions_with_errors(client: httpx.Client) -> None:
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    versions = {v["version"]: v for v in models["fashion_cnn"]["versions"]}
    assert versions[1]["state"] == "AVAILABLE" and versions[1]["error"] is None
    assert versions[2]["state"] == "END" and versions[2]["error"]
    assert models["fashion_cnn"]["default_version"] == 1
    for name in BROKEN:
        (only,) = models[name]["versions"]
        assert only["state"] == "END" and only["error"], models[name]


def test_model_detail_reports_the_error(client: httpx.Client) -> None:
    for path in ("/api/v1/models/corrupt", "/api/v1/models/no_card", "/api/v1/models/fashion_cnn/versions/2"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.json()["state"] == "END" and response.json()["error"], path


def test_tfserving_status_reports_failed_versions(client: httpx.Client) -> None:
    """TF Serving reports a version that failed to load as state END with an error status."""
    for name in BROKEN:
        response = client.get(f"/v1/models/{name}")
        assert response.status_code == 200
        (status,) = response.json()["model_version_status"]
        assert status["state"] == "END" and status["status"]["error_code"] != "OK", status
        assert status["status"]["error_message"]
    statuses = {s["version"]: s for s in client.get("/v1/models/fashion_cnn").json()["model_version_status"]}
    assert statuses["1"]["state"] == "AVAILABLE" and statuses["1"]["status"]["error_code"] == "OK"
    assert statuses["2"]["state"] == "END" and statuses["2"]["status"]["error_message"]


def test_v2_readiness_is_503_for_broken_and_200_for_healthy(client: httpx.Client) -> None:
    for path in ("/v2/models/corrupt/ready", "/v2/models/no_card/ready", "/v2/models/fashion_cnn/versions/2/ready"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.json()["ready"] is False
    for path in ("/v2/models/fashion_cnn/ready", "/v2/models/fashion_cnn/versions/1/ready"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "call",
    [
        lambda: p.native_tensor(p.valid_batch(1), model="corrupt"),
        lambda: p.native_tensor(p.valid_batch(1), model="no_card"),
        lambda: p.native_tensor(p.valid_batch(1), version=2),
        lambda: p.feature_maps_tensor(p.valid_batch(1)[0], model="bad_card"),
        lambda: p.tfserving_instances(p.valid_batch(1), model="corrupt"),
        lambda: p.tfserving_instances(p.valid_batch(1), version=2),
        lambda: p.Call("GET", "/v1/models/no_card/metadata"),
        lambda: p.v2_json(p.valid_batch(1), model="corrupt"),
        lambda: p.v2_json(p.valid_batch(1), version=2),
        lambda: p.Call("GET", "/v2/models/bad_card"),
    ],
    ids=[
        "native-corrupt",
        "native-no-card",
        "native-version-2",
        "feature-maps-bad-card",
        "tfserving-corrupt",
        "tfserving-version-2",
        "tfserving-metadata-no-card",
        "v2-corrupt",
        "v2-version-2",
        "v2-metadata-bad-card",
    ],
)
def test_requests_to_a_broken_version_get_503(call: Callable[[], p.Call], client: httpx.Client) -> None:
    response = call().send(client)
    assert response.status_code == 503, response.text[:300]
    assert response.json()["error"]


def test_the_healthy_model_serves_on_all_apis(client: httpx.Client) -> None:
    batch = p.valid_batch(2)
    for call in (
        p.native_tensor(batch),
        p.tfserving_instances(batch),
        p.v2_json(batch),
        p.feature_maps_tensor(batch[0]),
    ):
        assert call.send(client).status_code == 200, call.path
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == {
        "fashion_cnn:1": "READY",
        "fashion_cnn:2": "END",
        "corrupt:1": "END",
        "no_card:1": "END",
        "bad_card:1": "END",
    }


def test_not_ready_when_a_required_model_is_broken(model_repository: Path, tmp_path: Path) -> None:
    """With CNN_MODELS naming a broken model the server is live but not ready; the rest still serves."""
    repository = _broken_repository(model_repository, tmp_path / "repository")
    server = ServerProcess(repository, tmp_path / "server.log", {"CNN_MODELS": '["fashion_cnn:1", "corrupt"]'})
    try:
        server.wait_until_ready(path="/health/live")  # uvicorn listens once the models are loaded
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["models"] == {"fashion_cnn:1": "READY", "corrupt:1": "END"}
            assert client.get("/v2/health/ready").status_code == 503
            assert p.native_tensor(p.valid_batch(1)).send(client).status_code == 200
    finally:
        server.close()
