"""Publishing model versions the way operators do (write, then rename), and an app whose repository
watcher each test runs itself, for the lifecycle tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

MODEL = "lenet5"  # the smallest bundled model: loads in a fraction of a second


def stage(source: Path, model_dir: Path, version: int) -> Path:
    """A copy of ``source`` as a hidden ``.N.partial`` directory (no server loads it), its card renumbered."""
    staged = model_dir / f".{version}.partial"
    shutil.copytree(source, staged)
    card_path = staged / "model_card.json"
    card = json.loads(card_path.read_text())
    card["version"] = version
    card_path.write_text(json.dumps(card))
    return staged


def publish(source: Path, model_dir: Path, version: int) -> Path:
    """Write-then-rename: the version appears whole."""
    target = model_dir / str(version)
    stage(source, model_dir, version).rename(target)
    return target


def publish_broken(source: Path, model_dir: Path, version: int) -> Path:
    """A complete-looking version whose SavedModel graph is garbage."""
    staged = stage(source, model_dir, version)
    (staged / "saved_model.pb").write_bytes(b"\x08\x01not a SavedModel" * 64)
    target = model_dir / str(version)
    staged.rename(target)
    return target


def write_half(source: Path, model_dir: Path, version: int) -> Path:
    """A version directory still being written in place: everything but ``saved_model.pb``; returns the
    graph file still to be moved in (see :func:`complete_half`)."""
    target = model_dir / str(version)
    staged = stage(source, model_dir, version)
    graph = model_dir / f".{version}.saved_model.pb"
    (staged / "saved_model.pb").rename(graph)
    staged.rename(target)
    return graph


def complete_half(model_dir: Path, version: int) -> None:
    (model_dir / f".{version}.saved_model.pb").rename(model_dir / str(version) / "saved_model.pb")


def states(entry: dict, version: int) -> list[str]:
    """The state history of one version in a native ``/api/v1/models`` entry."""
    found = next(v for v in entry["versions"] if v["version"] == version)
    return [t["state"] for t in found["transitions"]]


@contextmanager
def serving(repository: Path, **settings) -> Iterator[tuple[httpx.Client, Callable[[], None]]]:
    """A client of the app, and ``sync()``: one pass of the repository watcher."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings

    app = create_app(Settings(model_repository=repository, poll_interval_s=0, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, lambda: client.portal.call(app.state.host.reconciler.sync)


def entry(client: httpx.Client, name: str = MODEL) -> dict:
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == name)
