"""The peers on the served engine: how to start Seldon MLServer and LitServe on the runtime and precision
the service chose for the model (its ``serving`` plan), so the comparison is of serving layers only.

MLServer runs from its own virtual environment (``make bench`` builds ``.venv-mlserver``) with the custom
runtime :mod:`bench.mlserver_runtime`; both peers compile the OpenVINO IR that
:func:`bench.inprocess.export_openvino_ir` writes (the SavedModel converted, or the version's int8 model),
with the service's settings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ServerSpec, free_port

MLSERVER_WORKERS = (1, 2)  # parallel inference workers: the better of the two is the peer's figure


@dataclass(frozen=True)
class Engine:
    """What the service serves the model on (from ``GET /api/v1/models/<name>``'s ``serving``)."""

    runtime: str
    precision: str

    @classmethod
    def from_plan(cls, plan: dict | None) -> Engine | None:
        return cls(plan["runtime"], plan["precision"]) if plan else None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}"


def mlserver_name(workers: int) -> str:
    return f"mlserver-{workers}"


def mlserver_spec(
    mlserver: Path, root: Path, work: Path, model: str, ir: Path, engine: Engine, workers: int
) -> ServerSpec:
    """MLServer serving ``ir`` as ``model`` with adaptive batching (64 images, 2 ms, as the service) and
    ``workers`` parallel inference workers; access logs off, as the service's default."""
    directory = work / mlserver_name(workers)
    (directory / model).mkdir(parents=True, exist_ok=True)
    settings = {"debug": False, "host": "127.0.0.1", "parallel_workers": workers, "load_models_at_startup": True}
    (directory / "settings.json").write_text(json.dumps(settings, indent=2))
    model_settings = {
        "name": model,
        "implementation": "bench.mlserver_runtime.OpenVinoRuntime",
        "max_batch_size": 64,
        "max_batch_time": 0.002,
        "parameters": {"uri": str(ir), "extra": {"precision": engine.precision, "output": "probabilities"}},
    }
    (directory / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    env = {
        "PYTHONPATH": str(root),  # for bench.mlserver_runtime
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": "{grpc_port}",
        "MLSERVER_METRICS_PORT": str(free_port()),
    }
    return ServerSpec(
        mlserver_name(workers), [str(mlserver), "start", str(directory)], f"/v2/models/{model}/ready", env=env
    )


def litserve_spec(model_dir: Path, model: str, ir: Path | None, engine: Engine | None) -> ServerSpec:
    """LitServe on the TF Serving JSON route, on the served engine when it is OpenVINO (``ir``), else on
    the SavedModel in TensorFlow."""
    argv = [sys.executable, "-m", "bench.litserve_server", "--model", str(model_dir), "--port", "{port}",
            "--route", f"/v1/models/{model}:predict"]  # fmt: skip
    if ir is not None and engine is not None and engine.runtime == "openvino":
        argv += ["--openvino-ir", str(ir), "--precision", engine.precision]
    return ServerSpec("litserve", argv, "/health")


def floor_spec(model_dir: Path, model: str, ir: Path | None, engine: Engine | None) -> ServerSpec | None:
    """The bare floor (:mod:`bench.floor_server`: ASGI and gRPC) on the served engine; ``None`` unless that
    is OpenVINO."""
    if ir is None or engine is None or engine.runtime != "openvino":
        return None
    argv = [sys.executable, "-m", "bench.floor_server", "--openvino-ir", str(ir), "--model-dir", str(model_dir),
            "--precision", engine.precision, "--model", model, "--port", "{port}",
            "--grpc-port", "{grpc_port}"]  # fmt: skip
    return ServerSpec("floor", argv, "/")
