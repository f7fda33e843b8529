"""New versions go live while traffic flows, on the production entry point (``python -m service``).

- Under load: 16 clients send requests for ``CNN_LIFECYCLE_TEST_S`` seconds (60 by default) while
  the test publishes version 2, writes a half-finished version 3 and later completes it, drops in a
  broken version 4 and deletes version 1. No request may fail, answers must move to each new version
  within the poll interval plus its load time, and the status API must show every transition.
- Memory: 50 publish/unload cycles of one version leave RSS within 10% of what it was after the first.
- Under a canary split and a shadow: a new version is published and the labels move up a version while
  16 clients send requests; none fails, and the split goes on over the new versions.
- Stock ``tritonclient.http`` drives the repository extension (index, load, unload).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.lifecycle_helpers import MODEL, complete_half, publish, publish_broken, write_half

from .conftest import BUNDLED_REPOSITORY
from .servers import running_server

logger = logging.getLogger(__name__)
POLL_S = 0.5
DURATION_S = float(os.environ.get("CNN_LIFECYCLE_TEST_S", "60"))
CLIENTS = 16
SLACK_S = 1.0  # scheduling on a loaded 2-core machine: 16 clients, the server and its loads
IMAGE = np.zeros((1, 28, 28), dtype=np.uint8).tolist()


@dataclass(frozen=True)
class Answer:
    sent: float
    received: float
    status: int  # 0: no HTTP answer at all
    version: int | None


def _repository(tmp_path: Path, source: Path) -> Path:
    root = tmp_path / "repository"
    (root / MODEL).mkdir(parents=True)
    publish(source, root / MODEL, 1)
    return root


@pytest.fixture
def source() -> Path:
    """The bundled lenet5 version every published version is a copy of."""
    bundled = BUNDLED_REPOSITORY / MODEL / "1"
    if not (bundled / "saved_model.pb").exists():
        pytest.fail(f"the bundled {MODEL} model is missing from {bundled.parent}")
    return bundled


class Traffic:
    """``CLIENTS`` threads sending one-image requests (native and v2 in turn) until stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _client(self, index: int) -> None:
        calls: list[tuple[str, dict, Callable[[dict], int]]] = [
            (f"/api/v1/models/{MODEL}/predict", {"tensor": IMAGE, "dtype": "uint8"}, lambda b: b["model_version"]),
            (
                f"/v2/models/{MODEL}/infer",
                {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 28, 28, 1],
                             "data": np.zeros(784).tolist()}]},
                lambda b: int(b["model_version"]),
            ),
        ]  # fmt: skip
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            turn = index
            while not self._stop.is_set():
                path, body, version_of = calls[turn % len(calls)]
                turn += 1
                sent = time.time()
                try:
                    response = client.post(path, json=body)
                    status = response.status_code
                    version = version_of(response.json()) if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                with self._lock:
                    self.answers.append(Answer(sent, time.time(), status, version))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _versions(client: httpx.Client) -> dict[int, dict]:
    model = next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == MODEL)
    return {v["version"]: v for v in model["versions"]}


