"""The server under test: ``python -m service`` (the production entry point: uvloop, httptools,
graceful shutdown) in a subprocess on a free port of 127.0.0.1, its output in a log file.

A subprocess, not a server thread in the test process: the service's own interpreter state (logging,
TensorFlow, tracebacks of 500s) stays apart from pytest's, and RSS and signals are its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_ready(
    base_url: str, alive: Callable[[], bool], timeout_s: float = START_TIMEOUT_S, path: str = "/health/ready"
) -> None:
    """Poll ``path`` until it answers 200; fail early when the server has died."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"the server at {base_url} exited before it was ready")
            try:
                if client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the server at {base_url} was not ready within {timeout_s:g} s")


class ServerProcess:
    """``python -m service`` on a free port; ``env`` adds ``CNN_*`` settings (inherited ones are dropped).

    Predictions run on float32 TensorFlow unless ``env`` says otherwise: choosing among every runtime and
    precision costs seconds per load, and most of these tests load many versions."""

    def __init__(self, repository: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.log_path = log_path
        environment = {key: value for key, value in os.environ.items() if not key.startswith("CNN_")}
        environment.update(
            CNN_MODEL_REPOSITORY=str(repository), CNN_HOST=HOST, CNN_PORT=str(self.port),
            CNN_GRPC_PORT=str(self.grpc_port), CNN_RUNTIME="tensorflow", CNN_PRECISION="fp32", TF_CPP_MIN_LOG_LEVEL="2",
        )  # fmt: skip
        environment.update(env or {})
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_until_ready(self, timeout_s: float = START_TIMEOUT_S, path: str = "/health/ready") -> None:
        try:
            wait_until_ready(self.base_url, self.alive, timeout_s, path)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; log:\n{self.log()[-4000:]}") from None

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident set size from ``/proc/<pid>/status`` (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def close(self) -> None:
        """Stop the server if it still runs (SIGTERM, then SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextmanager
def running_server(repository: Path, log_path: Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """A ready :class:`ServerProcess`, stopped on exit."""
    server = ServerProcess(repository, log_path, env)
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.close()
