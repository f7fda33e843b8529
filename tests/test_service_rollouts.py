"""Canary splits and shadow versions in one process (the repository watcher run by each test): sticky routing
keys, named versions never re-routed, weight edits, a config naming a version that is not serving, the
answering version in every answer, and a shadow's recorded agreement against the two models' own
predictions. Every protocol under a split, on a live server: ``tests/test_rollouts_live.py``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.lifecycle_helpers import MODEL, entry, publish, serving
from tests.reliability.load import metric_value

IMAGE = {"tensor": np.zeros((1, 28, 28), dtype=np.uint8).tolist(), "dtype": "uint8"}
PREDICT = f"/api/v1/models/{MODEL}/predict"


@pytest.fixture
def repository(tmp_path: Path, bundled_repository: Path) -> Path:
    """``lenet5`` versions 1, 2 and 3, all served."""
    root = tmp_path / "repository"
    (root / MODEL).mkdir(parents=True)
    for version in (1, 2, 3):
        publish(bundled_repository / MODEL / "1", root / MODEL, version)
    return root


def write_config(path: Path, **rollout: object) -> None:
    """The one model, every version served, labels ``stable`` → 1 and ``canary`` → 2, and ``rollout``."""
    model = {
        "name": MODEL, "base_path": MODEL, "model_version_policy": {"all": {}},
        "version_labels": {"stable": 1, "canary": 2}, **rollout,
    }  # fmt: skip
    path.write_text(json.dumps({"model_config_list": [model]}))
    stat = path.stat()  # a rewrite within the same clock tick still reads as a change
    path.touch()
    assert path.stat().st_mtime_ns >= stat.st_mtime_ns


def versions_of(client: httpx.Client, count: int, path: str = PREDICT, **headers: str) -> list[int]:
    answered = []
    for _ in range(count):
        response = client.post(path, json=IMAGE, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == str(response.json()["model_version"])
        answered.append(response.json()["model_version"])
    return answered


def test_split_keys_and_named_versions(repository: Path) -> None:
    config = repository / "models.json"
    write_config(config, traffic={"stable": 80, "canary": 20})
    with serving(repository, model_config_file=config) as (client, _):
        assert versions_of(client, 100).count(2) == 20
        by_key = {key: set(versions_of(client, 3, **{"X-Routing-Key": key})) for key in map(str, range(60))}
        assert all(len(answered) == 1 for answered in by_key.values())  # sticky
        assert {v for answered in by_key.values() for v in answered} == {1, 2}
        # Named versions and labels are never re-routed, with or without a key.
        assert set(versions_of(client, 20, f"/api/v1/models/{MODEL}/versions/3/predict")) == {3}
        stable = f"/api/v1/models/{MODEL}/labels/stable/predict"
        assert set(versions_of(client, 20, stable, **{"X-Routing-Key": "a"})) == {1}
        assert set(versions_of(client, 20, f"/api/v1/models/{MODEL}/labels/canary/predict")) == {2}
        rollout = entry(client)["rollout"]
        assert rollout["traffic"] == [
            {"target": "stable", "version": 1, "weight": 80.0, "share": 0.8},
            {"target": "canary", "version": 2, "weight": 20.0, "share": 0.2},
        ]
        assert client.get(f"/api/v1/models/{MODEL}").json()["rollout"] == rollout


def test_the_answering_version_is_in_every_rest_answer(repository: Path) -> None:
    config = repository / "models.json"
    write_config(config, traffic={"3": 1})
    tensor = np.zeros((1, 28, 28, 1), dtype=np.float32)
    with serving(repository, model_config_file=config) as (client, _):
        one = {"tensor": IMAGE["tensor"][0], "dtype": "uint8"}
        v2_input = {"name": "images", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": tensor.ravel().tolist()}
        answers = {
            "native": client.post(PREDICT, json=IMAGE),
            "tfserving": client.post(f"/v1/models/{MODEL}:predict", json={"instances": tensor.tolist()}),
            "v2": client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [v2_input]}),
            "feature maps": client.post(f"/api/v1/models/{MODEL}/feature-maps?layer=C1", json=one),
            "explain": client.post(f"/api/v1/models/{MODEL}/explain?method=saliency", json=one),
        }
        for route, response in answers.items():
            assert response.status_code == 200, (route, response.text)
            assert response.headers["x-model-version"] == "3", route
        assert answers["v2"].json()["model_version"] == "3"
        # Outside a split the header names the default (highest) version, or the one named.
        write_config(config)
        named = client.post(f"/v1/models/{MODEL}/versions/1:predict", json={"instances": tensor.tolist()})
        assert named.headers["x-model-version"] == "1"


def test_weight_edits_apply_and_a_bad_one_keeps_the_last_good_split(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = repository / "models.json"
    write_config(config, traffic={"stable": 80, "canary": 20})
    with serving(repository, model_config_file=config) as (client, sync):
        assert versions_of(client, 50).count(2) == 10
        write_config(config, traffic={"stable": 50, "canary": 50})
        sync()
        assert versions_of(client, 50).count(2) == 25
        with caplog.at_level(logging.ERROR, logger="service.hosting.rollouts"):
            write_config(config, traffic={"stable": 50, "7": 50})  # no version 7
            sync()
            sync()
        problems = [r.getMessage() for r in caplog.records if "rollout cannot apply" in r.getMessage()]
        assert len(problems) == 1 and "'7'" in problems[0] and "keeping the previous" in problems[0]
        assert versions_of(client, 50).count(2) == 25  # the last good split
        write_config(config, traffic={"stable": 0, "3": 1})
        sync()
        assert set(versions_of(client, 20)) == {3}
        write_config(config)  # no split: the default (highest) version takes everything
        sync()
        assert set(versions_of(client, 10)) == {3} and entry(client)["rollout"]["traffic"] == []


def test_a_version_leaving_the_split_sends_its_share_to_the_default(repository: Path) -> None:
    config = repository / "models.json"
    write_config(config, traffic={"stable": 50, "2": 50})
    with serving(repository, model_config_file=config) as (client, sync):
        shutil.rmtree(repository / MODEL / "2")
        sync()
        assert set(versions_of(client, 20)) == {1, 3}  # version 2's half goes to the default, 3
        assert entry(client)["rollout"]["traffic"][1] == {"target": "2", "version": None, "weight": 50.0, "share": 0.5}


def _wait_for_shadow(client: httpx.Client, requests: int, model: str = MODEL, timeout_s: float = 60.0) -> dict:
    """The model's rollout once its shadow has compared or dropped ``requests`` requests."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rollout = entry(client, model)["rollout"]
        if sum(c["requests"] for c in rollout["comparisons"]) + sum(rollout["dropped"].values()) >= requests:
            return rollout
        time.sleep(0.05)
    raise AssertionError(f"the shadow saw too few requests in {timeout_s:g} s: {rollout}")