def _wait_for(client: httpx.Client, version: int, state: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = _versions(client).get(version)
        if found and found["state"] == state:
            return found
        time.sleep(0.05)
    raise AssertionError(f"version {version} did not reach {state} within {timeout_s:g} s: {_versions(client)}")


def _at(found: dict, state: str) -> float:
    return next(t["at"] for t in found["transitions"] if t["state"] == state)


def _sleep_until(start: float, offset: float) -> None:
    time.sleep(max(0.0, start + offset - time.time()))


def test_versions_swap_under_load_without_a_failed_request(tmp_path: Path, source: Path) -> None:
    repository = _repository(tmp_path, source)
    model_dir = repository / MODEL
    env = {"CNN_POLL_INTERVAL_S": str(POLL_S), "CNN_VERSION_POLICY": "all"}
    step = DURATION_S / 6
    with (
        running_server(repository, tmp_path / "server.log", env) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as status,
        Traffic(server.base_url) as traffic,
    ):
        start = time.time()
        _sleep_until(start, step)
        published_2 = time.time()
        publish(source, model_dir, 2)
        _wait_for(status, 2, "AVAILABLE")

        _sleep_until(start, 2 * step)
        write_half(source, model_dir, 3)
        _sleep_until(start, 3 * step)
        assert _versions(status)[3]["state"] == "START", "a half-written version must not load"
        completed_3 = time.time()
        complete_half(model_dir, 3)
        _wait_for(status, 3, "AVAILABLE")

        _sleep_until(start, 4 * step)
        published_4 = time.time()
        publish_broken(source, model_dir, 4)
        broken = _wait_for(status, 4, "END")
        assert broken["error"] == "the SavedModel could not be loaded"

        _sleep_until(start, 5 * step)
        deleted_1 = time.time()
        shutil.rmtree(model_dir / "1")
        _wait_for(status, 1, "END")
        _sleep_until(start, DURATION_S)
        final = _versions(status)
        tfserving = status.get(f"/v1/models/{MODEL}").json()["model_version_status"]
        server_log = server.log()

    answers = traffic.answers
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, first: {failed[:5]}\n{server_log[-3000:]}"
    assert len(answers) > 20 * DURATION_S, f"only {len(answers)} requests in {DURATION_S:g} s"

    # Every transition, in TF Serving's states; the status API lists the versions newest first.
    history = {v: [t["state"] for t in final[v]["transitions"]] for v in final}
    assert history == {
        1: ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"],
        2: ["START", "LOADING", "AVAILABLE"],
        3: ["START", "LOADING", "AVAILABLE"],
        4: ["START", "LOADING", "END"],
    }
    assert [(s["version"], s["state"]) for s in tfserving] == [("4", "END"), ("3", "AVAILABLE"), ("2", "AVAILABLE"),
                                                               ("1", "END")]  # fmt: skip
    assert tfserving[0]["status"]["error_message"] == "the SavedModel could not be loaded"

    # Answers move to each new version within the poll interval plus its load time (a version written
    # in place must also be seen unchanged by one more scan), and never come from the broken one.
    def first_answer(version: int) -> float:
        return min(a.received for a in answers if a.version == version)

    def load_time(version: int) -> float:
        return _at(final[version], "AVAILABLE") - _at(final[version], "LOADING")

    logger.info(
        "%d requests in %.0f s, none failed; first answer from v2 %.2f s after publishing (load %.2f s), from v3 "
        "%.2f s after completing (load %.2f s); v4 reported END %.2f s after publishing",
        len(answers), DURATION_S, first_answer(2) - published_2, load_time(2), first_answer(3) - completed_3,
        load_time(3), _at(final[4], "END") - published_4,
    )  # fmt: skip
    assert first_answer(2) - published_2 <= POLL_S + load_time(2) + SLACK_S
    assert min(a.sent for a in answers if a.version == 3) > completed_3
    assert first_answer(3) - completed_3 <= 2 * POLL_S + load_time(3) + SLACK_S
    assert not [a for a in answers if a.version == 4]
    assert _at(final[4], "END") - published_4 <= POLL_S + 10.0  # reported once its load failed
    for old, new in ((1, 2), (2, 3)):  # once the new version is AVAILABLE, new requests go to it
        switched = _at(final[new], "AVAILABLE")
        assert not [a for a in answers if a.version == old and a.sent > switched + SLACK_S], (old, new)
    assert _at(final[1], "END") - deleted_1 <= POLL_S + SLACK_S + 10.0
    errors = [line for line in server_log.splitlines() if " ERROR " in line]
    assert errors and all(f"model {MODEL}:4 failed to load" in line for line in errors), errors


def _rollout_config(path: Path, versions: list[int], stable: int, canary: int) -> None:
    path.write_text(json.dumps({"model_config_list": [{
        "name": MODEL, "base_path": MODEL, "model_version_policy": {"specific": {"versions": versions}},
        "version_labels": {"stable": stable, "canary": canary}, "traffic": {"stable": 80, "canary": 20},
        "shadow": {"version": "canary", "fraction": 0.5},
    }]}))  # fmt: skip


def test_a_swap_under_a_canary_and_a_shadow_loses_no_request(tmp_path: Path, source: Path) -> None:
    """Versions 1 (stable) and 2 (canary, also the shadow) serve a split; version 3 is published and the
    config moves both labels up a version and retires version 1, all under load."""
    repository = _repository(tmp_path, source)
    publish(source, repository / MODEL, 2)
    config = repository / "models.json"
    _rollout_config(config, [1, 2], stable=1, canary=2)
    env = {"CNN_POLL_INTERVAL_S": str(POLL_S), "CNN_MODEL_CONFIG": str(config)}
    third = DURATION_S / 3
    with (
        running_server(repository, tmp_path / "server.log", env) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as status,
        Traffic(server.base_url) as traffic,
    ):
        start = time.time()
        _sleep_until(start, third)
        publish(source, repository / MODEL, 3)
        _rollout_config(config, [2, 3], stable=2, canary=3)
        _wait_for(status, 1, "END")
        swapped = time.time()
        _sleep_until(start, 2 * third)
        rollout = next(m for m in status.get("/api/v1/models").json()["models"] if m["name"] == MODEL)["rollout"]
        server_log = server.log()

    answers = traffic.answers
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, first: {failed[:5]}\n{server_log[-3000:]}"
    before = Counter(a.version for a in answers if a.received < start + third)
    after = Counter(a.version for a in answers if a.sent > swapped + SLACK_S)
    assert set(before) == {1, 2} and set(after) == {2, 3}, (before, after)
    assert abs(after[3] / sum(after.values()) - 0.2) <= 0.05, after  # the split goes on over the new versions
    assert [t["version"] for t in rollout["traffic"]] == [2, 3] and rollout["shadow"]["version"] == 3
    pairs = {(c["live_version"], c["shadow_version"]): c for c in rollout["comparisons"]}
    assert {(1, 2), (2, 3)} <= set(pairs) and all(c["agreement"] == 1.0 for c in pairs.values())  # same weights
    assert "failed" not in rollout["dropped"], rollout["dropped"]


@pytest.mark.parametrize(
    "choice",
    [
        {},
        # every runtime and precision built and timed at each load (OpenVINO's compiled models included)
        pytest.param({"CNN_RUNTIME": "auto", "CNN_PRECISION": "auto"}, marks=pytest.mark.reliability_slow, id="auto"),
    ],
    ids=["fp32", "auto"],
)
def test_memory_is_returned_after_publish_and_unload_cycles(tmp_path: Path, source: Path, choice: dict) -> None:
    repository = _repository(tmp_path, source)
    model_dir = repository / MODEL
    env = {"CNN_POLL_INTERVAL_S": "0.1", "CNN_VERSION_POLICY": "all", **choice}
    rss: list[int] = []
    with (
        running_server(repository, tmp_path / "server.log", env) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as client,
    ):
        for _ in range(50):
            publish(source, model_dir, 2)
            _wait_for(client, 2, "AVAILABLE")
            for _ in range(3):
                answer = client.post(f"/api/v1/models/{MODEL}/versions/2/predict", json={"tensor": IMAGE})
                assert answer.status_code == 200, answer.text
            shutil.rmtree(model_dir / "2")
            _wait_for(client, 2, "END")
            rss.append(server.rss_kib())
        metrics = client.get("/metrics").text
    assert f'cnn_model_unloads_total{{model="{MODEL}"}} 50.0' in metrics
    growth = rss[-1] / rss[0] - 1
    logger.info("RSS after cycle 1: %d KiB, 10: %d, 25: %d, 50: %d (%+.1f%%)", rss[0], rss[9], rss[24], rss[-1],
                100 * growth)  # fmt: skip
    assert growth <= 0.10, f"RSS after cycle 1: {rss[0]} KiB, after 50: {rss[-1]} KiB (+{growth:.1%}): {rss}"


def test_stock_tritonclient_drives_the_repository_extension(tmp_path: Path, source: Path) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    repository = _repository(tmp_path, source)
    with running_server(repository, tmp_path / "server.log") as server:
        client = triton.InferenceServerClient(url=server.base_url.removeprefix("http://"))
        try:
            assert client.get_model_repository_index() == [
                {"name": MODEL, "version": "1", "state": "READY", "reason": ""}
            ]
            client.unload_model(MODEL)
            assert not client.is_model_ready(MODEL)
            assert client.get_model_repository_index()[0]["state"] == "UNAVAILABLE"
            client.load_model(MODEL)
            assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
            with pytest.raises(InferenceServerException, match="not in the model repository"):
                client.load_model("absent")
            inputs = [triton.InferInput("images", [1, 28, 28, 1], "FP32")]
            inputs[0].set_data_from_numpy(np.zeros((1, 28, 28, 1), dtype=np.float32), binary_data=True)
            result = client.infer(MODEL, inputs)
            assert result.as_numpy("probabilities").shape == (1, 10)
        finally:
            client.close()
