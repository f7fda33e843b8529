"""The served model's accuracy through HTTP on the full Fashion-MNIST test set, per runtime and precision.

For each setting (``CNN_RUNTIME``/``CNN_PRECISION``: auto, then every forced pair) the service is started
alone, the 10,000 test images go through ``/v2/models/{model}/infer`` as binary FP32 tensors (250 per
request), and the predicted classes are compared with the labels. A pair this machine cannot run stops
the service at start; its reason is reported instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.payloads import v2_binary
from bench.servers import ServerSpec, http_request, start_server
from models.data import load_fashion_mnist

logger = logging.getLogger("bench")

SETTINGS = [
    ("auto", "auto"),
    ("tensorflow", "fp32"),
    ("tensorflow", "bf16"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]
BATCH = 250  # images per request (the service's default limit is 256)


def _infer(port: int, model: str, images: np.ndarray) -> np.ndarray:
    """One v2 request: binary FP32 input, JSON output; the probabilities ``(n, classes)``."""
    body, header_length = v2_binary(images, binary_output=False)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    status, answer = http_request(port, "POST", f"/v2/models/{model}/infer", body, headers)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
    output = json.loads(answer)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _start_failure(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    reason = next((line.partition("cannot start: ")[2] for line in lines if "cannot start: " in line), "")
    return reason or (lines[-1] if lines else "the server did not start")


def served_accuracy(spec_for: Callable[[str, str], ServerSpec], model: str, log_dir: Path, cwd: Path) -> list[dict]:
    """One row per setting: what was served (runtime, precision) and its accuracy, or why it could not be."""
    test = load_fashion_mnist().test
    images, labels = test.images, test.labels
    rows: list[dict[str, Any]] = []
    for runtime, precision in SETTINGS:
        spec = spec_for(runtime, precision)
        row: dict[str, Any] = {"setting": f"{runtime}/{precision}"}
        try:
            server = start_server(spec, log_dir, cwd)
        except Exception:
            row["error"] = _start_failure(log_dir / f"{spec.name}.log")
            logger.info("accuracy %s: not served (%s)", row["setting"], row["error"])
            rows.append(row)
            continue
        try:
            _, detail = http_request(server.port, "GET", f"/api/v1/models/{model}")
            plan = json.loads(detail)["serving"]
            predicted = np.concatenate(
                [_infer(server.port, model, images[i : i + BATCH]).argmax(axis=1) for i in range(0, len(images), BATCH)]
            )
        finally:
            server.stop()
        correct = int((predicted == labels).sum())
        row.update(served=f"{plan['runtime']}/{plan['precision']}", correct=correct, samples=len(labels),
                   accuracy=correct / len(labels), recorded=plan["accuracy"])  # fmt: skip
        logger.info("accuracy %s: served on %s, %.2f%% (%d/%d)", row["setting"], row["served"],
                    100 * row["accuracy"], correct, len(labels))  # fmt: skip
        rows.append(row)
    return rows
