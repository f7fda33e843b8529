"""Model lifecycle in one process: versions published, half-written, broken and removed; the config
file with policies and labels; the repository API. Polling is off and each test runs the reconciler's
``sync`` itself, so every step is deterministic (the live, polling server is tested under load in
``tests/reliability/test_lifecycle.py``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.lifecycle_helpers import MODEL, complete_half, entry, publish, publish_broken, serving, states, write_half

IMAGE = {"tensor": np.zeros((1, 28, 28), dtype=np.uint8).tolist(), "dtype": "uint8"}


@pytest.fixture
def source(bundled_repository: Path) -> Path:
    return bundled_repository / MODEL / "1"


@pytest.fixture
def repository(tmp_path: Path, source: Path) -> Path:
    """A repository holding ``lenet5/1``."""
    root = tmp_path / "repository"
    (root / MODEL).mkdir(parents=True)
    publish(source, root / MODEL, 1)
    return root


def answered_by(client: httpx.Client, path: str = f"/api/v1/models/{MODEL}/predict") -> int:
    response = client.post(path, json=IMAGE)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starts with {line_start!r}")


def test_a_new_version_takes_over_and_the_old_one_is_released(repository: Path, source: Path) -> None:
    with serving(repository) as (client, sync):
        assert answered_by(client) == 1
        publish(source, repository / MODEL, 2)
        sync()
        assert answered_by(client) == 2
        model = entry(client)
        assert model["default_version"] == 2
        assert states(model, 2) == ["START", "LOADING", "AVAILABLE"]
        assert states(model, 1) == ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
        status = client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
        assert [(s["version"], s["state"], s["status"]["error_code"]) for s in status] == [
            ("2", "AVAILABLE", "OK"), ("1", "END", "OK"),
        ]  # fmt: skip
        assert client.post(f"/api/v1/models/{MODEL}/versions/1/predict", json=IMAGE).status_code == 503
        assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 503
        assert client.get(f"/v2/models/{MODEL}/versions/2/ready").status_code == 200
        labels = f'model="{MODEL}"'
        assert metric(client, f'cnn_model_versions{{{labels},state="AVAILABLE"}}') == 1
        assert metric(client, f'cnn_model_versions{{{labels},state="END"}}') == 1
        assert metric(client, f'cnn_model_loads_total{{{labels},result="success"}}') == 2
        assert metric(client, f"cnn_model_unloads_total{{{labels}}}") == 1
        assert metric(client, f"cnn_model_load_seconds_count{{{labels}}}") == 2
        assert metric(client, f"cnn_model_warmup_seconds_count{{{labels}}}") == 2
        assert f'cnn_queue_images{{model="{MODEL}:1"}}' not in client.get("/metrics").text  # series dropped


def test_a_half_written_version_waits_until_complete_and_settled(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    with serving(repository) as (client, sync):
        write_half(source, model_dir, 2)
        sync()
        assert states(entry(client), 2) == ["START"]  # selected by the policy, not complete
        assert answered_by(client) == 1
        assert client.get(f"/v2/models/{MODEL}/versions/2/ready").status_code == 503
        complete_half(model_dir, 2)
        sync()  # complete now, but it was seen changing: one more scan must find it unchanged
        assert states(entry(client), 2) == ["START"] and answered_by(client) == 1
        sync()
        assert answered_by(client) == 2


def test_a_broken_version_is_reported_and_retried_when_its_files_change(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    with serving(repository) as (client, sync):
        publish_broken(source, model_dir, 2)
        sync()
        version = next(v for v in entry(client)["versions"] if v["version"] == 2)
        assert version["state"] == "END" and version["error"] == "the SavedModel could not be loaded"
        status = client.get(f"/v1/models/{MODEL}/versions/2").json()["model_version_status"][0]
        assert status["status"] == {"error_code": "UNKNOWN", "error_message": "the SavedModel could not be loaded"}
        assert answered_by(client) == 1  # the previous version keeps serving
        sync()  # the same files: not retried
        failures = f'cnn_model_loads_total{{model="{MODEL}",result="failure"}}'
        assert metric(client, failures) == 1
        shutil.copy(source / "saved_model.pb", model_dir / "2" / "saved_model.pb")
        sync()
        sync()
        assert answered_by(client) == 2 and metric(client, failures) == 1


def test_a_removed_version_is_unloaded(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    publish(source, model_dir, 2)
    with serving(repository, version_policy="all") as (client, sync):
        assert [v["state"] for v in entry(client)["versions"]] == ["AVAILABLE", "AVAILABLE"]
        assert answered_by(client, f"/api/v1/models/{MODEL}/versions/1/predict") == 1
        shutil.rmtree(model_dir / "2")
        sync()
        assert [(v["version"], v["state"]) for v in entry(client)["versions"]] == [(2, "END"), (1, "AVAILABLE")]
        assert answered_by(client) == 1


def test_serving_shortens_the_gil_switch_interval_and_puts_it_back(repository: Path) -> None:
    before = sys.getswitchinterval()
    with serving(repository, gil_switch_interval_ms=0.25) as (client, _):
        assert sys.getswitchinterval() == pytest.approx(0.00025)
        assert answered_by(client) == 1
    assert sys.getswitchinterval() == before


def _nice(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
def test_model_threads_run_below_the_event_loop(repository: Path) -> None:
    """The loader and the batch threads run ``compute_nice`` levels lower; the event loop's thread keeps its
    priority."""
    before = set(threading.enumerate())  # other tests' apps may leave threads of the same names
    with serving(repository, compute_nice=2) as (client, _):
        assert answered_by(client) == 1
        loop = client.portal.call(threading.get_native_id)
        base = _nice(loop)
        new = set(threading.enumerate()) - before
        model_threads = [t for t in new if t.name.startswith(("batch-", "model-loader"))]
        assert {t.name.split("-")[0] for t in model_threads} == {"batch", "model"}
        assert {_nice(t.native_id) for t in model_threads} == {min(19, base + 2)}
        assert _nice(loop) == base


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
def test_a_lowered_thread_starts_its_threads_as_low() -> None:
    """What an engine's threads inherit from the loader that starts them (OpenVINO's streams, TensorFlow's
    pools); the caller's priority is untouched."""
    from service.hosting.priority import lower_current_thread

    seen: dict[str, int] = {}

    def loader() -> None:
        lower_current_thread(3)
        seen["loader"] = _nice(threading.get_native_id())
        child = threading.Thread(target=lambda: seen.update(child=_nice(threading.get_native_id())))
        child.start()
        child.join()

    base = _nice(threading.get_native_id())
    thread = threading.Thread(target=loader)
    thread.start()
    thread.join()
    assert seen == {"loader": min(19, base + 3), "child": min(19, base + 3)}
    assert _nice(threading.get_native_id()) == base


