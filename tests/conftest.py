"""Shared fixtures: the real Fashion-MNIST data, the bundled model repository and a running app."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Apps built in the test process serve HTTP only: many of them would otherwise share the gRPC port.
# Servers started as processes get a free gRPC port each (tests/reliability/servers.py).
os.environ.setdefault("CNN_GRPC_PORT", "0")
# Predictions on float32 TensorFlow, as exported, so answers can be compared with the SavedModel's own;
# tests/test_service_precision.py covers the measured choice (CNN_RUNTIME=auto, CNN_PRECISION=auto).
os.environ.setdefault("CNN_RUNTIME", "tensorflow")
os.environ.setdefault("CNN_PRECISION", "fp32")
# FastAPI's TestClient sends Host: testserver; a loopback-bound server answers only names it knows.
os.environ.setdefault("CNN_ALLOWED_HOSTS", "testserver")

REPO_ROOT = Path(__file__).resolve().parent.parent
# CNN_TEST_MODEL_REPOSITORY points the tests at another repository with the same layout.
BUNDLED_REPOSITORY = Path(os.environ.get("CNN_TEST_MODEL_REPOSITORY", REPO_ROOT / "model_repository"))
BUNDLED_MODELS = sorted(card.parent.parent.name for card in BUNDLED_REPOSITORY.glob("*/1/model_card.json"))


@pytest.fixture(scope="session")
def fashion():
    from models.data import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture(scope="session")
def bundled_repository() -> Path:
    if not (BUNDLED_REPOSITORY / "fashion_cnn" / "1" / "model_card.json").exists():
        pytest.fail(f"the bundled model is missing from {BUNDLED_REPOSITORY}")
    return BUNDLED_REPOSITORY


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def client(bundled_repository: Path) -> Iterator:
    """A TestClient over the real app serving the bundled models (lifespan run once per session)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.settings import Settings

    app = create_app(Settings(model_repository=bundled_repository, max_request_bytes=2 * 1024 * 1024))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