def test_a_shadow_of_another_architecture_agrees_as_the_models_do_offline(
    tmp_path: Path, bundled_repository: Path, fashion
) -> None:
    """``lenet5`` published as version 2 of ``fashion_cnn`` shadows version 1 on 1,000 test images: the
    recorded agreement and confusion equal those of the two SavedModels' own predictions."""
    import tensorflow as tf

    root = tmp_path / "repository"
    (root / "fashion_cnn").mkdir(parents=True)
    publish(bundled_repository / "fashion_cnn" / "1", root / "fashion_cnn", 1)
    publish(bundled_repository / MODEL / "1", root / "fashion_cnn", 2)
    config = root / "models.json"
    config.write_text(json.dumps({"model_config_list": [{
        "name": "fashion_cnn", "base_path": "fashion_cnn", "model_version_policy": {"all": {}},
        "traffic": {"1": 1}, "shadow": {"version": 2, "fraction": 1.0},
    }]}))  # fmt: skip
    images = fashion.test.images[:1000]
    with serving(root, model_config_file=config) as (client, _):
        served = []
        for start in range(0, len(images), 25):
            chunk = images[start : start + 25]
            response = client.post("/api/v1/models/fashion_cnn/predict?top_k=1",
                                   json={"tensor": chunk.tolist(), "dtype": "uint8"})  # fmt: skip
            assert response.status_code == 200 and response.headers["x-model-version"] == "1"
            served += [prediction["class_id"] for prediction in response.json()["predictions"]]
        rollout = _wait_for_shadow(client, 40, "fashion_cnn")
        metrics = client.get("/metrics").text

    def own_top1(version: int) -> np.ndarray:
        model = tf.saved_model.load(str(root / "fashion_cnn" / str(version)))
        signature = model.signatures["serving_default"]
        batch = tf.constant(images[..., np.newaxis].astype(np.float32) / 255.0)
        return next(iter(signature(batch).values())).numpy().argmax(axis=1)

    live, shadow = own_top1(1), own_top1(2)
    assert list(live) == served  # the live answers are version 1's
    (comparison,) = rollout["comparisons"]
    assert rollout["dropped"] == {} and rollout["shadow"] == {"target": "2", "version": 2, "fraction": 1.0}
    assert (comparison["live_version"], comparison["shadow_version"]) == (1, 2)
    assert comparison["requests"] == 40 and comparison["predictions"] == 1000
    assert comparison["agreements"] == int((live == shadow).sum())
    assert 0.5 < comparison["agreement"] < 1.0  # two different networks: mostly, not always, the same
    offline = np.zeros((10, 10), dtype=int)
    np.add.at(offline, (live, shadow), 1)
    assert comparison["confusion"] == offline.tolist()
    assert comparison["latency"]["p50_ms"] > 0
    pair = {"model": "fashion_cnn", "live_version": "1", "shadow_version": "2"}
    assert metric_value(metrics, "cnn_shadow_requests_total", **pair) == 40
    assert metric_value(metrics, "cnn_shadow_predictions_total", **pair) == 1000
    assert metric_value(metrics, "cnn_shadow_agreements_total", **pair) == comparison["agreements"]
    assert metric_value(metrics, "cnn_shadow_seconds_count", model="fashion_cnn", shadow_version="2") == 40


def test_a_full_shadow_queue_drops_and_counts_and_fails_nothing(repository: Path) -> None:
    config = repository / "models.json"
    write_config(config, traffic={"stable": 1}, shadow={"version": "canary", "fraction": 1.0})
    two = {"tensor": np.zeros((2, 28, 28), dtype=np.uint8).tolist(), "dtype": "uint8"}
    with serving(repository, model_config_file=config, shadow_queue_images=1) as (client, _):
        for _ in range(30):  # two images each: more than the shadow queue holds
            response = client.post(PREDICT, json=two)
            assert response.status_code == 200 and response.json()["model_version"] == 1
        assert versions_of(client, 10) == [1] * 10  # one image each: these fit
        rollout = _wait_for_shadow(client, 40)
        assert rollout["dropped"] == {"queue_full": 30}
        assert rollout["comparisons"][0]["requests"] == 10 and rollout["comparisons"][0]["agreement"] == 1.0
        assert metric_value(client.get("/metrics").text, "cnn_shadow_dropped_total", reason="queue_full") == 30