def _write_config(path: Path, policy: dict, labels: dict) -> None:
    entry = {"name": MODEL, "base_path": MODEL, "model_version_policy": policy, "version_labels": labels}
    path.write_text(json.dumps({"model_config_list": [entry]}))


def test_config_file_policy_and_labels(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    for version in (2, 3):
        publish(source, model_dir, version)
    config = repository / "models.json"  # base_path is relative to the file
    _write_config(config, {"specific": {"versions": [2, 3]}}, {"stable": 2, "canary": 3, "next": 7})
    with serving(repository, model_config_file=config) as (client, sync):
        model = entry(client)
        assert [v["version"] for v in model["versions"]] == [3, 2] and model["labels"] == {"stable": 2, "canary": 3}
        for label, version in (("stable", 2), ("canary", 3)):
            assert answered_by(client, f"/api/v1/models/{MODEL}/labels/{label}/predict") == version
            tfserving = client.post(f"/v1/models/{MODEL}/labels/{label}:predict", json={"instances": IMAGE["tensor"]})
            assert tfserving.status_code == 200 and len(tfserving.json()["predictions"]) == 1
            status = client.get(f"/v1/models/{MODEL}/labels/{label}").json()["model_version_status"]
            assert [s["version"] for s in status] == [str(version)]
            assert client.get(f"/v2/models/{MODEL}/labels/{label}/ready").status_code == 200
        missing = client.post(f"/v1/models/{MODEL}/labels/next:predict", json={"instances": IMAGE["tensor"]})
        assert missing.status_code == 404 and "no label 'next'" in missing.json()["error"]

        _write_config(config, {"latest": {"num_versions": 2}}, {"stable": 3, "newest": "latest"})
        publish(source, model_dir, 4)
        sync()
        model = entry(client)
        assert [(v["version"], v["state"]) for v in model["versions"]] == [(4, "AVAILABLE"), (3, "AVAILABLE"),
                                                                           (2, "END")]  # fmt: skip
        assert model["labels"] == {"stable": 3, "newest": 4}
        assert answered_by(client, f"/api/v1/models/{MODEL}/labels/newest/predict") == 4


def test_labels_set_through_the_api_point_only_at_available_versions(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    publish(source, model_dir, 2)
    with serving(repository, version_policy="all") as (client, sync):
        url = f"/api/v1/models/{MODEL}/labels/canary"
        assert client.put(url, json={"version": 9}).status_code == 404
        write_half(source, model_dir, 3)
        sync()
        refused = client.put(url, json={"version": 3})
        assert refused.status_code == 400 and "START" in refused.json()["error"]
        assert client.put(f"/api/v1/models/{MODEL}/labels/9lives", json={"version": 1}).status_code == 422
        assert client.put(url, json={"version": 1}).json()["labels"] == {"canary": 1}
        assert answered_by(client, f"/api/v1/models/{MODEL}/labels/canary/predict") == 1
        assert client.delete(url).json()["labels"] == {}
        assert client.post(f"/api/v1/models/{MODEL}/labels/canary/predict", json=IMAGE).status_code == 404


def test_repository_index_load_and_unload(repository: Path, source: Path) -> None:
    model_dir = repository / MODEL
    with serving(repository) as (client, sync):
        index = client.post("/v2/repository/index")
        assert index.status_code == 200
        assert index.json() == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
        assert client.post("/v2/repository/index", json={"ready": True}).json() == index.json()
        assert client.post("/v2/repository/index", json={"ready": "maybe"}).status_code == 400

        assert client.post(f"/v2/repository/models/{MODEL}/unload", json={}).status_code == 200
        assert client.post("/v2/repository/index", json={"ready": True}).json() == []
        assert client.post("/v2/repository/index").json()[0] == {
            "name": MODEL, "version": "1", "state": "UNAVAILABLE", "reason": "unloaded",
        }  # fmt: skip
        sync()  # an explicit unload holds while the directory is unchanged
        assert client.post(f"/api/v1/models/{MODEL}/predict", json=IMAGE).status_code == 503
        assert client.get("/health/ready").status_code == 503

        assert client.post(f"/v2/repository/models/{MODEL}/load").status_code == 200
        assert answered_by(client) == 1
        assert client.post("/v2/repository/models/nope/load").status_code == 404
        unsupported = client.post(f"/v2/repository/models/{MODEL}/load", json={"parameters": {"config": "{}"}})
        assert unsupported.status_code == 400 and "not supported" in unsupported.json()["error"]

        client.post(f"/v2/repository/models/{MODEL}/unload")
        publish(source, model_dir, 2)  # the directory changed: the version policy applies again
        sync()
        assert answered_by(client) == 2


def test_a_failed_explicit_load_says_why(repository: Path, source: Path) -> None:
    shutil.rmtree(repository / MODEL / "1")
    publish_broken(source, repository / MODEL, 1)
    with serving(repository) as (client, _):
        failed = client.post(f"/v2/repository/models/{MODEL}/load")
        assert failed.status_code == 400
        assert failed.json() == {
            "error": f"model {MODEL} could not be loaded: version 1: the SavedModel could not be loaded"
        }


def test_model_control_needs_loopback_or_an_api_key(repository: Path) -> None:
    unload = f"/v2/repository/models/{MODEL}/unload"
    with serving(repository, host="0.0.0.0") as (client, _):
        refused = client.post(unload)
        assert refused.status_code == 403 and "CNN_ALLOW_MODEL_CONTROL" in refused.json()["error"]
        assert client.put(f"/api/v1/models/{MODEL}/labels/x", json={"version": 1}).status_code == 403
        assert client.post("/v2/repository/index").status_code == 200  # reading is not control
    with serving(repository, host="0.0.0.0", api_key="k") as (client, _):
        assert client.post(unload).status_code == 401
        assert client.post(unload, headers={"X-API-Key": "k"}).status_code == 200
    with serving(repository, allow_model_control=False) as (client, _):
        assert client.post(unload).status_code == 403


def test_a_broken_config_edit_keeps_the_last_good_one(repository: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = repository / "models.json"
    _write_config(config, {"latest": {}}, {"stable": 1})
    with serving(repository, model_config_file=config) as (client, sync):
        assert client.get("/health/ready").status_code == 200
        config.write_text('{"model_config_list": [{"name": "lenet5"}]}')
        sync()
        sync()
        problems = [r.getMessage() for r in caplog.records if "keeping the previous model list" in r.getMessage()]
        assert len(problems) == 1 and "base_path" in problems[0]  # logged once, not on every poll
        assert entry(client)["labels"] == {"stable": 1} and answered_by(client) == 1
        _write_config(config, {"latest": {}}, {})
        sync()
        assert entry(client)["labels"] == {}


def test_readiness_needs_every_configured_model(repository: Path, source: Path) -> None:
    config = repository / "models.json"
    entries = [
        {"name": MODEL, "base_path": MODEL},
        {"name": "later", "base_path": "later"},  # nothing there yet
    ]
    config.write_text(json.dumps({"model_config_list": entries}))
    with serving(repository, model_config_file=config) as (client, sync):
        assert client.get("/health/ready").status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        (repository / "later").mkdir()
        publish(source, repository / "later", 1)
        sync()
        assert client.get("/health/ready").json() == {
            "ready": True, "models": {f"{MODEL}:1": "READY", "later:1": "READY"},
        }  # fmt: skip
