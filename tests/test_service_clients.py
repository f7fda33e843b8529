"""Stock clients against a live server process: tritonclient (v2, binary tensors) and a TF Serving JSON client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from models.data import to_model_input

from .conftest import REPO_ROOT, png_bytes

httpclient = pytest.importorskip("tritonclient.http")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(bundled_repository) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ, "CNN_MODEL_REPOSITORY": str(bundled_repository), "CNN_MODELS": '["fashion_cnn"]',
        "CNN_HOST": "127.0.0.1", "CNN_PORT": str(port),
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{base}/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not become ready in 120 s")
    yield base
    process.terminate()
    assert process.wait(30) == 0  # graceful SIGTERM shutdown


def test_tritonclient_works_unchanged(live_server, fashion):
    client = httpclient.InferenceServerClient(url=live_server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fashion_cnn")
    metadata = client.get_model_metadata("fashion_cnn")
    assert metadata["inputs"][0]["name"] == "images" and metadata["outputs"][0]["shape"] == [-1, 10]

    images, labels = fashion.test.images[:32], fashion.test.labels[:32]
    tensor = to_model_input(images)
    for binary in (True, False):
        request = httpclient.InferInput("images", list(tensor.shape), "FP32")
        request.set_data_from_numpy(tensor, binary_data=binary)
        output = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        probabilities = client.infer("fashion_cnn", [request], outputs=[output]).as_numpy("probabilities")
        assert probabilities.shape == (32, 10)
        assert np.mean(probabilities.argmax(1) == labels) >= 0.9

    encoded = np.array([png_bytes(image) for image in images[:4]], dtype=np.object_)
    request = httpclient.InferInput("images", [4], "BYTES")
    request.set_data_from_numpy(encoded, binary_data=True)
    from_png = client.infer("fashion_cnn", [request]).as_numpy("probabilities")
    np.testing.assert_allclose(from_png, probabilities[:4], atol=1e-5)

    with pytest.raises(Exception, match="unknown input"):
        bad = httpclient.InferInput("pixels", list(tensor.shape), "FP32")
        bad.set_data_from_numpy(tensor)
        client.infer("fashion_cnn", [bad])
    client.close()


def test_tf_serving_json_client(live_server, fashion):
    floats = (fashion.test.images[:8] / 255.0)[..., None].tolist()
    base = f"http://{live_server}/v1/models/fashion_cnn"
    assert httpx.get(base).json()["model_version_status"][0]["state"] == "AVAILABLE"
    predictions = httpx.post(f"{base}:predict", json={"instances": floats}, timeout=30).json()["predictions"]
    assert np.mean(np.argmax(predictions, axis=1) == fashion.test.labels[:8]) >= 0.75
