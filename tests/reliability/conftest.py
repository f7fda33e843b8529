"""Fixtures of the reliability suite: a model repository and the servers under test.

The model is the bundled ``model_repository/fashion_cnn/1`` when present (copied, so a training run
rewriting it cannot disturb a test), else a small one trained with ``models.train`` once per session.
Tests marked ``reliability_slow`` (the soak, shutdown under load, the long fuzzing run) belong to
``make reliability``; the others are quick enough for every test run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from .servers import REPO_ROOT, ServerProcess, running_server

BUNDLED_REPOSITORY = Path(os.environ.get("CNN_TEST_MODEL_REPOSITORY", REPO_ROOT / "model_repository"))
MODEL = "fashion_cnn"


def _complete(version_dir: Path) -> bool:
    """A version directory with a parseable card, a SavedModel graph and its variables."""
    try:
        card = json.loads((version_dir / "model_card.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(card, dict)
        and "summary" in card
        and (version_dir / "saved_model.pb").is_file()
        and (version_dir / "variables").is_dir()
    )


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding ``fashion_cnn/1`` only."""
    root = tmp_path_factory.mktemp("model_repository")
    target = root / MODEL / "1"
    bundled = BUNDLED_REPOSITORY / MODEL / "1"
    if _complete(bundled):
        with contextlib.suppress(OSError):  # rewritten while being copied: train instead
            shutil.copytree(bundled, target)
        if _complete(target):
            return root
        shutil.rmtree(target, ignore_errors=True)
    command = [
        sys.executable, "-m", "models.train", "--arch", MODEL, "--epochs", "1", "--train-limit", "256",
        "--repository", str(root), "--version", "1", "--checkpoint-dir", str(tmp_path_factory.mktemp("checkpoints")),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0 or not _complete(target):
        pytest.fail(f"training a test model failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return root


@pytest.fixture(scope="session")
def served(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The service with its default settings, shared by the tests that only send requests to it.

    Model control is off: fuzzed load/unload calls must not unload the model the other tests use.
    """
    log_path = tmp_path_factory.mktemp("served") / "server.log"
    with running_server(model_repository, log_path, {"CNN_ALLOW_MODEL_CONTROL": "false"}) as server:
        yield server


@pytest.fixture
def http(served: ServerProcess) -> Iterator[httpx.Client]:
    """A client of :func:`served`."""
    with httpx.Client(base_url=served.base_url, timeout=60.0) as client:
        yield client


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``python -m service`` subprocesses (ready when returned); all are stopped at teardown."""
    started: list[ServerProcess] = []

    def spawn(repository: Path, env: Mapping[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(repository, tmp_path / f"server{len(started)}.log", env)
        started.append(server)
        server.wait_until_ready()
        return server

    yield spawn
    for server in started:
        server.close()
